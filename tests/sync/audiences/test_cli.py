"""``cohortflow sync audiences``: list, schema, compile, size (with groups and a sample), overlap, and clear
errors for names that do not resolve."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from cohortflow.cli import cli
from tests.sync.audiences.oracle import Oracle, bucket
from tests.sync.audiences.test_sync import AUDIENCES, ENGAGED
from tests.sync.audiences.warehouse import NOW_UTC, Data, generate, workspace_doc, write_duckdb


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Data]:
    monkeypatch.setattr("cohortflow.sync.audiences.compiler.utcnow", lambda: NOW_UTC)
    data = generate()
    doc = workspace_doc(write_duckdb(data, tmp_path / "wh.duckdb"), AUDIENCES)
    doc["priority_lists"] = {"tiers": {"audiences": ["vip", "engaged"]}}
    path = tmp_path / "cohortflow.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path, data


def _cli(path: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["sync", "-f", str(path), "--state-url", "sqlite://", "audiences", *args])


def _json(path: Path, *args: str) -> Any:
    result = _cli(path, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_size_counts_groups_and_samples(workspace: tuple[Path, Data]) -> None:
    path, data = workspace
    oracle = Oracle(data, AUDIENCES)
    engaged, vip = oracle.members(ENGAGED), oracle.members(AUDIENCES["vip"]["filter"])
    size = _json(path, "size", "engaged", "--sample", "3")
    assert (size["size"], size["parent_rows"]) == (len(engaged), len(data.rows("customers")))
    assert size["groups"] == {
        "treatment": len([i for i in engaged if bucket("engaged", i) < 8000]),
        "holdout": len([i for i in engaged if bucket("engaged", i) >= 8000]),
    }
    assert len(size["sample"]) == 3 and {r["id"] for r in size["sample"]} <= engaged
    assert "external_id" in size["columns"] and size["sql"].startswith("SELECT")
    share = _json(path, "size", "engaged", "--priority-list", "tiers", "--sample", "0")
    assert share["size"] == len(engaged - vip) and share["groups"] == {"vip": len(vip), "engaged": len(engaged - vip)}
    assert share["sample"] == []
    text = _cli(path, "size", "engaged", "--split", "holdout")
    assert (
        text.exit_code == 0
        and f"audience 'engaged' (split 'holdout'): {size['groups']['holdout']} of 80" in text.output
    )


def test_overlap(workspace: tuple[Path, Data]) -> None:
    path, data = workspace
    oracle = Oracle(data, AUDIENCES)
    engaged, vip = oracle.members(ENGAGED), oracle.members(AUDIENCES["vip"]["filter"])
    overlap = _json(path, "overlap", "engaged", "vip")
    assert (overlap["a_size"], overlap["b_size"], overlap["both"]) == (len(engaged), len(vip), len(engaged & vip))
    assert overlap["either"] == len(engaged | vip)


def test_compile_list_and_schema(workspace: tuple[Path, Data]) -> None:
    path, _ = workspace
    compiled = _cli(path, "compile", "engaged", "--split", "holdout")
    assert compiled.exit_code == 0, compiled.output
    assert compiled.output.startswith("-- audience 'engaged' (split 'holdout'): source 'wh', dialect duckdb\nSELECT")
    assert "2030-05-16 12:00:00" in compiled.output and "MD5('engaged:'" in compiled.output
    listing = _json(path, "list")
    assert [a["name"] for a in listing["audiences"]] == ["engaged", "cheap", "vip"]
    assert listing["priority_lists"] == {"tiers": ["vip", "engaged"]}
    schema = _json(path, "schema")
    assert (
        schema[0]["parent"] == "people" and {t["name"]: t["type"] for t in schema[0]["traits"]}["last_login"] == "date"
    )
    assert _cli(path, "schema").exit_code == 0 and _cli(path, "list").exit_code == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["size", "nope"], "error: unknown audience 'nope' (audiences: cheap, engaged, vip)"),
        (["size", "engaged", "--split", "control"], "audience 'engaged' has no split group 'control'"),
        (["compile", "cheap", "--priority-list", "tiers"], "priority list 'tiers' does not list audience 'cheap'"),
        (
            ["overlap", "engaged", "customers"],
            "unknown audience 'customers' (audiences: cheap, engaged, vip); 'customers' is a model",
        ),
    ],
)
def test_names_that_do_not_resolve_are_clear_errors(
    workspace: tuple[Path, Data], args: list[str], message: str
) -> None:
    result = _cli(workspace[0], *args)
    assert result.exit_code == 1 and message in result.output, result.output
