"""The segment builder's form codec: builder fields <-> filter trees, without a database."""

from __future__ import annotations

from typing import Any

import pytest

from cohortflow.platform.dashboard import segment_builder as sb
from cohortflow.platform.segments.filters import dump_filter, parse_filter

CATALOGUE = sb.Catalogue(
    partners=[sb.PartnerCohorts("hightouch", "Hightouch Cohorts", [("vip", "VIP customers"), ("churn", "Churn risk")])]
)
COHORT = {"type": "partner_cohort", "partner": "hightouch", "cohort_id": "vip", "operator": "includes"}
LEAVES: list[dict[str, Any]] = [
    COHORT,
    {**COHORT, "cohort_id": "churn", "operator": "does_not_include"},
    {"type": "custom_attribute", "attribute": "plan", "operator": "equals", "value": "pro"},
    {"type": "custom_attribute", "attribute": "plan", "operator": "equals", "value": "42"},
    {"type": "custom_attribute", "attribute": "age", "operator": "greater_than", "value": 30},
    {"type": "custom_attribute", "attribute": "vip", "operator": "equals", "value": True},
    {"type": "custom_attribute", "attribute": "tier", "operator": "in", "value": [1, 2, 3]},
    {"type": "custom_attribute", "attribute": "tags", "operator": "in", "value": ["a, b", "c"]},
    {"type": "custom_attribute", "attribute": "seen", "operator": "within_last_days", "value": 7},
    {"type": "custom_attribute", "attribute": "seen", "operator": "exists"},
    {"type": "standard_attribute", "attribute": "country", "operator": "in", "value": ["FR", "DE"]},
    {"type": "standard_attribute", "attribute": "dob", "operator": "before", "value": "2000-01-01"},
    {"type": "identity", "state": "anonymous"},
    {"type": "has_email", "value": False},
    {"type": "email_subscription", "state": "opted_in"},
    {"type": "custom_event", "event": "login", "min_count": 3, "within_days": 30},
    {"type": "purchase", "min_count": 1},
    {"type": "purchase", "product_id": "sku-1", "min_count": 2},
    {"type": "random_bucket", "operator": "less_than", "value": 500},
]


def round_trip(tree: dict[str, Any]) -> dict[str, Any] | None:
    """Tree -> builder -> the form fields a browser would post -> builder -> tree."""
    builder = sb.from_tree(parse_filter(tree), CATALOGUE)
    assert not builder.advanced
    fields = {"op": builder.op}
    for g, group in enumerate(builder.groups):
        fields[f"g{g}.op"] = group.op
        for f, row in enumerate(group.rows):
            for name in ("kind", "operator", "cohort", "attribute", "value", "state", "event", "product_id",
                         "min_count", "within_days"):  # fmt: skip
                fields[f"g{g}.f{f}.{name}"] = getattr(row, name)
    return sb.to_tree(sb.from_form(fields, CATALOGUE))


@pytest.mark.parametrize("leaf", LEAVES, ids=lambda leaf: f"{leaf['type']}-{leaf.get('operator', '')}")
def test_every_leaf_survives_the_form(leaf: dict[str, Any]) -> None:
    assert round_trip(leaf) == dump_filter(parse_filter(leaf))


def test_groups_survive_the_form() -> None:
    tree = {
        "type": "or",
        "filters": [
            {"type": "and", "filters": [COHORT, LEAVES[2]]},
            LEAVES[12],
            {"type": "or", "filters": [LEAVES[4], LEAVES[14]]},
        ],
    }
    assert round_trip(tree) == tree
    flat = {"type": "and", "filters": [COHORT, LEAVES[10]]}
    assert round_trip(flat) == flat


def test_trees_the_builder_cannot_draw_open_as_json() -> None:
    for tree in (
        {"type": "not", "filter": COHORT},
        {"type": "and", "filters": [COHORT, {"type": "or", "filters": [LEAVES[2], {"type": "not", "filter": COHORT}]}]},
    ):
        builder = sb.from_tree(parse_filter(tree), CATALOGUE)
        assert builder.advanced
        assert sb.to_tree(sb.from_form({"filter_json": builder.json_text or ""}, CATALOGUE)) == tree
    broken = sb.from_form({"filter_json": "{not json"}, CATALOGUE)
    assert sb.to_tree(broken) is None and broken.errors[0].startswith("The filter is not valid JSON")


@pytest.mark.parametrize(
    ("operator", "text", "value"),
    [
        ("equals", "42", 42),
        ("equals", "4.5", 4.5),
        ("equals", '"42"', "42"),
        ("equals", "true", True),
        ("equals", "pro", "pro"),
        ("in", "1, 2,3", [1, 2, 3]),
        ("in", 'a, "b, c", 3', ["a", "b, c", "3"]),
        ("in", '"1", 2', ["1", "2"]),
        ("contains", '"x"', "x"),
        ("greater_than", "-3", -3),
    ],
)
def test_typed_values(operator: str, text: str, value: Any) -> None:
    assert sb.parse_custom_value(operator, text) == value


def test_row_problems_name_the_row_and_say_what_is_wrong() -> None:
    builder = sb.from_form(
        {
            "g0.f0.kind": "custom_attribute",
            "g0.f0.attribute": "age",
            "g0.f0.operator": "greater_than",
            "g0.f0.value": "abc",
            "g0.f1.kind": "custom_event",
            "g0.f1.event": "",
            "g1.f0.kind": "random_bucket",
            "g1.f0.operator": "less_than",
            "g1.f0.value": "10000",
        },
        CATALOGUE,
    )
    assert sb.to_tree(builder) is None
    errors = [row.error for group in builder.groups for row in group.rows]
    assert errors[0] == "“is more than” needs a number, got 'abc'."
    assert errors[1] == "Enter the custom event's name."
    assert errors[2] == "The bucket number must be between 0 and 9999."
    empty = sb.Builder()
    assert sb.to_tree(empty) is None and empty.errors == ["Add at least one filter."]


def test_rows_stay_consistent_when_the_filter_changes() -> None:
    # A cohort row switched to "Profile Attribute" gets an attribute and an operator that applies to it.
    row = sb.normalize_row(sb.Row(kind="standard_attribute", operator="includes"), CATALOGUE)
    assert (row.attribute, row.operator) == ("country", "equals")
    dob = sb.normalize_row(sb.Row(kind="standard_attribute", attribute="dob", operator="equals"), CATALOGUE)
    assert dob.operator == "before"
    cohort = sb.normalize_row(sb.Row(kind="cohort:hightouch", cohort="gone"), CATALOGUE)
    assert (cohort.operator, cohort.cohort) == ("includes", "vip")


def test_buttons_add_and_remove_filters_and_groups() -> None:
    builder = sb.default_builder(CATALOGUE)
    assert [[r.kind for r in g.rows] for g in builder.groups] == [["cohort:hightouch"]]
    builder = sb.apply_action(builder, "add_filter:0", CATALOGUE)
    builder = sb.apply_action(builder, "add_group", CATALOGUE)
    assert [len(g.rows) for g in builder.groups] == [2, 1]
    builder = sb.apply_action(builder, "remove:1:0", CATALOGUE)  # the last filter of a group takes the group
    assert [len(g.rows) for g in builder.groups] == [2]
    assert sb.apply_action(builder, "remove:7:7", CATALOGUE).groups == builder.groups  # a stale button


def test_description_reads_like_the_builder() -> None:
    tree = parse_filter({"type": "and", "filters": [COHORT, LEAVES[10], {"type": "not", "filter": LEAVES[15]}]})
    assert sb.describe(tree, CATALOGUE) == (
        "Hightouch Cohorts includes “VIP customers” AND Country is any of FR, DE AND "
        "NOT (Performed Custom Event “login” at least 3 times in the last 30 days)"
    )
