"""An audience synced through the CLI into the real platform server (SQLite and PostgreSQL backends, sync
state on the same backend): the cohort holds exactly the audience's members who exist in the platform."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cohortflow.cli import cli
from cohortflow.platform.runtime import PlatformRuntime
from tests.support import ServerProcess, Tenant
from tests.sync.audiences.oracle import Oracle
from tests.sync.audiences.test_sync import AUDIENCES, ENGAGED
from tests.sync.audiences.warehouse import NOW_UTC, generate, workspace_doc, write_duckdb
from tests.sync.support import FAST_RETRY, platform_members, seed_users


def test_an_audience_synced_into_the_platform_holds_exactly_its_members(
    tmp_path: Path,
    server: ServerProcess,
    runtime: PlatformRuntime,
    tenant: Tenant,
    state_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("cohortflow.sync.audiences.compiler.utcnow", lambda: NOW_UTC)
    data = generate(seed=11)
    # Only the first 60 people are users of the platform: importing a cohort never creates users.
    seed_users(server.base_url, tenant.rest_api_key, [{"external_id": f"u{i}"} for i in range(1, 61)])
    doc = workspace_doc(write_duckdb(data, tmp_path / "wh.duckdb"), AUDIENCES)
    doc["destinations"] = {
        "platform": {
            "type": "braze_cohorts",
            "rest_endpoint": server.base_url,
            "partner": tenant.partner,
            "partner_api_key": tenant.partner_api_key,
            "data_import_key": tenant.client_secret,
            "retry": FAST_RETRY,
        }
    }
    doc["syncs"] = {
        "engaged": {
            "audience": "engaged",
            "destination": "platform",
            "identifier": {"external_id": "external_id"},
            "cohort": {"mode": "create", "name": "Engaged"},
        }
    }
    path = tmp_path / "cohortflow.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    want = Oracle(data, AUDIENCES).members(ENGAGED)
    assert any(i > 60 for i in want) and any(i <= 60 for i in want)

    result = CliRunner().invoke(cli, ["sync", "-f", str(path), "--state-url", state_url, "run", "engaged", "--json"])
    assert result.exit_code == 0, result.output
    assert platform_members(runtime, tenant.workspace_id, "cohortflow-engaged") == {f"u{i}" for i in want if i <= 60}
    counts = json.loads(result.stdout)["counts"]
    assert (counts["adds"], counts["matched"], counts["unmatched"]) == (
        len(want),
        len([i for i in want if i <= 60]),
        len([i for i in want if i > 60]),
    )

    again = CliRunner().invoke(cli, ["sync", "-f", str(path), "--state-url", state_url, "run", "engaged", "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["counts"]["requests"] == 0  # nothing changed: nothing sent
