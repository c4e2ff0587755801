"""Compiled audiences agree with a plain-Python reading of the rules, on DuckDB, SQLite and PostgreSQL.

Every condition kind and operator is checked on fixed trees, then random trees (hypothesis) mix them with
AND / OR / NOT, ``where`` trees, count rules, windows and nested audiences.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cohortflow.sync.audiences.compiler import AudienceQuery
from cohortflow.sync.audiences.config import AudienceRef
from cohortflow.sync.audiences.filters import OPERATORS_BY_TYPE
from tests.sync.audiences.conftest import AudienceWarehouse
from tests.sync.audiences.oracle import PARENT_COLUMNS, Oracle, _columns, _moment, bucket
from tests.sync.audiences.warehouse import NOW, NOW_UTC, TODAY

# Audiences the random trees may nest ("in_audience").
NESTED: dict[str, Any] = {
    "french": {"parent": "people", "filter": {"type": "property", "column": "country", "operator": "equals",
                                              "value": "FR"}},
    "buyers": {
        "parent": "people",
        "filter": {
            "type": "or",
            "filters": [
                {"type": "in_audience", "audience": "french"},
                {"type": "related", "relation": "orders", "count": {"operator": "at_least", "value": 2}},
            ],
        },
    },
    "everyone": {"parent": "people"},
}  # fmt: skip

DOMAINS: dict[str, list[Any]] = {
    "country": ["FR", "DE", "fr", "XX"],
    "email": ["p1", "corp", "example.com", ".io", "p12@corp.io"],
    "ltv": [0, 5.5, 10, 100, 250],
    "order_count": [0, 1, 2, 4],
    "paid_total": [0, 10, 50, 120],
    "average_amount": [10, 20, 35.5],
    "max_seats": [1, 5, 20],
    "last_status": ["paid", "refunded", "pend"],
    "first_url": ["home", "blog", "o"],
    "top_url": ["home", "pricing", "docs"],
    "plan": ["free", "pro", "team"],
    "seats": [1, 5, 20],
    "amount": [5, 10, 50, 120],
    "status": ["paid", "refunded", "pending", "ref"],
    "priority": [1, 2, 3],
    "url": ["home", "pricing", "blog", "o"],
    "device": ["ios", "web"],
}
TIMESTAMPS: list[Any] = [
    NOW - timedelta(days=30),
    "2030-06-01",
    date(2030, 1, 1),
    "2030-06-15T11:00:00+02:00",
    NOW_UTC - timedelta(days=90),
]
DATES: list[Any] = [date(1990, 1, 1), TODAY, TODAY - timedelta(days=30), "2030-05-01", date(1985, 6, 15)]
DAYS = [1, 7, 30, 90, 400]


def members(wh: AudienceWarehouse, tree: dict[str, Any] | None, audiences: dict[str, Any] | None = None) -> set[int]:
    ws = wh.workspace({**NESTED, **(audiences or {}), "t": {"parent": "people", "filter": tree}})
    query = AudienceQuery(ws.config, "people", dialect=wh.dialect, now=NOW)
    sql = query.members(query.audience("t"))
    with ws.source("wh").stream(sql) as reader:
        return {int(v) for v in reader.read_all().column("id").to_pylist()}


def expected(wh: AudienceWarehouse, tree: dict[str, Any] | None) -> set[int]:
    if tree is None:
        return {p["id"] for p in wh.data.rows("customers")}
    return Oracle(wh.data, NESTED).members(tree)


def check(wh: AudienceWarehouse, tree: dict[str, Any]) -> set[int]:
    want = expected(wh, tree)
    assert members(wh, tree) == want, tree
    return want


# --- every operator of every type, and every condition kind ----------------------------------------------


def _prop(column: str, operator: str, value: Any = None) -> dict[str, Any]:
    node = {"type": "property", "column": column, "operator": operator}
    return node if value is None else {**node, "value": value}


def _every_operator() -> list[dict[str, Any]]:
    trees = []
    samples = {"text": "country", "number": "ltv", "boolean": "vip", "date": "birthday", "timestamp": "signed_up_at"}
    values: dict[str, dict[str, Any]] = {
        "text": {"equals": "FR", "in": ["FR", "fr"], "contains": "R", "starts_with": "F", "ends_with": "E"},
        "number": {"equals": 100, "in": [0, 10], "between": [5.5, 100], "greater_than": 10},
        "boolean": {"equals": True},
        "date": {"before": "1990-01-01", "after": date(1985, 6, 15), "between": [date(1980, 1, 1), TODAY]},
        "timestamp": {"before": NOW - timedelta(days=30), "after": "2030-06-01", "between": ["2030-01-01", NOW]},
    }
    for kind, column in samples.items():
        for operator in OPERATORS_BY_TYPE[kind]:
            base = operator.removeprefix("not_").replace("does_not_", "").replace("_or_equal", "")
            if base == "contain":
                base = "contains"
            if operator in ("exists", "does_not_exist"):
                value = None
            elif operator in ("within_last_days", "more_than_days_ago"):
                value = 30
            else:
                value = values[kind].get(base, values[kind].get(operator, 10))
            trees.append(_prop(column, operator, value))
    return trees


KIND_TREES: list[dict[str, Any]] = [
    *_every_operator(),
    _prop("email", "ends_with", ".io"),
    _prop("email", "starts_with", "p1"),
    # traits of every aggregate, used like columns
    _prop("order_count", "equals", 0),
    _prop("order_count", "greater_than_or_equal", 3),
    _prop("paid_total", "greater_than", 50),
    _prop("paid_total", "less_than", 10),
    _prop("average_amount", "between", [10, 40]),
    _prop("first_order_at", "within_last_days", 60),
    _prop("last_status", "equals", "paid"),
    _prop("last_status", "does_not_exist"),
    _prop("first_url", "in", ["home", "blog"]),
    _prop("top_url", "equals", "pricing"),
    _prop("max_seats", "less_than_or_equal", 5),
    _prop("last_login", "within_last_days", 7),
    _prop("last_login", "more_than_days_ago", 30),
    # related rows, with counts in every direction, many-to-one and a two-column join
    {"type": "related", "relation": "orders"},
    {"type": "related", "relation": "orders", "count": {"operator": "exactly", "value": 0}},
    {"type": "related", "relation": "orders", "count": {"operator": "at_most", "value": 2}},
    {"type": "related", "relation": "orders", "count": {"operator": "exactly", "value": 3}},
    {
        "type": "related",
        "relation": "orders",
        "count": {"operator": "at_least", "value": 2},
        "where": {"type": "and", "filters": [_prop("status", "equals", "paid"), _prop("amount", "greater_than", 10)]},
    },
    {"type": "related", "relation": "account", "where": _prop("plan", "equals", "pro")},
    {"type": "not", "filter": {"type": "related", "relation": "account", "where": _prop("plan", "equals", "pro")}},
    {"type": "related", "relation": "tickets", "where": _prop("priority", "greater_than", 1)},
    # events in windows
    {"type": "performed", "event": "page_views", "within_last_days": 30},
    {"type": "performed", "event": "page_views", "within_last_days": 30, "count": {"operator": "at_least", "value": 3}},
    {"type": "performed", "event": "page_views", "within_last_days": 7, "count": {"operator": "at_most", "value": 1}},
    {"type": "performed", "event": "page_views", "after": "2030-06-01", "before": NOW,
     "where": _prop("url", "equals", "home")},
    {"type": "performed", "event": "logins", "within_last_days": 7, "where": _prop("device", "does_not_exist")},
    {"type": "performed", "event": "logins", "before": "2030-05-01", "count": {"operator": "exactly", "value": 0}},
    # nested audiences
    {"type": "in_audience", "audience": "buyers"},
    {"type": "not", "filter": {"type": "in_audience", "audience": "buyers"}},
    {"type": "and", "filters": [{"type": "in_audience", "audience": "everyone"}, _prop("vip", "equals", False)]},
    {"type": "not", "filter": {"type": "in_audience", "audience": "everyone"}},
]  # fmt: skip


def test_every_condition_kind_matches_the_rules(audience_wh: AudienceWarehouse) -> None:
    sizes = [len(check(audience_wh, tree)) for tree in KIND_TREES]
    people = len(audience_wh.data.rows("customers"))
    # The data makes most conditions discriminate: neither nobody nor everybody.
    assert sum(0 < n < people for n in sizes) >= len(sizes) * 0.8, sizes


def test_an_audience_without_filter_is_the_whole_parent(audience_wh: AudienceWarehouse) -> None:
    assert members(audience_wh, None) == expected(audience_wh, None)


def test_splits_are_stable_hash_groups_that_partition_the_audience(audience_wh: AudienceWarehouse) -> None:
    audiences = {"t": {"parent": "people", "splits": {"salt": "s1", "groups": {"a": 33.33, "b": 33.33, "c": 33.34}}}}
    ws = audience_wh.workspace(audiences)
    seen: dict[str, set[int]] = {}
    for group in ("a", "b", "c"):
        query = AudienceQuery(ws.config, "people", dialect=audience_wh.dialect, now=NOW)
        with ws.source("wh").stream(query.members(query.audience(AudienceRef(name="t", split=group)))) as reader:
            seen[group] = {int(v) for v in reader.read_all().column("id").to_pylist()}
    ranges = {"a": (0, 3333), "b": (3333, 6666), "c": (6666, 10_000)}
    for group, (low, high) in ranges.items():
        assert seen[group] == {
            p["id"] for p in audience_wh.data.rows("customers") if low <= bucket("s1", p["id"]) < high
        }
    assert set().union(*seen.values()) == expected(audience_wh, None)
    assert all(seen.values())


# --- random trees ------------------------------------------------------------------------------------------


def _value(kind: str, column: str) -> st.SearchStrategy[Any]:
    if kind == "boolean":
        return st.sampled_from([True, False])
    if kind == "date":
        return st.sampled_from(DATES)
    if kind == "timestamp":
        return st.sampled_from(TIMESTAMPS)
    return st.sampled_from(DOMAINS[column])


def _sorted_pair(kind: str, pair: list[Any]) -> list[Any]:
    if kind in ("date", "timestamp"):
        return sorted(pair, key=lambda v: _moment(v, kind))
    return sorted(pair)


@st.composite
def property_leaf(draw: st.DrawFn, columns: dict[str, str]) -> dict[str, Any]:
    column = draw(st.sampled_from(sorted(columns)))
    kind = columns[column]
    operator = draw(st.sampled_from(OPERATORS_BY_TYPE[kind]))
    if operator in ("exists", "does_not_exist"):
        return _prop(column, operator)
    if operator in ("within_last_days", "more_than_days_ago"):
        return _prop(column, operator, draw(st.sampled_from(DAYS)))
    if operator in ("in", "not_in"):
        return _prop(column, operator, draw(st.lists(_value(kind, column), min_size=1, max_size=3)))
    if operator == "between":
        pair = [draw(_value(kind, column)), draw(_value(kind, column))]
        return _prop(column, operator, _sorted_pair(kind, pair))
    return _prop(column, operator, draw(_value(kind, column)))


def _groups(leaf: st.SearchStrategy[dict[str, Any]], max_leaves: int) -> st.SearchStrategy[dict[str, Any]]:
    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.builds(lambda fs: {"type": "and", "filters": fs}, st.lists(inner, min_size=1, max_size=3)),
            st.builds(lambda fs: {"type": "or", "filters": fs}, st.lists(inner, min_size=1, max_size=3)),
            st.builds(lambda f: {"type": "not", "filter": f}, inner),
        ),
        max_leaves=max_leaves,
    )


counts = st.builds(
    lambda op, v: {"operator": op, "value": v},
    st.sampled_from(["at_least", "at_most", "exactly"]),
    st.sampled_from([0, 1, 2, 3]),
)


@st.composite
def relation_leaf(draw: st.DrawFn) -> dict[str, Any]:
    relation = draw(st.sampled_from(["orders", "account", "tickets", "page_views", "logins"]))
    columns = _columns(relation)
    is_event = relation in ("page_views", "logins")
    node: dict[str, Any] = (
        {"type": "performed", "event": relation} if is_event else {"type": "related", "relation": relation}
    )
    if draw(st.booleans()):
        node["count"] = draw(counts)
    if draw(st.booleans()):
        node["where"] = draw(_groups(property_leaf(columns), 3))
    if is_event:
        window = draw(st.sampled_from(["none", "days", "after", "before", "both"]))
        kind = columns[{"page_views": "viewed_at", "logins": "day"}[relation]]
        pool = DATES if kind == "date" else TIMESTAMPS
        if window == "days":
            node["within_last_days"] = draw(st.sampled_from(DAYS))
        elif window != "none":
            bounds = _sorted_pair(kind, [draw(st.sampled_from(pool)), draw(st.sampled_from(pool))])
            if window in ("after", "both"):
                node["after"] = bounds[0]
            if window in ("before", "both"):
                node["before"] = bounds[1]
    return node


leaves = st.one_of(
    property_leaf(PARENT_COLUMNS),
    relation_leaf(),
    st.builds(lambda a: {"type": "in_audience", "audience": a}, st.sampled_from(sorted(NESTED))),
)
trees = _groups(leaves, 6)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=trees)
def test_random_trees_match_the_rules(audience_wh: AudienceWarehouse, tree: dict[str, Any]) -> None:
    check(audience_wh, tree)


def test_the_compiled_sql_counts_windows_back_from_the_given_now(audience_wh: AudienceWarehouse) -> None:
    window = {"type": "performed", "event": "page_views", "within_last_days": 30}
    ws = audience_wh.workspace({"t": {"parent": "people", "filter": window}})
    query = AudienceQuery(ws.config, "people", dialect=audience_wh.dialect, now=NOW_UTC)
    sql = query.members(query.audience("t"))
    assert "2030-05-16 12:00:00" in sql and "2030-06-15 12:00:00" in sql
