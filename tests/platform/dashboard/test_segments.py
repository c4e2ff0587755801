"""Segments pages over HTTP, against a real server on SQLite and PostgreSQL: the builder without scripts, its
fragments, saving, errors that change nothing, preview, delete, and who may see what."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from cohortflow.platform.messaging.campaigns import create_campaign
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.segments import service
from tests.platform.dashboard.helpers import csrf_of, make_user, sign_in
from tests.platform.messaging.helpers import add_users
from tests.support import ServerProcess, Tenant, add_cohort_rows, make_tenant

FRAGMENT = {"X-Requested-With": "cohortflow-live"}


@pytest.fixture
def seeded(runtime: PlatformRuntime, tenant: Tenant) -> dict[str, Any]:
    """12 users (even ones in France, every third without email); cohort "vip" holds the first 8."""
    ids = add_users(
        runtime,
        tenant.workspace_id,
        [
            {
                "external_id": f"u{i}",
                "email": None if i % 3 == 0 else f"u{i}@example.com",
                "country": "FR" if i % 2 == 0 else "US",
            }
            for i in range(12)
        ],
    )
    add_cohort_rows(runtime, tenant, "vip", "VIP customers", ids[:8])
    return {"ids": ids}


def cohort_row(tenant: Tenant, **extra: str) -> dict[str, str]:
    return {"g0.f0.kind": f"cohort:{tenant.partner}", "g0.f0.operator": "includes", "g0.f0.cohort": "vip", **extra}


def size_of(html: str) -> int:
    found = re.search(r'id="size-total">([\d,]+)<', html)
    assert found, html[:2000]
    return int(found.group(1).replace(",", ""))


def segment_names(runtime: PlatformRuntime, workspace_id: str) -> list[str]:
    with runtime.transaction() as conn:
        return [s.name for s in service.list_segments(conn, workspace_id)]


def test_the_builder_works_without_scripts(
    server: ServerProcess, runtime: PlatformRuntime, tenant: Tenant, seeded: Any
) -> None:
    client = sign_in(server.base_url, make_user(runtime, "marketer", [tenant.workspace_id]))
    base = f"/dashboard/w/{tenant.workspace_id}/segments"
    new = client.get(f"{base}/new")
    assert new.status_code == 200 and f"{tenant.partner.capitalize()} Cohorts" in new.text
    csrf = csrf_of(new.text)

    # "Count again" answers the whole page with the exact size of the form as posted.
    counted = client.post(f"{base}/new", data={"csrf_token": csrf, "action": "refresh", **cohort_row(tenant)})
    assert counted.status_code == 200 and size_of(counted.text) == 8
    # AND country = FR: users 0, 2, 4, 6.
    both = {
        **cohort_row(tenant),
        "g0.op": "and",
        "g0.f1.kind": "standard_attribute",
        "g0.f1.attribute": "country",
        "g0.f1.operator": "equals",
        "g0.f1.value": "FR",
    }
    page = client.post(f"{base}/new", data={"csrf_token": csrf, "action": "refresh", **both})
    assert size_of(page.text) == 4
    assert re.search(r'id="size-email">2<', page.text)  # users 0 and 6 have no email address
    # Buttons change the form: another filter row appears.
    added = client.post(f"{base}/new", data={"csrf_token": csrf, "action": "add_filter:0", **both})
    assert 'name="g0.f2.kind"' in added.text

    # The live script asks for fragments only: the size panel, or the builder.
    fragment = client.post(
        f"{base}/new", data={"csrf_token": csrf, "fragment": "segment-size", **both}, headers=FRAGMENT
    )
    assert fragment.text.lstrip().startswith('<section id="segment-size"') and size_of(fragment.text) == 4
    builder = client.post(
        f"{base}/new", data={"csrf_token": csrf, "fragment": "builder", "action": "add_group", **both}, headers=FRAGMENT
    )
    assert builder.text.lstrip().startswith('<div id="builder"') and "Filter group 2" in builder.text
    # A half-made filter says what is missing instead of a size.
    half = client.post(
        f"{base}/new",
        data={"csrf_token": csrf, "fragment": "segment-size", **both, "g0.f1.value": ""},
        headers=FRAGMENT,
    )
    assert "Filter 2: Enter a value." in half.text and 'id="size-total"' not in half.text
    client.close()


def test_save_edit_preview_and_delete(
    server: ServerProcess, runtime: PlatformRuntime, tenant: Tenant, seeded: Any
) -> None:
    client = sign_in(server.base_url, make_user(runtime, "marketer", [tenant.workspace_id]))
    base = f"/dashboard/w/{tenant.workspace_id}/segments"
    csrf = csrf_of(client.get(f"{base}/new").text)
    saved = client.post(
        f"{base}/new",
        data={"csrf_token": csrf, "action": "save", "name": "VIPs", **cohort_row(tenant)},
        follow_redirects=False,
    )
    assert saved.status_code == 303
    location = saved.headers["location"]
    segment_id = location.rsplit("/", 1)[1]
    shown = client.get(location)
    assert shown.status_code == 200 and "Segment “VIPs” saved." in shown.text and 'value="VIPs"' in shown.text
    listing = client.get(base)
    assert "VIPs" in listing.text and "Cohorts includes “VIP customers”" in listing.text

    preview = client.get(f"{base}/{segment_id}/preview")
    assert preview.status_code == 200 and preview.text.count("<tr>") == 1 + 8

    # Edit: rename and narrow to France.
    edited = client.post(
        location,
        data={"csrf_token": csrf, "action": "save", "name": "VIPs in France", **cohort_row(tenant),
              "g0.f1.kind": "standard_attribute", "g0.f1.attribute": "country", "g0.f1.operator": "equals",
              "g0.f1.value": "FR"},
    )  # fmt: skip
    assert edited.status_code == 200 and "Segment “VIPs in France” saved." in edited.text
    with runtime.transaction() as conn:
        assert service.segment_size(conn, tenant.workspace_id, segment_id, now=runtime.clock()).total == 4

    # A segment a campaign targets cannot be deleted; the page says why and nothing changes.
    with runtime.transaction() as conn:
        create_campaign(
            conn,
            tenant.workspace_id,
            {"name": "Hooks", "segment_ids": [segment_id],
             "message": {"channel": "webhook", "url": "http://127.0.0.1:9/x", "body": {"id": "{{ external_id }}"}}},
        )  # fmt: skip
    assert "Delete “VIPs in France”?" in client.get(f"{base}/{segment_id}/delete").text
    refused = client.post(f"{base}/{segment_id}/delete", data={"csrf_token": csrf})
    assert refused.status_code == 200 and "Not deleted: segment" in refused.text and "still used" in refused.text
    assert segment_names(runtime, tenant.workspace_id) == ["VIPs in France"]

    unused = client.post(
        f"{base}/new",
        data={"csrf_token": csrf, "action": "save", "name": "Spare", **cohort_row(tenant)},
        follow_redirects=False,
    )
    spare_id = unused.headers["location"].rsplit("/", 1)[1]
    deleted = client.post(f"{base}/{spare_id}/delete", data={"csrf_token": csrf})
    assert "Segment “Spare” deleted." in deleted.text
    assert segment_names(runtime, tenant.workspace_id) == ["VIPs in France"]
    client.close()


def test_bad_input_is_explained_and_saves_nothing(
    server: ServerProcess, runtime: PlatformRuntime, tenant: Tenant, seeded: Any
) -> None:
    client = sign_in(server.base_url, make_user(runtime, "admin", [tenant.workspace_id]))
    base = f"/dashboard/w/{tenant.workspace_id}/segments"
    csrf = csrf_of(client.get(f"{base}/new").text)
    cases: list[tuple[dict[str, str], str]] = [
        ({"name": "", **cohort_row(tenant)}, "Give the segment a name."),
        ({"name": "x" * 201, **cohort_row(tenant)}, "segment name must be at most 200 characters"),
        (
            {"name": "Old", "g0.f0.kind": "custom_attribute", "g0.f0.attribute": "age",
             "g0.f0.operator": "greater_than", "g0.f0.value": "old"},
            "“is more than” needs a number, got &#39;old&#39;.",
        ),
        ({"name": "Nothing"}, "Add at least one filter."),
        ({"name": "Bad JSON", "filter_json": "{"}, "The filter is not valid JSON"),
        (
            {"name": "Ghost",
             "filter_json": f'{{"type": "partner_cohort", "partner": "{tenant.partner}", "cohort_id": "ghost"}}'},
            "has no cohort &#39;ghost&#39; in this workspace",
        ),
        ({"name": "Unknown", "filter_json": '{"type": "magic"}'}, "unknown filter type &#39;magic&#39;"),
    ]  # fmt: skip
    for fields, message in cases:
        answer = client.post(f"{base}/new", data={"csrf_token": csrf, "action": "save", **fields})
        assert answer.status_code == 400, fields
        assert "The segment was not saved" in answer.text and message in answer.text, (message, answer.text[-3000:])
    # Without its CSRF token the form is refused before anything runs.
    forged = client.post(f"{base}/new", data={"action": "save", "name": "Forged", **cohort_row(tenant)})
    assert forged.status_code == 403
    assert segment_names(runtime, tenant.workspace_id) == []
    client.close()


def test_segments_are_scoped_to_the_workspace_and_need_a_session(
    server: ServerProcess, runtime: PlatformRuntime, tenant: Tenant
) -> None:
    other = make_tenant(runtime)
    add_cohort_rows(runtime, other, "theirs", "Theirs", [])
    with runtime.transaction() as conn:
        theirs = service.create_segment(
            conn,
            other.workspace_id,
            "Theirs",
            {"type": "partner_cohort", "partner": other.partner, "cohort_id": "theirs"},
        )
    mine = f"/dashboard/w/{tenant.workspace_id}/segments"
    with httpx.Client(base_url=server.base_url) as anonymous:
        for path in (mine, f"{mine}/new", f"{mine}/{theirs.id}/preview"):
            response = anonymous.get(path, follow_redirects=False)
            assert response.status_code == 303 and "/dashboard/login" in response.headers["location"], path
        assert anonymous.get(f"{mine}/new", headers=FRAGMENT).status_code == 401
        assert anonymous.post(f"{mine}/new", data={"fragment": "segment-size"}, headers=FRAGMENT).status_code in (
            401,
            403,
        )

    client = sign_in(server.base_url, make_user(runtime, "marketer", [tenant.workspace_id]))
    csrf = csrf_of(client.get(mine).text)
    assert "Theirs" not in client.get(mine).text
    for path in (f"{mine}/{theirs.id}", f"{mine}/{theirs.id}/preview", f"{mine}/{theirs.id}/delete"):
        assert client.get(path).status_code == 404, path
    assert (
        client.post(f"{mine}/{theirs.id}", data={"csrf_token": csrf, "action": "save", "name": "Mine now"}).status_code
        == 404
    )
    assert client.post(f"{mine}/{theirs.id}/delete", data={"csrf_token": csrf}).status_code == 404
    # Their workspace itself is not granted: 404 too.
    assert client.get(f"/dashboard/w/{other.workspace_id}/segments/{theirs.id}").status_code == 404
    assert segment_names(runtime, other.workspace_id) == ["Theirs"]
    client.close()
