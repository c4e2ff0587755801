"""The compiler as other modules call it (campaigns, Canvas): ``compile_filter`` + ``audience_query`` with an
injected clock, and a property test checking random filter trees against a plain-Python reading of the rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cohortflow.platform.errors import InvalidRequest
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.segments.compiler import compile_filter
from cohortflow.platform.segments.filters import parse_filter
from cohortflow.platform.segments.service import audience_query
from tests.platform.segments.seed import add_events, add_users
from tests.support import Tenant, add_cohort_rows, make_tenant

FIXED_NOW = datetime(2030, 6, 15, 12, 0, tzinfo=UTC)


def matching(runtime: PlatformRuntime, workspace_id: str, tree: dict[str, Any], now: datetime) -> set[int]:
    with runtime.transaction() as conn:
        clause = compile_filter(conn, workspace_id, parse_filter(tree), now=now)
        return {int(r[0]) for r in conn.execute(audience_query(workspace_id, [clause]))}


def test_time_comes_from_the_injected_clock(runtime: PlatformRuntime, tenant: Tenant) -> None:
    ids = add_users(runtime, tenant.workspace_id, {"a": {"custom_attributes": {"seen": "2030-06-10T00:00:00Z"}}})
    add_events(runtime, tenant.workspace_id, ids["a"], "opened", [FIXED_NOW - timedelta(days=10)])
    event = {"type": "custom_event", "event": "opened", "within_days": 14}
    attribute = {"type": "custom_attribute", "attribute": "seen", "operator": "within_last_days", "value": 7}
    assert matching(runtime, tenant.workspace_id, event, FIXED_NOW) == {ids["a"]}
    assert matching(runtime, tenant.workspace_id, event, FIXED_NOW + timedelta(days=5)) == set()
    # an event in the future of "now" has not happened yet
    assert matching(runtime, tenant.workspace_id, event, FIXED_NOW - timedelta(days=11)) == set()
    assert matching(runtime, tenant.workspace_id, attribute, FIXED_NOW) == {ids["a"]}
    assert matching(runtime, tenant.workspace_id, attribute, FIXED_NOW + timedelta(days=3)) == set()


def test_audience_query_combines_clauses(runtime: PlatformRuntime, tenant: Tenant) -> None:
    ids = add_users(
        runtime,
        tenant.workspace_id,
        {"fr": {"country": "FR", "random_bucket": 100}, "fr2": {"country": "FR", "random_bucket": 9000}},
    )
    country = parse_filter({"type": "standard_attribute", "attribute": "country", "operator": "equals", "value": "FR"})
    holdout = parse_filter({"type": "random_bucket", "operator": "less_than", "value": 5000})
    with runtime.transaction() as conn:
        clauses = [compile_filter(conn, tenant.workspace_id, n, now=FIXED_NOW) for n in (country, holdout)]
        found = {int(r[0]) for r in conn.execute(audience_query(tenant.workspace_id, clauses))}
    assert found == {ids["fr"]}


def test_unknown_cohort_is_invalid(runtime: PlatformRuntime, tenant: Tenant) -> None:
    node = parse_filter({"type": "partner_cohort", "partner": tenant.partner, "cohort_id": "gone"})
    with runtime.transaction() as conn, pytest.raises(InvalidRequest, match="has no cohort 'gone'"):
        compile_filter(conn, tenant.workspace_id, node, now=FIXED_NOW)


# --- property: SQL agrees with the rules read in Python ---------------------------------------------------

PEOPLE: dict[str, dict[str, Any]] = {
    "p1": {"external_id": "p1", "country": "FR", "email_subscribe": "subscribed", "random_bucket": 10,
           "custom_attributes": {"age": 30, "plan": "pro"}},
    "p2": {"external_id": "p2", "country": "DE", "email_subscribe": "unsubscribed", "random_bucket": 6000,
           "custom_attributes": {"age": 51.5, "plan": "free"}},
    "p3": {"country": "FR", "random_bucket": 4999, "custom_attributes": {"age": "40", "plan": None}},
    "p4": {"external_id": "p4", "email_subscribe": "opted_in", "random_bucket": 5000, "custom_attributes": {}},
    "p5": {"external_id": "p5", "country": "US", "random_bucket": 9999, "custom_attributes": {"age": 18, "plan": 3}},
}  # fmt: skip
IN_COHORT = {"p1", "p3", "p4"}


def oracle(tree: dict[str, Any], person: str) -> bool:
    """What the documented rules say, one user at a time."""
    p = PEOPLE[person]
    attrs = p["custom_attributes"]
    kind = tree["type"]
    if kind == "and":
        return all(oracle(t, person) for t in tree["filters"])
    if kind == "or":
        return any(oracle(t, person) for t in tree["filters"])
    if kind == "not":
        return not oracle(tree["filter"], person)
    if kind == "partner_cohort":
        return (person in IN_COHORT) == (tree["operator"] == "includes")
    if kind == "identity":
        return ("external_id" in p) == (tree["state"] == "identified")
    if kind == "email_subscription":
        return p.get("email_subscribe", "subscribed") == tree["state"]
    if kind == "random_bucket":
        b, v = p["random_bucket"], tree["value"]
        return {"less_than": b < v, "greater_than": b > v, "equals": b == v, "not_equals": b != v}[tree["operator"]]
    if kind == "standard_attribute":
        c = p.get("country")
        op = tree["operator"]
        if op == "equals":
            return c == tree["value"]
        if op == "not_equals":
            return c != tree["value"]
        if op == "in":
            return c in tree["value"]
        return (c is not None) == (op == "exists")
    value = attrs.get(tree["attribute"])
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
    op = tree["operator"]
    if op == "exists":
        return value is not None
    if op == "equals":
        return value == tree["value"] and type(value) is not bool and isinstance(value, type(tree["value"]) | float)
    if op == "not_equals":
        return not oracle({**tree, "operator": "equals"}, person)
    if op == "greater_than":
        return number is not None and number > tree["value"]
    return number is not None and number < tree["value"]


leaves = st.one_of(
    st.builds(lambda op: {"type": "partner_cohort", "partner": "P", "cohort_id": "c", "operator": op},
              st.sampled_from(["includes", "does_not_include"])),
    st.builds(lambda s: {"type": "identity", "state": s}, st.sampled_from(["identified", "anonymous"])),
    st.builds(lambda s: {"type": "email_subscription", "state": s},
              st.sampled_from(["subscribed", "opted_in", "unsubscribed"])),
    st.builds(lambda op, v: {"type": "random_bucket", "operator": op, "value": v},
              st.sampled_from(["less_than", "greater_than", "equals", "not_equals"]),
              st.sampled_from([0, 10, 4999, 5000, 9999])),
    st.builds(lambda op, v: {"type": "standard_attribute", "attribute": "country", "operator": op, "value": v},
              st.sampled_from(["equals", "not_equals"]), st.sampled_from(["FR", "DE", "XX"])),
    st.builds(lambda v: {"type": "standard_attribute", "attribute": "country", "operator": "in", "value": v},
              st.lists(st.sampled_from(["FR", "DE", "US"]), min_size=1, max_size=2)),
    st.builds(lambda op: {"type": "standard_attribute", "attribute": "country", "operator": op},
              st.sampled_from(["exists", "does_not_exist"])),
    st.builds(lambda a: {"type": "custom_attribute", "attribute": a, "operator": "exists"},
              st.sampled_from(["age", "plan"])),
    st.builds(lambda op, v: {"type": "custom_attribute", "attribute": "age", "operator": op, "value": v},
              st.sampled_from(["greater_than", "less_than", "equals", "not_equals"]),
              st.sampled_from([18, 30, 40, 51.5])),
    st.builds(lambda op, v: {"type": "custom_attribute", "attribute": "plan", "operator": op, "value": v},
              st.sampled_from(["equals", "not_equals"]), st.sampled_from(["pro", "free", 3])),
)  # fmt: skip
trees = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.builds(lambda fs: {"type": "and", "filters": fs}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda fs: {"type": "or", "filters": fs}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda f: {"type": "not", "filter": f}, children),
    ),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def people(runtime: PlatformRuntime) -> tuple[Tenant, dict[int, str]]:
    tenant = make_tenant(runtime)
    ids = add_users(runtime, tenant.workspace_id, PEOPLE)
    add_cohort_rows(runtime, tenant, "c", "C", [ids[n] for n in IN_COHORT])
    return tenant, {v: k for k, v in ids.items()}


def _with_partner(tree: dict[str, Any], partner: str) -> dict[str, Any]:
    if tree["type"] in ("and", "or"):
        return {**tree, "filters": [_with_partner(t, partner) for t in tree["filters"]]}
    if tree["type"] == "not":
        return {**tree, "filter": _with_partner(tree["filter"], partner)}
    return {**tree, "partner": partner} if tree["type"] == "partner_cohort" else tree


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=trees)
def test_sql_agrees_with_the_rules(
    runtime: PlatformRuntime, people: tuple[Tenant, dict[int, str]], tree: dict[str, Any]
) -> None:
    tenant, names = people
    got = {names[i] for i in matching(runtime, tenant.workspace_id, _with_partner(tree, tenant.partner), FIXED_NOW)}
    assert got == {p for p in PEOPLE if oracle(tree, p)}
