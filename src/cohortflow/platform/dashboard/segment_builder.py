"""The segment builder's form: filter groups of filter rows, to and from the platform's filter trees.

The builder shows a segment as Braze does: **filter groups** combined with AND or OR, each a list of **filters**
combined with its own AND or OR. This module only translates between that form (field names such as
``g0.f1.operator``, typed text such as ``42`` or ``"42"``) and the JSON filter tree of
:mod:`cohortflow.platform.segments.filters`; what a tree means, whether it is valid and who is in it stay in
the segments domain (``parse_filter``, ``validate_filter``, ``filter_size``).

A tree that does not fit two levels (a NOT, or groups inside groups, as the API allows) is edited as JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from cohortflow.platform.errors import InvalidRequest
from cohortflow.platform.segments.filters import (
    CUSTOM_OPERATORS,
    MAX_BUCKET,
    STANDARD_ATTRIBUTES,
    STANDARD_OPERATORS,
    AndGroup,
    FilterNode,
    NotGroup,
    OrGroup,
    PartnerCohortFilter,
    parse_filter,
)

COHORT_KIND_PREFIX = "cohort:"

# Words as Braze's segmenter uses them.
KIND_LABELS: dict[str, str] = {
    "custom_attribute": "Custom Attribute",
    "standard_attribute": "Profile Attribute",
    "identity": "Identified or Anonymous",
    "has_email": "Email Available",
    "email_subscription": "Email Subscription Status",
    "custom_event": "Performed Custom Event",
    "purchase": "Made Purchase",
    "random_bucket": "Random Bucket Number",
}
OPERATOR_LABELS: dict[str, str] = {
    "includes": "includes",
    "does_not_include": "does not include",
    "equals": "equals",
    "not_equals": "does not equal",
    "greater_than": "is more than",
    "less_than": "is less than",
    "exists": "is not blank",
    "does_not_exist": "is blank",
    "contains": "contains",
    "in": "is any of",
    "before": "is before",
    "after": "is after",
    "within_last_days": "is within the last (days)",
}
STATE_LABELS: dict[str, dict[str, str]] = {
    "identity": {"identified": "is identified (has an external ID)", "anonymous": "is anonymous"},
    "has_email": {"true": "has an email address", "false": "has no email address"},
    "email_subscription": {"subscribed": "is subscribed", "opted_in": "is opted in", "unsubscribed": "is unsubscribed"},
}
STANDARD_LABELS: dict[str, str] = {
    "external_id": "External ID",
    "first_name": "First name",
    "last_name": "Last name",
    "email": "Email address",
    "phone": "Phone number",
    "country": "Country",
    "home_city": "Home city",
    "language": "Language",
    "gender": "Gender",
    "time_zone": "Time zone",
    "dob": "Date of birth",
    "created_at": "First used (profile created)",
}
BUCKET_OPERATORS = ("less_than", "greater_than", "equals", "not_equals")
NO_VALUE = ("exists", "does_not_exist")
_NUMBER = re.compile(r"^-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")


@dataclass(frozen=True)
class PartnerCohorts:
    """One "<Partner> Cohorts" filter: the partner and its cohorts in this workspace, by name."""

    partner: str
    label: str
    cohorts: list[tuple[str, str]]  # (cohort_id, name)


@dataclass(frozen=True)
class Catalogue:
    """What the builder offers in a workspace (from the segments service's filter catalogue)."""

    partners: list[PartnerCohorts]

    @classmethod
    def from_service(cls, catalogue: Mapping[str, Any]) -> Catalogue:
        return cls(
            partners=[
                PartnerCohorts(f["partner"], f["name"], [(c["cohort_id"], c["name"]) for c in f["cohorts"]])
                for f in catalogue["filters"]
                if f["type"] == "partner_cohort"
            ]
        )

    @property
    def kinds(self) -> list[tuple[str, str]]:
        """(value, label) of the filter select, cohort filters first as in Braze."""
        return [(COHORT_KIND_PREFIX + p.partner, p.label) for p in self.partners] + list(KIND_LABELS.items())

    def partner(self, name: str) -> PartnerCohorts | None:
        return next((p for p in self.partners if p.partner == name), None)

    def cohort_name(self, partner: str, cohort_id: str) -> str:
        found = self.partner(partner)
        return next((n for c, n in found.cohorts if c == cohort_id), cohort_id) if found else cohort_id


@dataclass
class Row:
    """One filter as its form fields hold it (text, as typed)."""

    kind: str
    operator: str = ""
    cohort: str = ""
    attribute: str = ""
    value: str = ""
    state: str = ""
    event: str = ""
    product_id: str = ""
    min_count: str = ""
    within_days: str = ""
    error: str | None = None

    @property
    def partner(self) -> str | None:
        return self.kind.removeprefix(COHORT_KIND_PREFIX) if self.kind.startswith(COHORT_KIND_PREFIX) else None

    @property
    def operators(self) -> list[str]:
        """The operators this row's filter takes (empty for filters with a state instead)."""
        if self.partner is not None:
            return ["includes", "does_not_include"]
        if self.kind == "custom_attribute":
            return list(CUSTOM_OPERATORS)
        if self.kind == "standard_attribute":
            return list(STANDARD_OPERATORS[STANDARD_ATTRIBUTES.get(self.attribute, "text")])
        if self.kind == "random_bucket":
            return list(BUCKET_OPERATORS)
        return []

    @property
    def operator_options(self) -> list[tuple[str, str]]:
        return [(op, OPERATOR_LABELS[op]) for op in self.operators]

    @property
    def takes_value(self) -> bool:
        return self.kind in ("custom_attribute", "standard_attribute", "random_bucket") and (
            self.operator not in NO_VALUE
        )


@dataclass
class Group:
    op: str = "and"
    rows: list[Row] = field(default_factory=list)


@dataclass
class Builder:
    """The whole form: groups combined with ``op``; or, for trees that do not fit, their JSON text."""

    op: str = "and"
    groups: list[Group] = field(default_factory=list)
    json_text: str | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def advanced(self) -> bool:
        return self.json_text is not None

    @property
    def has_row_errors(self) -> bool:
        return any(row.error for group in self.groups for row in group.rows)


# --- defaults and actions ------------------------------------------------------------------------------


def new_row(catalogue: Catalogue, kind: str | None = None) -> Row:
    """A filter row of ``kind`` (by default the first "<Partner> Cohorts"), with sensible first choices."""
    kind = kind or (catalogue.kinds[0][0] if catalogue.kinds else "custom_attribute")
    return normalize_row(Row(kind=kind), catalogue)


def default_builder(catalogue: Catalogue) -> Builder:
    return Builder(groups=[Group(rows=[new_row(catalogue)])])


def normalize_row(row: Row, catalogue: Catalogue) -> Row:
    """Keep a row's fields consistent after its filter or attribute changed (an operator that still applies,
    a cohort of the chosen partner)."""
    if row.kind not in dict(catalogue.kinds):
        row = Row(kind="custom_attribute") if row.partner is None else row
    partner = row.partner
    if partner is not None:
        found = catalogue.partner(partner)
        ids = [c for c, _n in found.cohorts] if found else []
        if row.cohort not in ids:
            row = replace(row, cohort=ids[0] if ids else "")
    if row.kind == "standard_attribute" and row.attribute not in STANDARD_ATTRIBUTES:
        row = replace(row, attribute="country")
    operators = row.operators
    if operators and row.operator not in operators:
        row = replace(row, operator=operators[0])
    states = STATE_LABELS.get(row.kind)
    if states and row.state not in states:
        row = replace(row, state=next(iter(states)))
    if row.kind in ("custom_event", "purchase") and not row.min_count:
        row = replace(row, min_count="1")
    return row


def apply_action(builder: Builder, action: str, catalogue: Catalogue) -> Builder:
    """The form's buttons: ``add_filter:G``, ``add_group``, ``remove:G:F``; anything else only re-reads."""
    if builder.advanced:
        return builder
    parts = action.split(":")
    groups = [Group(g.op, list(g.rows)) for g in builder.groups]
    try:
        if parts[0] == "add_filter" and len(parts) == 2:
            groups[int(parts[1])].rows.append(new_row(catalogue))
        elif parts[0] == "add_group":
            groups.append(Group(rows=[new_row(catalogue)]))
        elif parts[0] == "remove" and len(parts) == 3:
            g, f = int(parts[1]), int(parts[2])
            del groups[g].rows[f]
            if not groups[g].rows:
                del groups[g]
    except (ValueError, IndexError):
        pass  # a stale button of a form changed meanwhile: nothing to do
    return replace(builder, groups=groups)


# --- form fields -----------------------------------------------------------------------------------------

_ROW_FIELDS = ("kind", "operator", "cohort", "attribute", "value", "state", "event", "product_id", "min_count",
               "within_days")  # fmt: skip
_FIELD_NAME = re.compile(r"^g(\d+)\.f(\d+)\.(\w+)$")


def from_form(form: Mapping[str, str], catalogue: Catalogue) -> Builder:
    """The builder as the browser sent it (fields ``op``, ``gN.op``, ``gN.fM.<field>``, or ``filter_json``)."""
    if "filter_json" in form:
        return Builder(json_text=str(form["filter_json"]))
    rows: dict[tuple[int, int], dict[str, str]] = {}
    for name, value in form.items():
        found = _FIELD_NAME.match(name)
        if found and found.group(3) in _ROW_FIELDS:
            rows.setdefault((int(found.group(1)), int(found.group(2))), {})[found.group(3)] = str(value)
    groups: dict[int, Group] = {}
    for (g, _f), fields in sorted(rows.items()):
        group = groups.setdefault(g, Group(op=_op(form.get(f"g{g}.op"))))
        if "kind" in fields:
            group.rows.append(normalize_row(Row(**{k: v.strip() for k, v in fields.items()}), catalogue))
    return Builder(op=_op(form.get("op")), groups=[groups[g] for g in sorted(groups)])


def row_from_fields(form: Mapping[str, str], prefix: str, catalogue: Catalogue) -> Row | None:
    """One filter row whose fields are named ``prefix + field`` (as Canvas split paths name theirs)."""
    fields = {name: str(form[prefix + name]).strip() for name in _ROW_FIELDS if prefix + name in form}
    if "kind" not in fields:
        return None
    return normalize_row(Row(**fields), catalogue)


def leaf_row(node: FilterNode, catalogue: Catalogue) -> Row | None:
    """The row for a tree that is one filter, or None when it is more (a group, a NOT)."""
    return leaf_to_row(node, catalogue) if _is_leaf(node) else None


def _op(value: object) -> str:
    return "or" if value == "or" else "and"


# --- form -> tree ----------------------------------------------------------------------------------------


def to_tree(builder: Builder) -> dict[str, Any] | None:
    """The filter tree the form describes, or None with the problems written on the rows (or ``errors``).

    Each filter is checked on its own with the domain's parser first, so a message names the row it is about.
    """
    builder.errors = []
    if builder.advanced:
        try:
            data = json.loads(builder.json_text or "")
        except ValueError as exc:
            builder.errors.append(f"The filter is not valid JSON: {exc}")
            return None
        try:
            parse_filter(data)
        except InvalidRequest as exc:
            builder.errors.append(exc.message)
            return None
        return data if isinstance(data, dict) else None
    if not builder.groups or not any(g.rows for g in builder.groups):
        builder.errors.append("Add at least one filter.")
        return None
    nodes: list[dict[str, Any]] = []
    for group in builder.groups:
        leaves = []
        for row in group.rows:
            row.error = None
            try:
                leaf = row_to_leaf(row)
                parse_filter(leaf)
            except (ValueError, InvalidRequest) as exc:
                row.error = _row_message(exc)
                continue
            leaves.append(leaf)
        if leaves:
            nodes.append(leaves[0] if len(leaves) == 1 else {"type": group.op, "filters": leaves})
    if builder.has_row_errors:
        return None
    return nodes[0] if len(nodes) == 1 else {"type": builder.op, "filters": nodes}


def _row_message(exc: Exception) -> str:
    text = exc.message if isinstance(exc, InvalidRequest) else str(exc)
    text = text.removeprefix("invalid segment filter: ")
    return text[:1].upper() + text[1:]


def row_to_leaf(row: Row) -> dict[str, Any]:
    """One row as a leaf of the filter tree; ``ValueError`` says what is missing or malformed."""
    partner = row.partner
    if partner is not None:
        if not row.cohort:
            raise ValueError("Choose a cohort (this partner has not imported one into the workspace yet).")
        return {"type": "partner_cohort", "partner": partner, "cohort_id": row.cohort, "operator": row.operator}
    kind = row.kind
    if kind == "custom_attribute":
        if not row.attribute:
            raise ValueError("Enter the custom attribute's name.")
        leaf: dict[str, Any] = {"type": kind, "attribute": row.attribute, "operator": row.operator}
        if row.operator not in NO_VALUE:
            leaf["value"] = parse_custom_value(row.operator, row.value)
        return leaf
    if kind == "standard_attribute":
        leaf = {"type": kind, "attribute": row.attribute, "operator": row.operator}
        if row.operator not in NO_VALUE:
            leaf["value"] = _standard_value(row.operator, row.value)
        return leaf
    if kind in ("identity", "email_subscription"):
        return {"type": kind, "state": row.state}
    if kind == "has_email":
        return {"type": kind, "value": row.state != "false"}
    if kind in ("custom_event", "purchase"):
        leaf = {"type": kind, "min_count": _whole(row.min_count or "1", "The count", minimum=1)}
        if kind == "custom_event":
            if not row.event:
                raise ValueError("Enter the custom event's name.")
            leaf["event"] = row.event
        elif row.product_id:
            leaf["product_id"] = row.product_id
        if row.within_days:
            leaf["within_days"] = _whole(row.within_days, "The number of days", minimum=1)
        return leaf
    if kind == "random_bucket":
        value = _whole(row.value, "The bucket number", minimum=0)
        if value > MAX_BUCKET:
            raise ValueError(f"The bucket number must be between 0 and {MAX_BUCKET}.")
        return {"type": kind, "operator": row.operator, "value": value}
    raise ValueError(f"Unknown filter {kind!r}.")


def _whole(text: str, what: str, *, minimum: int) -> int:
    if not re.fullmatch(r"-?\d+", text.strip()):
        raise ValueError(f"{what} must be a whole number, got {text.strip() or 'nothing'!r}.")
    number = int(text)
    if number < minimum:
        raise ValueError(f"{what} must be at least {minimum}.")
    return number


def _split_list(text: str) -> list[tuple[str, bool]]:
    """``a, "b, c", 3`` -> items with whether each was quoted (a quoted item is always text)."""
    items: list[tuple[str, bool]] = []
    for found in re.finditer(r'\s*(?:"((?:[^"\\]|\\.)*)"|([^,]*))\s*(?:,|$)', text):
        quoted, plain = found.group(1), found.group(2)
        if quoted is not None:
            items.append((quoted.replace('\\"', '"'), True))
        elif plain and plain.strip():
            items.append((plain.strip(), False))
        if found.end() >= len(text):
            break
    return items


def _scalar(text: str, quoted: bool = False) -> str | int | float | bool:
    if quoted:
        return text
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    if text in ("true", "false"):
        return text == "true"
    if _NUMBER.match(text):
        number = float(text)
        return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number
    return text


def parse_custom_value(operator: str, text: str) -> Any:
    """A custom attribute's value as typed: numbers and true/false are compared as such, "quoted" as text."""
    text = text.strip()
    if not text:
        raise ValueError("Enter a value.")
    if operator in ("greater_than", "less_than"):
        value = _scalar(text)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"“{OPERATOR_LABELS[operator]}” needs a number, got {text!r}.")
        return value
    if operator == "within_last_days":
        return _whole(text, "The number of days", minimum=1)
    if operator == "in":
        items = _split_list(text)
        if any(quoted for _t, quoted in items) or not all(_NUMBER.match(t) for t, _q in items):
            return [t for t, _q in items]
        return [_scalar(t) for t, _q in items]
    if operator in ("contains", "before", "after"):
        return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text
    return _scalar(text)


def _standard_value(operator: str, text: str) -> Any:
    text = text.strip()
    if not text:
        raise ValueError("Enter a value.")
    if operator == "within_last_days":
        return _whole(text, "The number of days", minimum=1)
    if operator == "in":
        return [t for t, _q in _split_list(text)]
    return text


# --- tree -> form ----------------------------------------------------------------------------------------


def from_tree(node: FilterNode, catalogue: Catalogue) -> Builder:
    """The builder for a saved tree; trees deeper than groups of filters open as JSON."""
    groups: list[Group] | None
    op = "and"
    if isinstance(node, AndGroup | OrGroup):
        children = node.filters
        if all(_is_leaf(c) for c in children):
            groups = [Group(node.type, [leaf_to_row(c, catalogue) for c in children])]
        elif all(_is_leaf(c) or _is_leaf_group(c) for c in children):
            op = node.type
            groups = []
            for child in children:
                if isinstance(child, AndGroup | OrGroup):
                    groups.append(Group(child.type, [leaf_to_row(c, catalogue) for c in child.filters]))
                else:
                    groups.append(Group(rows=[leaf_to_row(child, catalogue)]))
        else:
            groups = None
    elif _is_leaf(node):
        groups = [Group(rows=[leaf_to_row(node, catalogue)])]
    else:
        groups = None
    if groups is None:
        return Builder(json_text=json.dumps(node.model_dump(mode="json", exclude_none=True), indent=2))
    return Builder(op=op, groups=groups)


def _is_leaf(node: FilterNode) -> bool:
    return not isinstance(node, AndGroup | OrGroup | NotGroup)


def _is_leaf_group(node: FilterNode) -> bool:
    return isinstance(node, AndGroup | OrGroup) and all(_is_leaf(c) for c in node.filters)


def format_value(value: Any, *, quote_ambiguous: bool = True) -> str:
    """A value as the builder's text field shows it (the inverse of :func:`parse_custom_value`)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(format_value(v) if not (isinstance(v, str) and "," in v) else f'"{v}"' for v in value)
    if isinstance(value, str) and quote_ambiguous and (value in ("true", "false") or _NUMBER.match(value)):
        return f'"{value}"'
    return str(value)


def leaf_to_row(leaf: FilterNode, catalogue: Catalogue) -> Row:
    data = leaf.model_dump(mode="json")
    kind = data["type"]
    if isinstance(leaf, PartnerCohortFilter):
        return Row(kind=COHORT_KIND_PREFIX + leaf.partner, operator=leaf.operator, cohort=leaf.cohort_id)
    if kind == "custom_attribute":
        return Row(kind=kind, attribute=data["attribute"], operator=data["operator"], value=format_value(data["value"]))
    if kind == "standard_attribute":
        value = data["value"]
        text = ", ".join(value) if isinstance(value, list) else format_value(value, quote_ambiguous=False)
        return Row(kind=kind, attribute=data["attribute"], operator=data["operator"], value=text)
    if kind in ("identity", "email_subscription"):
        return Row(kind=kind, state=data["state"])
    if kind == "has_email":
        return Row(kind=kind, state="true" if data["value"] else "false")
    if kind in ("custom_event", "purchase"):
        return Row(
            kind=kind,
            event=data.get("event") or "",
            product_id=data.get("product_id") or "",
            min_count=str(data["min_count"]),
            within_days=str(data["within_days"]) if data.get("within_days") else "",
        )
    return normalize_row(Row(kind=kind, operator=data["operator"], value=str(data["value"])), catalogue)


# --- words -----------------------------------------------------------------------------------------------


def describe(node: FilterNode, catalogue: Catalogue) -> str:
    """A segment's definition in one line, as the segment list shows it."""
    if isinstance(node, AndGroup | OrGroup):
        joiner = " AND " if node.type == "and" else " OR "
        parts = [describe(c, catalogue) for c in node.filters]
        return joiner.join(
            p if not isinstance(c, AndGroup | OrGroup) else f"({p})" for c, p in zip(node.filters, parts, strict=True)
        )
    if isinstance(node, NotGroup):
        return f"NOT ({describe(node.filter, catalogue)})"
    row = leaf_to_row(node, catalogue)
    if isinstance(node, PartnerCohortFilter):
        found = catalogue.partner(node.partner)
        label = found.label if found else f"{node.partner} Cohorts"
        return f"{label} {OPERATOR_LABELS[node.operator]} “{catalogue.cohort_name(node.partner, node.cohort_id)}”"
    if row.kind in STATE_LABELS:
        return f"{KIND_LABELS[row.kind]}: {STATE_LABELS[row.kind][row.state]}"
    if row.kind in ("custom_event", "purchase"):
        what = f"“{row.event}”" if row.kind == "custom_event" else (f"“{row.product_id}”" if row.product_id else "")
        times = f"at least {row.min_count} time{'s' if row.min_count != '1' else ''}"
        when = f" in the last {row.within_days} days" if row.within_days else ""
        return " ".join(p for p in (KIND_LABELS[row.kind], what, times) if p) + when
    subject = STANDARD_LABELS.get(row.attribute, row.attribute) if row.kind == "standard_attribute" else row.attribute
    prefix = KIND_LABELS[row.kind] if row.kind == "random_bucket" else subject
    value = f" {row.value}" if row.takes_value else ""
    return f"{prefix} {OPERATOR_LABELS[row.operator]}{value}"
