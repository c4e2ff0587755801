"""The audience part of cohortflow.yaml: a good file validates; each bad definition is one clear error naming
the file, the line and the key, and nothing runs or is written."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from cohortflow.cli import cli
from cohortflow.sync.audiences.config import AudienceRef
from cohortflow.sync.audiences.filters import EventCondition, PropertyCondition
from cohortflow.sync.config import parse_workspace
from cohortflow.sync.errors import ConfigError

GOOD = """\
version: 1
sources:
  wh: {type: duckdb, path: wh.duckdb}
  other: {type: sqlite, path: other.sqlite}
models:
  customers: {source: wh, table: customers, primary_key: id}
  orders: {source: wh, sql: SELECT * FROM orders, primary_key: order_id}
  views: {source: wh, table: page_views, primary_key: view_id}
  remote: {source: other, table: t, primary_key: id}
parents:
  people:
    model: customers
    identifiers: [external_id, email]
    columns: {country: text, ltv: number, vip: boolean, signed_up_at: timestamp}
    related:
      orders: {model: orders, join: {id: customer_id}, columns: {amount: number, status: text}}
    events:
      page_views: {model: views, join: {id: customer_id}, timestamp: viewed_at, columns: {url: text}}
    traits:
      spent: {relation: orders, aggregate: sum, column: amount}
      last_url: {relation: page_views, aggregate: last, column: url}
audiences:
  engaged:
    parent: people
    filter:
      type: and
      filters:
        - {type: property, column: country, operator: in, value: [FR, DE]}
        - {type: property, column: spent, operator: greater_than, value: 100}
        - {type: related, relation: orders, where: {type: property, column: status, operator: equals, value: paid}}
        - type: performed
          event: page_views
          within_last_days: 30
          count: {operator: at_least, value: 3}
        - {type: not, filter: {type: in_audience, audience: cheap}}
    splits: {groups: {treatment: 90, holdout: 10}}
  cheap:
    parent: people
    filter: {type: property, column: ltv, operator: less_than, value: 10}
priority_lists:
  tiers: {audiences: [engaged, cheap]}
destinations:
  braze: {type: braze_cohorts, rest_endpoint: "http://127.0.0.1:9", partner: p, partner_api_key: a, data_import_key: b}
syncs:
  holdout:
    audience: {name: engaged, split: holdout, priority_list: tiers}
    destination: braze
    identifier: {external_id: external_id}
    cohort: {mode: create, name: Holdout}
  cheap:
    audience: cheap
    destination: braze
    identifier: {alias: {name_column: email, label: email}}
    cohort: {mode: create, name: Cheap}
"""


def test_good_file_validates() -> None:
    config = parse_workspace(GOOD, "cohortflow.yaml")
    assert config.syncs["holdout"].audience == AudienceRef(name="engaged", split="holdout", priority_list="tiers")
    assert config.syncs["cheap"].audience == AudienceRef(name="cheap")
    engaged = config.audiences["engaged"].filter
    assert engaged is not None and engaged.type == "and"
    assert isinstance(engaged.filters[0], PropertyCondition) and engaged.filters[0].value == ["FR", "DE"]
    assert isinstance(engaged.filters[3], EventCondition) and engaged.filters[3].count.value == 3
    assert config.audiences["engaged"].splits is not None
    assert config.audiences["engaged"].splits.bucket_ranges() == {"treatment": (0, 9000), "holdout": (9000, 10_000)}


CHEAP = "filter: {type: property, column: ltv, operator: less_than, value: 10}"
HOLDOUT = "audience: {name: engaged, split: holdout, priority_list: tiers}"

BAD: list[tuple[tuple[str, str], str]] = [
    # columns, operators and values, by type
    (
        ("column: country, operator: in", "column: contry, operator: in"),
        "cohortflow.yaml:28: audiences.engaged.filter.filters.0.column: unknown column 'contry' of parent 'people' "
        "(columns: country, last_url, ltv, signed_up_at, spent, vip)",
    ),
    (
        ("column: spent, operator: greater_than", "column: spent, operator: contains"),
        "cohortflow.yaml:29: audiences.engaged.filter.filters.1.operator: operator 'contains' does not apply to "
        "the number column 'spent'; use one of equals, not_equals, in,",
    ),
    (
        ("operator: greater_than, value: 100", "operator: greater_than, value: '100'"),
        "cohortflow.yaml:29: audiences.engaged.filter.filters.1.value: operator 'greater_than' on a number column "
        "needs a number, got string '100' (column 'spent')",
    ),
    (
        ("operator: in, value: [FR, DE]", "operator: in, value: [FR, 3]"),
        "audiences.engaged.filter.filters.0.value: operator 'in' on a text column needs a string, got number 3",
    ),
    (
        ("operator: in, value: [FR, DE]", "operator: in"),
        "cohortflow.yaml:28: audiences.engaged.filter.filters.0: operator 'in' needs a non-empty list of values, "
        "got no value (column 'country')",
    ),
    (
        ("column: ltv, operator: less_than, value: 10", "column: signed_up_at, operator: before, value: 2024-02-30"),
        "cohortflow.yaml:39: invalid value: day is out of range for month",
    ),
    (
        ("column: ltv, operator: less_than, value: 10", "column: signed_up_at, operator: before, value: soon"),
        "audiences.cheap.filter.value: operator 'before' on a timestamp column needs a date or an ISO-8601 "
        "date-time: 'soon' is not an ISO-8601 date or date-time",
    ),
    (
        ("column: ltv, operator: less_than, value: 10", "column: ltv, operator: within_last_days, value: 3"),
        "audiences.cheap.filter.operator: operator 'within_last_days' does not apply to the number column 'ltv'",
    ),
    (
        ("column: ltv, operator: less_than, value: 10", "column: ltv, operator: between, value: [10, 1]"),
        "audiences.cheap.filter.value: 'between' needs [from, to] with from <= to, got number 10 > number 1",
    ),
    # tree shape
    (
        ("{type: property, column: country", "{type: propperty, column: country"),
        "cohortflow.yaml:28: audiences.engaged.filter.filters.0: Input tag 'propperty' found using 'type' does "
        "not match any of the expected tags: 'and', 'or', 'not', 'property', 'related', 'performed', 'in_audience'",
    ),
    (
        ("value: [FR, DE]}", "value: [FR, DE], negate: true}"),
        "cohortflow.yaml:28: audiences.engaged.filter.filters.0.negate: unknown key",
    ),
    (
        ("within_last_days: 30\n", "within_last_days: 30\n          after: 2024-01-01\n"),
        "cohortflow.yaml:31: audiences.engaged.filter.filters.3: give either 'within_last_days' or 'after' / "
        "'before', not both",
    ),
    (
        ("count: {operator: at_least, value: 3}", "count: {operator: at_least, value: -1}"),
        "audiences.engaged.filter.filters.3.count.value: Input should be greater than or equal to 0",
    ),
    # relations and events
    (
        ("{type: related, relation: orders,", "{type: related, relation: page_views,"),
        "cohortflow.yaml:30: audiences.engaged.filter.filters.2.relation: unknown related model 'page_views' of "
        "parent 'people' (related models: orders); 'page_views' is an event: use a 'performed' condition",
    ),
    (
        ("event: page_views\n", "event: clicks\n"),
        "cohortflow.yaml:32: audiences.engaged.filter.filters.3.event: unknown event 'clicks' of parent 'people' "
        "(events: page_views)",
    ),
    (
        ("where: {type: property, column: status,", "where: {type: property, column: country,"),
        "audiences.engaged.filter.filters.2.where.column: unknown column 'country' of related model 'orders' "
        "(columns: amount, status)",
    ),
    (
        (
            "where: {type: property, column: status, operator: equals, value: paid}",
            "where: {type: in_audience, audience: cheap}",
        ),
        "audiences.engaged.filter.filters.2.where.type: a 'where' over related model 'orders' takes property "
        "conditions on its columns (and and/or/not groups), not a condition of type 'in_audience'",
    ),
    # nesting
    (
        (CHEAP, "filter: {type: in_audience, audience: engaged}"),
        "cohortflow.yaml:25: audiences.engaged.filter: audience 'engaged' includes itself: engaged -> cheap -> engaged",
    ),
    (
        (CHEAP, "filter: {type: in_audience, audience: cheap}"),
        "cohortflow.yaml:39: audiences.cheap.filter: audience 'cheap' includes itself: cheap -> cheap",
    ),
    (
        ("audience: cheap}}", "audience: gone}}"),
        "cohortflow.yaml:35: audiences.engaged.filter.filters.4.filter.audience: unknown audience 'gone' "
        "(audiences: cheap, engaged)",
    ),
    # schema
    (
        ("model: orders, join:", "model: remote, join:"),
        "cohortflow.yaml:16: parents.people.related.orders.model: model 'remote' is in source 'other' but the "
        "parent's model is in 'wh': an audience runs as one query in one warehouse",
    ),
    (
        ("aggregate: sum, column: amount", "aggregate: sum, column: status"),
        "cohortflow.yaml:20: parents.people.traits.spent.column: aggregate 'sum' needs a number column; 'status' "
        "is text",
    ),
    (
        ("aggregate: sum, column: amount", "aggregate: first, column: amount"),
        "parents.people.traits.spent.order_by: aggregate 'first' over related model 'orders' needs 'order_by' "
        "(only events have a time of their own)",
    ),
    (
        ("aggregate: sum, column: amount", "aggregate: count, column: amount"),
        "cohortflow.yaml:20: parents.people.traits.spent: aggregate 'count' counts rows and takes no 'column'",
    ),
    (
        ("spent: {relation: orders,", "country: {relation: orders,"),
        "parents.people.traits.country: trait 'country' has the name of a column of the parent",
    ),
    (
        ("timestamp: viewed_at, columns: {url: text}", "timestamp: viewed_at, columns: {url: text, viewed_at: text}"),
        "parents.people.events.page_views.timestamp: the timestamp column 'viewed_at' is declared as text",
    ),
    (
        ("columns: {country: text,", "columns: {country: string,"),
        "cohortflow.yaml:14: parents.people.columns.country: Input should be 'text', 'number', 'boolean', 'date' "
        "or 'timestamp'",
    ),
    (
        ("    model: customers\n", "    model: customer\n"),
        "cohortflow.yaml:12: parents.people.model: unknown model 'customer'",
    ),
    # splits and priority lists
    (
        ("{treatment: 90, holdout: 10}", "{treatment: 90, holdout: 11}"),
        "cohortflow.yaml:36: audiences.engaged.splits: the groups' percentages add up to 101, not 100",
    ),
    (
        ("{treatment: 90, holdout: 10}", "{treatment: 89.995, holdout: 10.005}"),
        "audiences.engaged.splits: group 'treatment': a percentage has at most two decimals, got 89.995",
    ),
    (
        ("tiers: {audiences: [engaged, cheap]}", "tiers: {audiences: [engaged, engaged]}"),
        "cohortflow.yaml:41: priority_lists.tiers.audiences.1: audience 'engaged' is listed twice",
    ),
    # syncs of audiences
    (
        ("    audience: cheap\n", "    audience: chaep\n"),
        "cohortflow.yaml:51: syncs.cheap.audience: unknown audience 'chaep' (audiences: cheap, engaged)",
    ),
    (
        ("    audience: cheap\n", "    model: cheap\n"),
        "cohortflow.yaml:51: syncs.cheap.model: unknown model 'cheap'; 'cheap' is an audience: use 'audience: cheap'",
    ),
    (
        ("    audience: cheap\n", "    audience: cheap\n    model: customers\n"),
        "cohortflow.yaml:50: syncs.cheap: a sync needs exactly one of 'model' or 'audience'",
    ),
    (
        ("split: holdout,", "split: control,"),
        "cohortflow.yaml:46: syncs.holdout.audience.split: audience 'engaged' has no split group 'control' "
        "(groups: holdout, treatment)",
    ),
    (
        (HOLDOUT, "audience: {name: cheap, priority_list: tiers, split: x}"),
        "syncs.holdout.audience.split: audience 'cheap' has no split group 'x' (groups: none declared)",
    ),
    (
        ("tiers: {audiences: [engaged, cheap]}", "tiers: {audiences: [cheap]}"),
        "syncs.holdout.audience.priority_list: priority list 'tiers' does not list audience 'engaged' "
        "(it lists: cheap)",
    ),
    (
        ("identifier: {external_id: external_id}", "identifier: {external_id: id}"),
        "cohortflow.yaml:48: syncs.holdout.identifier: column 'id' is not an identifier of parent 'people' "
        "(identifiers: external_id, email)",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("edit", "expected"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_each_bad_definition_is_a_clear_error(edit: tuple[str, str], expected: str) -> None:
    old, new = edit
    assert GOOD.count(old) == 1, old
    with pytest.raises(ConfigError) as err:
        parse_workspace(GOOD.replace(old, new), "cohortflow.yaml")
    assert expected in err.value.message, err.value.message


def test_a_bad_file_runs_nothing_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "cohortflow.yaml").write_text(
        GOOD.replace("column: country, operator: in", "column: contry, operator: in")
    )
    state = tmp_path / "state.db"
    runner = CliRunner()
    for args in (["validate"], ["run", "cheap"], ["audiences", "size", "cheap"], ["audiences", "compile", "cheap"]):
        result = runner.invoke(
            cli, ["sync", "-f", str(tmp_path / "cohortflow.yaml"), "--state-url", f"sqlite:///{state}", *args]
        )
        assert result.exit_code == 1, result.output
        assert "unknown column 'contry' of parent 'people'" in result.output
    assert not state.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohortflow.yaml"]


def test_the_documented_example_is_valid() -> None:
    docs = Path(__file__).resolve().parents[3] / "docs" / "audiences.md"
    example = docs.read_text().split("```yaml\n", 1)[1].split("```", 1)[0]
    around = (
        "sources:\n  warehouse: {type: duckdb, path: w.duckdb}\n"
        "destinations:\n  braze: {type: braze_cohorts, rest_endpoint: 'http://127.0.0.1:9', partner: p,"
        " partner_api_key: a, data_import_key: b}\n"
    )
    config = parse_workspace(around + example, "docs/audiences.md")
    assert set(config.audiences) == {"engaged", "cheap", "vip"}
    assert config.syncs["lifecycle_engaged"].audience == AudienceRef(name="engaged", priority_list="lifecycle")
