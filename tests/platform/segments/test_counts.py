"""``filter_count`` (the builder's quick exact total) agrees with ``filter_size`` for every shape of filter, also
after users are merged or deleted, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx

from cohortflow.clock import utcnow
from cohortflow.platform import identity
from cohortflow.platform.import_keys import create_import_key
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.segments.filters import parse_filter
from cohortflow.platform.segments.service import filter_count, filter_size
from cohortflow.platform.workspaces import create_workspace
from tests.platform.segments.seed import add_users, import_cohort
from tests.support import Tenant


def cohort(cohort_id: str, operator: str = "includes", partner: str = "") -> dict[str, Any]:
    return {"type": "partner_cohort", "partner": partner, "cohort_id": cohort_id, "operator": operator}


def test_quick_counts_equal_full_counts(client: httpx.Client, runtime: PlatformRuntime, tenant: Tenant) -> None:
    names = [f"u{i}" for i in range(12)]
    add_users(
        runtime,
        tenant.workspace_id,
        {
            n: {"external_id": f"{tenant.workspace_id}-{n}", "country": "FR" if i % 2 else "DE"}
            for i, n in enumerate(names)
        },
    )
    ext = [f"{tenant.workspace_id}-{n}" for n in names]
    import_cohort(client, tenant, "a", "A", ext[:6])
    import_cohort(client, tenant, "b", "B", ext[4:9])
    # Another workspace's cohort with the same id never leaks in.
    with runtime.transaction() as conn:
        ws = create_workspace(conn, "other")
        _info, key = create_import_key(conn, ws.id, tenant.partner)
    other = dataclasses.replace(tenant, workspace_id=ws.id, client_secret=key.plain)
    add_users(runtime, other.workspace_id, {"x": {"external_id": "x"}})
    import_cohort(client, other, "a", "A", ["x"])
    p = tenant.partner
    trees: list[dict[str, Any]] = [
        cohort("a", partner=p),
        cohort("a", "does_not_include", p),
        {"type": "or", "filters": [cohort("a", partner=p), cohort("b", partner=p)]},
        {"type": "or", "filters": [cohort("a", partner=p), cohort("a", partner=p)]},
        {"type": "and", "filters": [cohort("a", partner=p), {"type": "standard_attribute", "attribute": "country",
                                                             "operator": "equals", "value": "FR"}]},
        {"type": "or", "filters": [cohort("a", partner=p), cohort("b", "does_not_include", p)]},
    ]  # fmt: skip
    expected = [6, 6, 9, 6, 3, 9]

    def counts() -> list[tuple[int, int]]:
        now = utcnow()
        with runtime.transaction() as conn:
            return [
                (filter_count(conn, tenant.workspace_id, parse_filter(t), now=now),
                 filter_size(conn, tenant.workspace_id, parse_filter(t), now=now).total)
                for t in trees
            ]  # fmt: skip

    assert counts() == [(n, n) for n in expected]
    # Merging a member into a non-member and deleting a member keep both counts equal.
    with runtime.transaction() as conn:
        source = identity.find_by_external_id(conn, tenant.workspace_id, ext[0])
        target = identity.find_by_external_id(conn, tenant.workspace_id, ext[11])
        assert source is not None and target is not None
        identity.merge_users(conn, tenant.workspace_id, source, target)
        gone = identity.find_by_external_id(conn, tenant.workspace_id, ext[5])
        assert gone is not None
        identity.delete_users(conn, tenant.workspace_id, [gone])
    after = counts()
    assert all(quick == full for quick, full in after), after
    assert after[0] == (5, 5)
