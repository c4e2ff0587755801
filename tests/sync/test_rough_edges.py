"""The rough edges a new user found (issue 10): secrets only where needed, .env beside the workspace file,
validate runs the models, an unreachable destination is named, no per-request log lines."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.support import free_port
from tests.sync.support import FakeBraze, Warehouse, run_cli, write_workspace


def _secret_workspace(tmp_path: Path, fake: FakeBraze, endpoint: str | None = None) -> Path:
    path = write_workspace(
        tmp_path,
        endpoint=endpoint or fake.url,
        partner=fake.partner,
        partner_api_key="${PARTNER_KEY}",
        data_import_key="${IMPORT_KEY}",
    )
    return path


def test_read_only_commands_need_no_destination_secret(
    tmp_path: Path, fake: FakeBraze, warehouse: Warehouse, sqlite_state: str
) -> None:
    fake.users = {"u1"}
    warehouse.set_range(range(3))
    path = _secret_workspace(tmp_path, fake)
    # The keys come from a .env beside the workspace file (not the current directory's).
    (tmp_path / ".env").write_text(f"PARTNER_KEY={fake.partner_api_key}\nIMPORT_KEY={fake.client_secret}\n")
    ran = run_cli(path, sqlite_state, "run", "vip", "--json")
    assert ran.returncode == 0, ran.stderr
    run_id = yaml.safe_load(ran.stdout)["run_id"]
    (tmp_path / ".env").unlink()
    for args in (("runs", "vip"), ("run-show", run_id), ("rejected", "vip"), ("validate", "--offline")):
        answer = run_cli(path, sqlite_state, *args)
        if args[0] == "validate":
            # validate is the one that checks every reference.
            assert answer.returncode == 1 and "environment variable ${PARTNER_KEY} is not set" in answer.stderr
        else:
            assert answer.returncode == 0, (args, answer.stderr)
    needs = run_cli(path, sqlite_state, "destinations", "test", "platform")
    assert needs.returncode == 1 and "destinations.platform.partner_api_key: environment variable" in needs.stderr


def test_validate_runs_each_model_and_checks_its_columns(tmp_path: Path, fake: FakeBraze, warehouse: Warehouse) -> None:
    warehouse.set_range(range(3))
    state = f"sqlite:///{tmp_path / 'state.db'}"
    path = write_workspace(
        tmp_path,
        endpoint=fake.url,
        partner=fake.partner,
        partner_api_key="k",
        data_import_key="k",
        identifier={"external_id": "external_id"},
    )
    bad = run_cli(path, state, "validate")
    assert bad.returncode == 1
    assert "syncs.vip.identifier: model 'customers' has no column 'external_id'" in bad.stderr
    doc = yaml.safe_load(path.read_text())
    doc["syncs"]["vip"]["identifier"] = {"external_id": "uid"}
    doc["models"]["customers"] = {"source": "warehouse", "sql": "SELECT * FROM nowhere", "primary_key": "id"}
    path.write_text(yaml.safe_dump(doc))
    broken = run_cli(path, state, "validate")
    assert broken.returncode == 1 and "models.customers:" in broken.stderr and "nowhere" in broken.stderr
    doc["models"]["customers"] = {"source": "warehouse", "table": "customers", "primary_key": "pk"}
    path.write_text(yaml.safe_dump(doc))
    assert "models.customers.primary_key: the query has no column 'pk'" in run_cli(path, state, "validate").stderr
    doc["models"]["customers"]["primary_key"] = "id"
    path.write_text(yaml.safe_dump(doc))
    good = run_cli(path, state, "validate")
    assert good.returncode == 0 and "every model's query runs" in good.stdout, good.stderr


def test_an_unreachable_destination_is_named_and_no_request_floods_the_log(
    tmp_path: Path, fake: FakeBraze, warehouse: Warehouse, sqlite_state: str
) -> None:
    warehouse.set_range(range(3))
    endpoint = f"http://127.0.0.1:{free_port()}"
    path = write_workspace(
        tmp_path,
        endpoint=endpoint,
        partner="hightouch",
        partner_api_key="k",
        data_import_key="k",
        destination={"retry": {"max_attempts": 2, "initial_backoff_seconds": 0.01}},
    )
    answer = run_cli(path, sqlite_state, "destinations", "test", "platform")
    assert answer.returncode == 1
    assert f"cannot reach POST {endpoint}/partners/hightouch/cohorts/users" in answer.stderr
    ran = run_cli(path, sqlite_state, "run", "vip", "--no-progress")
    assert f"cannot reach POST {endpoint}/partners/hightouch/cohorts" in ran.stdout + ran.stderr
    assert "HTTP Request:" not in ran.stderr  # httpx's per-request INFO lines stay out of the terminal
