"""Audiences synced into cohorts (the fake Braze): exactly the right members, on every warehouse dialect; a
changed definition sends only the difference; split groups and priority shares are cohorts of their own."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from cohortflow.sync import load_workspace, run_sync
from tests.sync.audiences.conftest import AudienceWarehouse
from tests.sync.audiences.oracle import Oracle, bucket
from tests.sync.audiences.warehouse import NOW_UTC
from tests.sync.support import FAST_RETRY, FakeBraze

ENGAGED: dict[str, Any] = {
    "type": "and",
    "filters": [
        {"type": "property", "column": "country", "operator": "in", "value": ["FR", "fr", "DE"]},
        {
            "type": "or",
            "filters": [
                {
                    "type": "related",
                    "relation": "orders",
                    "count": {"operator": "at_least", "value": 2},
                    "where": {"type": "property", "column": "status", "operator": "equals", "value": "paid"},
                },
                {"type": "performed", "event": "page_views", "within_last_days": 30, "count": {"value": 2}},
                {"type": "property", "column": "paid_total", "operator": "greater_than", "value": 50},
            ],
        },
        {"type": "not", "filter": {"type": "in_audience", "audience": "cheap"}},
    ],
}
AUDIENCES: dict[str, Any] = {
    "engaged": {"parent": "people", "filter": ENGAGED, "splits": {"groups": {"treatment": 80, "holdout": 20}}},
    "cheap": {"parent": "people",
              "filter": {"type": "property", "column": "ltv", "operator": "less_than", "value": 10}},
    "vip": {"parent": "people", "filter": {"type": "property", "column": "vip", "operator": "equals", "value": True}},
}  # fmt: skip


@pytest.fixture(autouse=True)
def _fixed_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative windows count back from the generated data's "now"."""
    monkeypatch.setattr("cohortflow.sync.audiences.compiler.utcnow", lambda: NOW_UTC)


@pytest.fixture
def braze(audience_wh: AudienceWarehouse) -> Iterator[FakeBraze]:
    with FakeBraze() as fake:
        fake.users = {f"u{p['id']}" for p in audience_wh.data.rows("customers")}
        yield fake


def _syncs(fake: FakeBraze, targets: dict[str, Any], audiences: dict[str, Any], **extra: Any) -> dict[str, Any]:
    destination = {
        "type": "braze_cohorts",
        "rest_endpoint": fake.url,
        "partner": fake.partner,
        "partner_api_key": fake.partner_api_key,
        "data_import_key": fake.client_secret,
        "retry": FAST_RETRY,
    }
    syncs = {
        name: {
            "audience": target,
            "destination": "braze",
            "identifier": {"external_id": "external_id"},
            "cohort": {"mode": "create", "name": name},
        }
        for name, target in targets.items()
    }
    return {"audiences": audiences, "destinations": {"braze": destination}, "syncs": syncs, **extra}


def _run(
    wh: AudienceWarehouse, fake: FakeBraze, targets: dict[str, Any], audiences: dict[str, Any], **extra: Any
) -> dict[str, dict[str, Any]]:
    doc = _syncs(fake, targets, audiences, **extra)
    path = wh.write(doc.pop("audiences"), **doc)
    counts = {}
    with load_workspace(path, state_url=f"sqlite:///{wh.directory / 'state.db'}") as ws:
        for name in targets:
            result = run_sync(ws, name)
            assert result.status == "succeeded", result.message
            counts[name] = result.counts
    return counts


def _external_ids(ids: set[int]) -> set[str]:
    return {f"u{i}" for i in ids}


def test_an_audience_synced_into_a_cohort_has_exactly_its_members(
    audience_wh: AudienceWarehouse, braze: FakeBraze
) -> None:
    (audience_wh.directory / "state.db").unlink(missing_ok=True)
    oracle = Oracle(audience_wh.data, AUDIENCES)
    want = oracle.members(ENGAGED)
    assert 5 < len(want) < len(audience_wh.data.rows("customers")) - 5
    counts = _run(audience_wh, braze, {"engaged": "engaged"}, AUDIENCES)
    assert braze.members["cohortflow-engaged"] == _external_ids(want)
    assert counts["engaged"]["adds"] == len(want)

    # The marketer narrows the audience: only the difference crosses the wire.
    narrower = {**AUDIENCES, "engaged": {**AUDIENCES["engaged"], "filter": {**ENGAGED, "filters": [
        {"type": "property", "column": "country", "operator": "in", "value": ["FR", "fr"]}, *ENGAGED["filters"][1:]
    ]}}}  # fmt: skip
    now_want = Oracle(audience_wh.data, narrower).members(narrower["engaged"]["filter"])
    assert now_want < want
    counts = _run(audience_wh, braze, {"engaged": "engaged"}, narrower)
    assert braze.members["cohortflow-engaged"] == _external_ids(now_want)
    assert (counts["engaged"]["adds"], counts["engaged"]["removes"]) == (0, len(want - now_want))


def test_split_groups_and_priority_shares_are_cohorts_of_their_own(
    audience_wh: AudienceWarehouse, braze: FakeBraze
) -> None:
    (audience_wh.directory / "state.db").unlink(missing_ok=True)
    targets = {
        "treatment": {"name": "engaged", "split": "treatment"},
        "holdout": {"name": "engaged", "split": "holdout"},
        "first": {"name": "vip", "priority_list": "tiers"},
        "second": {"name": "engaged", "priority_list": "tiers"},
        "third": {"name": "cheap", "priority_list": "tiers"},
    }
    _run(audience_wh, braze, targets, AUDIENCES, priority_lists={"tiers": {"audiences": ["vip", "engaged", "cheap"]}})
    oracle = Oracle(audience_wh.data, AUDIENCES)
    engaged, vip, cheap = (oracle.members(AUDIENCES[a]["filter"]) for a in ("engaged", "vip", "cheap"))
    holdout = {i for i in engaged if bucket("engaged", i) >= 8000}
    got = {name: braze.members.get(f"cohortflow-{name}", set()) for name in targets}
    assert got["treatment"] == _external_ids(engaged - holdout)
    assert got["holdout"] == _external_ids(holdout) and holdout
    assert got["first"] == _external_ids(vip)
    assert got["second"] == _external_ids(engaged - vip)
    assert got["third"] == _external_ids(cheap - vip - engaged)
