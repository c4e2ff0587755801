"""``cohortflow platform segment ...`` through click's runner, on the shared test database of each backend."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from cohortflow.cli import cli
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.settings import get_settings
from tests.platform.segments.seed import add_users
from tests.support import Tenant, add_cohort_rows


def run(url: str, *args: str, stdin: str | None = None) -> Result:
    get_settings.cache_clear()  # settings are read once per process; each invocation has its own env
    try:
        return CliRunner().invoke(
            cli,
            ["platform", "segment", *args],
            env={"COHORTFLOW_PLATFORM_DATABASE_URL": url},
            input=stdin,
            catch_exceptions=False,
        )
    finally:
        get_settings.cache_clear()


def ok_json(url: str, *args: str, stdin: str | None = None) -> Any:
    result = run(url, *args, "--json", stdin=stdin)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def seeded(runtime: PlatformRuntime, tenant: Tenant) -> Tenant:
    ids = add_users(
        runtime,
        tenant.workspace_id,
        {
            "fr1": {"external_id": "fr1", "country": "FR", "email": "fr1@example.com"},
            "fr2": {"country": "FR", "email": "fr2@example.com", "email_subscribe": "unsubscribed"},
            "de1": {"external_id": "de1", "country": "DE"},
        },
    )
    add_cohort_rows(runtime, tenant, "c1", "Cohort one", [ids["fr1"], ids["fr2"], ids["de1"]])
    return tenant


def test_segment_lifecycle(database_url: str, seeded: Tenant, tmp_path: Path) -> None:
    ws = seeded.workspace_id
    tree = {
        "type": "and",
        "filters": [
            {"type": "partner_cohort", "partner": seeded.partner, "cohort_id": "c1"},
            {"type": "standard_attribute", "attribute": "country", "operator": "equals", "value": "FR"},
        ],
    }
    path = tmp_path / "segment.json"
    path.write_text(json.dumps(tree))
    created = ok_json(database_url, "create", "-w", ws, "--name", "French c1", "--filter-file", str(path))
    segment_id = created["id"]
    assert created["filter"]["filters"][0]["operator"] == "includes"

    assert ok_json(database_url, "size", "-w", ws, segment_id) | {"evaluated_at": None} == {
        "segment_id": segment_id,
        "total": 2,
        "reachable_email": 1,
        "reachable_webhook": 1,
        "evaluated_at": None,
    }
    preview = ok_json(database_url, "preview", "-w", ws, segment_id, "--limit", "1")
    assert [m["external_id"] for m in preview] == ["fr1"]

    human = run(database_url, "size", "-w", ws, segment_id)
    assert human.exit_code == 0
    assert "2 users (1 reachable by email, 1 by webhook)" in human.stdout

    de = json.dumps({"type": "standard_attribute", "attribute": "country", "operator": "equals", "value": "DE"})
    updated = ok_json(database_url, "update", "-w", ws, segment_id, "--name", "Germans", "--filter", de)
    assert updated["name"] == "Germans"
    assert ok_json(database_url, "size", "-w", ws, segment_id)["total"] == 1

    from_stdin = ok_json(database_url, "create", "-w", ws, "--name", "stdin", "--filter-file", "-", stdin=de)
    listed = ok_json(database_url, "list", "-w", ws)
    assert [s["name"] for s in listed] == ["Germans", "stdin"]

    catalogue = ok_json(database_url, "filters", "-w", ws)
    (cohort_filter,) = [f for f in catalogue["filters"] if f["type"] == "partner_cohort"]
    assert cohort_filter["cohorts"] == [{"cohort_id": "c1", "name": "Cohort one"}]

    assert run(database_url, "delete", "-w", ws, from_stdin["id"]).exit_code == 0
    assert [s["id"] for s in ok_json(database_url, "list", "-w", ws)] == [segment_id]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--filter", '{"type": "nope"}'], "unknown filter type 'nope'"),
        (["--filter", "{not json"], "--filter is not valid JSON"),
        (
            ["--filter", '{"type": "partner_cohort", "partner": "x", "cohort_id": "missing"}'],
            "partner 'x' has no cohort 'missing'",
        ),
        ([], "a filter is required"),
    ],
)
def test_bad_definitions(database_url: str, seeded: Tenant, args: list[str], needle: str) -> None:
    result = run(database_url, "create", "-w", seeded.workspace_id, "--name", "bad", *args)
    assert result.exit_code != 0
    assert needle in result.output
    assert "Traceback" not in result.output
    assert ok_json(database_url, "list", "-w", seeded.workspace_id) == []


def test_unknown_segment(database_url: str, seeded: Tenant) -> None:
    result = run(database_url, "size", "-w", seeded.workspace_id, "seg_missing")
    assert result.exit_code == 1
    assert "segment 'seg_missing' does not exist" in result.output
