"""The audience rules of docs/audiences.md read in plain Python, one person at a time.

Deliberately naive (a scan of every related row per person and condition), so that it shares nothing with
the compiler but the documented rules.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

from tests.sync.audiences.warehouse import NOW, SCHEMA, TODAY, Data

PARENT = SCHEMA["people"]


def _moment(value: Any, kind: str) -> Any:
    """A filter value as the column's type compares it (YAML dates, ISO strings)."""
    if isinstance(value, str):
        value = date.fromisoformat(value) if len(value) == 10 else datetime.fromisoformat(value)
    if kind == "date":
        return value
    if not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day)
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def _relation(name: str) -> tuple[str, dict[str, Any]]:
    if name in PARENT["related"]:
        return "related", PARENT["related"][name]
    return "event", PARENT["events"][name]


def _columns(name: str) -> dict[str, str]:
    kind, rel = _relation(name)
    columns = dict(rel["columns"])
    if kind == "event":
        columns.setdefault(rel["timestamp"], "timestamp")
    return columns


class Oracle:
    def __init__(self, data: Data, audiences: dict[str, Any]) -> None:
        self.data = data
        self.audiences = audiences

    # -- rows ---------------------------------------------------------------------------------------------

    def rows_of(self, person: dict[str, Any], relation: str) -> list[dict[str, Any]]:
        _, rel = _relation(relation)
        table = self.data.rows(rel["model"])
        pairs = list(rel["join"].items())
        return [
            r for r in table if all(person[p] is not None and r[c] is not None and person[p] == r[c] for p, c in pairs)
        ]

    def value(self, person: dict[str, Any], column: str) -> Any:
        if column in PARENT["columns"]:
            return person[column]
        trait = PARENT["traits"][column]
        rows = self.rows_of(person, trait["relation"])
        if "where" in trait:
            columns = _columns(trait["relation"])
            rows = [r for r in rows if self.holds(trait["where"], r, columns)]
        aggregate = trait["aggregate"]
        if aggregate == "count":
            return len(rows)
        values = [r[trait["column"]] for r in rows if r[trait["column"]] is not None]
        if aggregate == "sum":
            return sum(values)
        if aggregate in ("average", "min", "max"):
            if not values:
                return None
            return {"average": lambda v: sum(v) / len(v), "min": min, "max": max}[aggregate](values)
        if aggregate == "most_frequent":
            counts = Counter(values)
            return min(counts, key=lambda v: (-counts[v], v)) if counts else None
        order = trait.get("order_by") or _relation(trait["relation"])[1].get("timestamp")
        ordered = sorted((r for r in rows if r[order] is not None), key=lambda r: (r[order], self._pk(trait, r)))
        if not ordered:
            return None
        return (ordered[0] if aggregate == "first" else ordered[-1])[trait["column"]]

    @staticmethod
    def _pk(trait: dict[str, Any], row: dict[str, Any]) -> Any:
        model = _relation(trait["relation"])[1]["model"]
        return row[{"orders": "order_id", "page_views": "view_id", "accounts": "id", "logins": "login_id"}[model]]

    # -- conditions ---------------------------------------------------------------------------------------

    def holds(self, node: dict[str, Any], row: dict[str, Any], columns: dict[str, str]) -> bool:
        kind = node["type"]
        if kind == "and":
            return all(self.holds(n, row, columns) for n in node["filters"])
        if kind == "or":
            return any(self.holds(n, row, columns) for n in node["filters"])
        if kind == "not":
            return not self.holds(node["filter"], row, columns)
        if kind == "property":
            value = self.value(row, node["column"]) if columns is PARENT_COLUMNS else row[node["column"]]
            return compare(value, columns[node["column"]], node["operator"], node.get("value"))
        if kind == "in_audience":
            return self.member(node["audience"], row)
        relation = node["relation"] if kind == "related" else node["event"]
        rel_columns = _columns(relation)
        rows = self.rows_of(row, relation)
        if node.get("where") is not None:
            rows = [r for r in rows if self.holds(node["where"], r, rel_columns)]
        if kind == "performed":
            _, rel = _relation(relation)
            ts, ts_kind = rel["timestamp"], rel_columns[rel["timestamp"]]
            if "within_last_days" in node:
                rows = [r for r in rows if compare(r[ts], ts_kind, "within_last_days", node["within_last_days"])]
            for bound in ("after", "before"):
                if node.get(bound) is not None:
                    rows = [r for r in rows if compare(r[ts], ts_kind, bound, node[bound])]
        rule = node.get("count", {})
        n, op, wanted = len(rows), rule.get("operator", "at_least"), rule.get("value", 1)
        return {"at_least": n >= wanted, "at_most": n <= wanted, "exactly": n == wanted}[op]

    def member(self, audience: str, person: dict[str, Any]) -> bool:
        tree = self.audiences[audience].get("filter")
        return tree is None or self.holds(tree, person, PARENT_COLUMNS)

    def members(self, tree: dict[str, Any]) -> set[int]:
        return {p["id"] for p in self.data.rows("customers") if self.holds(tree, p, PARENT_COLUMNS)}


PARENT_COLUMNS: dict[str, str] = {
    **PARENT["columns"],
    "order_count": "number",
    "paid_total": "number",
    "average_amount": "number",
    "first_order_at": "timestamp",
    "last_status": "text",
    "first_url": "text",
    "top_url": "text",
    "max_seats": "number",
    "last_login": "date",
}


def compare(value: Any, kind: str, operator: str, target: Any) -> bool:
    negations = {"not_equals": "equals", "not_in": "in", "does_not_contain": "contains", "does_not_exist": "exists"}
    if operator in negations:
        return not compare(value, kind, negations[operator], target)
    if operator == "exists":
        return value is not None
    if value is None:
        return False
    if kind in ("date", "timestamp"):
        if operator in ("within_last_days", "more_than_days_ago"):
            now: Any = NOW if kind == "timestamp" else TODAY
            edge = now - timedelta(days=target)
            return edge <= value <= now if operator == "within_last_days" else value < edge
        target = [_moment(t, kind) for t in target] if isinstance(target, list) else _moment(target, kind)
    if operator == "equals":
        return bool(value == target)
    if operator == "in":
        return value in target
    if operator == "contains":
        return target in value
    if operator == "starts_with":
        return bool(value.startswith(target))
    if operator == "ends_with":
        return bool(value.endswith(target))
    if operator == "between":
        return bool(target[0] <= value <= target[1])
    if operator in ("greater_than", "after"):
        return bool(value > target)
    if operator in ("less_than", "before"):
        return bool(value < target)
    if operator == "greater_than_or_equal":
        return bool(value >= target)
    assert operator == "less_than_or_equal", operator
    return bool(value <= target)


def bucket(salt: str, key: Any) -> int:
    """A person's split bucket: the first 32 bits of md5(salt:key), modulo 10,000."""
    return int(hashlib.md5(f"{salt}:{key}".encode()).hexdigest()[:8], 16) % 10_000
