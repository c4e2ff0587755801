"""The workspace file: validation errors name the file, the line and the key; ${ENV} interpolation."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from cohortflow.cli import cli
from cohortflow.sync.config import parse_workspace
from cohortflow.sync.errors import ConfigError

GOOD = """\
version: 1
sources:
  wh:
    type: duckdb
    path: warehouse.duckdb
models:
  customers:
    source: wh
    table: customers
    primary_key: id
destinations:
  braze:
    type: braze_cohorts
    rest_endpoint: http://127.0.0.1:9
    partner: hightouch
    partner_api_key: ${PAK}
    data_import_key: ${DIK}
syncs:
  vip:
    model: customers
    destination: braze
    identifier:
      fallback:
        - external_id: uid
        - alias: {name_column: email, label: email}
        - device_id: device
    cohort: {mode: create, name: VIP}
"""

ENV = {"PAK": "partner-key", "DIK": "import-key"}


def test_good_file_validates_and_interpolates() -> None:
    config = parse_workspace(GOOD, "cohortflow.yaml", ENV)
    dest = config.destinations["braze"]
    assert dest.partner_api_key.get_secret_value() == "partner-key"  # type: ignore[union-attr]
    assert "partner-key" not in repr(config)  # secrets never print
    assert [c.model_dump(exclude_none=True) for c in config.syncs["vip"].identifier.choices()] == [
        {"external_id": "uid"},
        {"alias": {"name_column": "email", "label": "email"}},
        {"device_id": "device"},
    ]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            ("    primary_key: id\n", "    primary_key: id\n    primray: x\n"),
            "cohortflow.yaml:11: models.customers.primray: unknown key",
        ),
        (("    type: duckdb\n", "    type: oracle\n"), "cohortflow.yaml:3: sources.wh: Input tag 'oracle'"),
        (
            ("    source: wh\n", "    source: nowhere\n"),
            "cohortflow.yaml:8: models.customers.source: unknown source 'nowhere'",
        ),
        (
            ("    cohort: {mode: create, name: VIP}\n", "    cohort: {mode: create}\n"),
            "cohortflow.yaml:27: syncs.vip.cohort.name: Field required",
        ),
        (
            ("        - device_id: device\n", "        - device_id: device\n          external_id: x\n"),
            "cohortflow.yaml:26: syncs.vip.identifier.fallback.2: name exactly one",
        ),
        (
            ("    table: customers\n", "    table: customers\n    sql: select 1\n"),
            "cohortflow.yaml:7: models.customers: a model needs exactly one of 'sql' or 'table'",
        ),
        (("version: 1\n", "version: 1\n  bad indent: [\n"), "cohortflow.yaml:"),
    ],
)
def test_errors_name_file_line_and_key(edit: tuple[str, str], expected: str) -> None:
    text = GOOD.replace(*edit)
    with pytest.raises(ConfigError) as info:
        parse_workspace(text, "cohortflow.yaml", ENV)
    assert expected in info.value.message


def test_missing_environment_variable_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        parse_workspace(GOOD, "cohortflow.yaml", {"PAK": "x"})
    assert info.value.message == (
        "cohortflow.yaml:17: destinations.braze.data_import_key: environment variable ${DIK} is not set"
    )


def test_users_track_sync_rules() -> None:
    text = GOOD.replace(
        "    type: braze_cohorts\n    rest_endpoint: http://127.0.0.1:9\n    partner: hightouch\n"
        "    partner_api_key: ${PAK}\n    data_import_key: ${DIK}\n",
        "    type: braze_users_track\n    rest_endpoint: http://127.0.0.1:9\n    rest_api_key: ${PAK}\n",
    )
    with pytest.raises(ConfigError) as info:
        parse_workspace(text, "cohortflow.yaml", ENV)
    assert "syncs.vip: a braze_users_track sync needs 'attribute'" in info.value.message
    assert "syncs.vip.cohort: braze_users_track syncs take 'attribute', not 'cohort'" in info.value.message


def test_cli_validate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cohortflow.yaml"
    path.write_text(GOOD)
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    runner = CliRunner()
    ok = runner.invoke(cli, ["sync", "-f", str(path), "validate", "--offline"])
    assert ok.exit_code == 0, ok.output
    assert "valid (1 source(s), 1 model(s), 1 destination(s), 1 sync(s))" in ok.output
    path.write_text(GOOD.replace("    partner: hightouch\n", "    partner: hightouch\n    partnr: x\n"))
    bad = runner.invoke(cli, ["sync", "-f", str(path), "validate"])
    assert bad.exit_code == 1
    assert f"{path}:16: destinations.braze.partnr: unknown key" in bad.output
