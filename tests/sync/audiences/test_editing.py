"""Saving audiences into cohortflow.yaml (what a builder's save button calls): the block is written in place,
comments and the rest of the file survive, and a bad definition is a clear error that writes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from cohortflow.cli import cli
from cohortflow.sync import load_workspace
from cohortflow.sync.audiences.editing import Problem, delete_audience, preview, problems_of, save_audience
from cohortflow.sync.audiences.service import audience_size
from cohortflow.sync.config import load_workspace_config
from cohortflow.sync.errors import ConfigError
from tests.sync.audiences.test_config import GOOD

FR = {"type": "property", "column": "country", "operator": "equals", "value": "FR"}


@pytest.fixture
def path(tmp_path: Path) -> Path:
    p = tmp_path / "cohortflow.yaml"
    # Comments in the file, an audience after the one edited, a section after the audiences.
    text = GOOD.replace("audiences:\n", "# who we talk to\naudiences:\n  # the active ones\n")
    text = text.replace("priority_lists:\n", "\n# lists: first match wins\npriority_lists:\n")
    p.write_text(text)
    return p


def test_add_replace_and_delete_keep_the_rest_of_the_file(path: Path) -> None:
    before = path.read_text()
    config = save_audience(path, "french", {"parent": "people", "description": "Françaises", "filter": FR})
    assert config.audiences["french"].description == "Françaises"
    after = path.read_text()
    assert after.startswith(before.split("\n# lists")[0])  # everything up to the last audience is untouched
    assert "# lists: first match wins\npriority_lists:" in after and "# the active ones" in after
    assert load_workspace_config(path).audiences.keys() == {"engaged", "cheap", "french"}

    # Replace the first audience: the others and every comment stay.
    engaged = {
        "parent": "people",
        "filter": {"type": "not", "filter": FR},
        "splits": {"groups": {"treatment": 50, "holdout": 50}},
    }
    save_audience(path, "engaged", engaged)
    config = load_workspace_config(path)
    assert config.audiences["engaged"].splits is not None
    assert config.audiences["engaged"].splits.groups == {"treatment": 50, "holdout": 50}
    assert config.audiences["cheap"].filter is not None
    text = path.read_text()
    assert "# who we talk to\naudiences:\n  # the active ones\n  engaged:\n" in text
    assert "# lists: first match wins" in text

    delete_audience(path, "french")
    assert load_workspace_config(path).audiences.keys() == {"engaged", "cheap"}
    assert "french" not in path.read_text()


NESTED = {"type": "in_audience", "audience": "engaged"}
BAD: list[tuple[str, dict[str, Any], str]] = [
    ("x", {"parent": "people", "filter": {**FR, "column": "contry"}},
     "audiences.x.filter.column: unknown column 'contry'"),
    ("x", {"parent": "people", "filter": {**FR, "operator": "greater_than"}},
     "operator 'greater_than' does not apply to the text column 'country'"),
    ("x", {"parent": "people", "filter": FR, "color": "red"}, "audiences.x.color: unknown key"),
    ("cheap", {"parent": "people", "filter": NESTED}, "includes itself: engaged -> cheap -> engaged"),
    ("x", {"parent": "nobody"}, "audiences.x.parent: unknown parent 'nobody'"),
    # a sync sends its holdout group: the splits cannot go
    ("engaged", {"parent": "people", "filter": FR}, "syncs.holdout.audience.split: audience 'engaged' has no split"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "definition", "message"), BAD)
def test_a_bad_definition_writes_nothing(path: Path, name: str, definition: dict[str, Any], message: str) -> None:
    before = path.read_text()
    with pytest.raises(ConfigError) as err:
        save_audience(path, name, definition)
    assert message in err.value.message
    assert path.read_text() == before
    # No temporary file is left; the lock file every edit of the workspace file takes stays, empty.
    assert sorted(p.name for p in path.parent.iterdir()) == [".cohortflow.yaml.lock", "cohortflow.yaml"]


def test_deleting_an_audience_still_named_elsewhere_is_refused(path: Path) -> None:
    before = path.read_text()
    with pytest.raises(ConfigError, match="unknown audience 'cheap'"):
        delete_audience(path, "cheap")  # engaged nests it, the tiers list and a sync name it
    with pytest.raises(ConfigError, match="no audience named 'gone'"):
        delete_audience(path, "gone")
    assert path.read_text() == before


def test_a_flow_style_section_is_refused_and_an_absent_one_is_created(tmp_path: Path) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text("version: 1\naudiences: {a: {parent: p}}\n")
    with pytest.raises(ConfigError, match="flow style"):
        save_audience(flow, "b", {"parent": "p"})
    bare = tmp_path / "cohortflow.yaml"
    bare.write_text(GOOD.split("parents:")[0] + "parents:" + GOOD.split("parents:")[1].split("audiences:")[0])
    save_audience(bare, "fr", {"parent": "people", "filter": FR})
    assert load_workspace_config(bare).audiences["fr"].filter == load_workspace_config(bare).audiences["fr"].filter


def test_preview_sizes_an_unsaved_definition(path: Path, tmp_path: Path) -> None:
    import duckdb

    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    con.execute("CREATE TABLE customers AS SELECT i AS id, 'u' || i AS external_id, NULL AS email, "
                "CASE WHEN i % 4 = 0 THEN 'FR' ELSE 'DE' END AS country, i AS ltv, TRUE AS vip, "
                "NULL::TIMESTAMP AS signed_up_at FROM range(100) t(i)")  # fmt: skip
    con.close()
    before = path.read_text()
    with load_workspace(path, state_url="sqlite://") as ws:
        unsaved = preview(ws, "draft", {"parent": "people", "filter": FR})
        assert audience_size(unsaved, "draft", sample=0).size == 25
        with pytest.raises(ConfigError, match="unknown column 'contry'"):
            preview(ws, "draft", {"parent": "people", "filter": {**FR, "column": "contry"}})
    assert path.read_text() == before


def test_cli_save_and_delete(path: Path, tmp_path: Path) -> None:
    definition = tmp_path / "french.yaml"
    definition.write_text("parent: people\nfilter: {type: property, column: country, operator: equals, value: FR}\n")
    runner = CliRunner()
    saved = runner.invoke(cli, ["sync", "-f", str(path), "audiences", "save", "french", str(definition)])
    assert saved.exit_code == 0, saved.output
    assert "french" in load_workspace_config(path).audiences
    definition.write_text("parent: people\nfilter: {type: property, column: contry, operator: equals, value: FR}\n")
    bad = runner.invoke(cli, ["sync", "-f", str(path), "audiences", "save", "french", str(definition)])
    assert bad.exit_code == 1 and "unknown column 'contry'" in bad.output
    deleted = runner.invoke(cli, ["sync", "-f", str(path), "audiences", "delete", "french"])
    assert deleted.exit_code == 0, deleted.output
    assert "french" not in load_workspace_config(path).audiences


_names = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True)
_keys = st.lists(st.one_of(_names, st.integers(0, 99).map(str)), min_size=0, max_size=6)
# Any text but a newline, U+2028 included (a quoted value may hold one).
_messages = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), min_size=1, max_size=80)


@given(name=_names, other=_names, keys=_keys, message=_messages, line=st.integers(1, 9999))
def test_problems_are_keyed_inside_the_audience(
    name: str, other: str, keys: list[str], message: str, line: int
) -> None:
    """Each line of a ConfigError about audience ``name`` gives its key inside the audience (what the builder uses
    to show it next to its condition); a line about anything else keeps its whole text and no key."""
    key = ".".join(["audiences", name, *keys])
    elsewhere = f"syncs.{other}.identifier"
    text = f"cohortflow.yaml:{line}: {key}: {message}\ncohortflow.yaml:{line}: {elsewhere}: {message}"
    problems = problems_of(ConfigError(text), name)
    assert problems[0] == Problem(".".join(keys), message)
    assert problems[1] == Problem(None, f"cohortflow.yaml:{line}: {elsewhere}: {message}")
