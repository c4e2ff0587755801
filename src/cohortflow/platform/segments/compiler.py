"""Segment evaluation: a filter tree becomes one SQL boolean over the ``users`` table.

The database does all the work (no Python loop over users), on SQLite and PostgreSQL alike. Two rules keep
the SQL correct and fast:

- A leaf may be SQL ``NULL`` where it does not hold (``country = 'FR'`` on a user without a country). ``AND``
  and ``OR`` treat that like false already, so leaves stay in their plain, index-friendly form; only ``NOT``
  folds ``NULL`` to false first, so that "not in France" includes users with no country.
- Values from the tree are always bound parameters, never spliced into SQL text.

Custom attributes live in a JSON column whose values may have any type per user, so every comparison first
checks the stored JSON type (a number never equals a string, a malformed date never matches anything).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Connection,
    Float,
    String,
    and_,
    bindparam,
    case,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import DateTime

from cohortflow.platform.errors import InvalidRequest
from cohortflow.platform.segments.filters import (
    STANDARD_ATTRIBUTES,
    AndGroup,
    CustomAttributeFilter,
    CustomEventFilter,
    EmailSubscriptionFilter,
    FilterNode,
    HasEmailFilter,
    IdentityFilter,
    NotGroup,
    OrGroup,
    PartnerCohortFilter,
    PurchaseFilter,
    RandomBucketFilter,
    StandardAttributeFilter,
    parse_date_value,
)
from cohortflow.platform.store.schema import cohort_members, cohorts, partners, user_events, user_purchases, users

# Users without an explicit state are subscribed, as in Braze.
DEFAULT_EMAIL_SUBSCRIPTION = "subscribed"


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _not(clause: ColumnElement[bool]) -> ColumnElement[bool]:
    """Two-valued negation: an unknown (NULL) leaf counts as false before it is negated."""
    return not_(func.coalesce(clause, false()))


class _Compiler:
    def __init__(self, conn: Connection, workspace_id: str, now: datetime) -> None:
        self.conn = conn
        self.workspace_id = workspace_id
        self.now = _utc(now)
        self.postgres = conn.dialect.name == "postgresql"
        self._cohort_pks: dict[tuple[str, str], int] = {}

    def node(self, node: FilterNode) -> ColumnElement[bool]:
        if isinstance(node, AndGroup):
            return and_(*(self.node(child) for child in node.filters))
        if isinstance(node, OrGroup):
            return or_(*(self.node(child) for child in node.filters))
        if isinstance(node, NotGroup):
            return self.negated(node.filter)
        if isinstance(node, PartnerCohortFilter):
            return self.cohort(node)
        if isinstance(node, CustomAttributeFilter):
            return self.custom_attribute(node)
        if isinstance(node, StandardAttributeFilter):
            return self.standard_attribute(node)
        if isinstance(node, IdentityFilter):
            identified = users.c.external_id.is_not(None)
            return identified if node.state == "identified" else users.c.external_id.is_(None)
        if isinstance(node, HasEmailFilter):
            has = and_(users.c.email.is_not(None), users.c.email != "")
            return has if node.value else _not(has)
        if isinstance(node, EmailSubscriptionFilter):
            state = func.coalesce(users.c.email_subscribe, DEFAULT_EMAIL_SUBSCRIPTION)
            return state == node.state
        if isinstance(node, CustomEventFilter):
            return self.counted(
                user_events, user_events.c.time, [user_events.c.name == node.event], node.min_count, node.within_days
            )
        if isinstance(node, PurchaseFilter):
            extra = [user_purchases.c.product_id == node.product_id] if node.product_id is not None else []
            return self.counted(user_purchases, user_purchases.c.time, extra, node.min_count, node.within_days)
        if isinstance(node, RandomBucketFilter):
            return _compare(users.c.random_bucket, node.operator, node.value)
        raise InvalidRequest(f"unsupported filter type {getattr(node, 'type', node)!r}")  # pragma: no cover

    def negated(self, node: FilterNode) -> ColumnElement[bool]:
        """``NOT node``, pushed down to the leaves (De Morgan) so that a negated cohort becomes ``NOT EXISTS``,
        which PostgreSQL runs as an anti-join; a ``COALESCE`` around it would hide that shape."""
        if isinstance(node, NotGroup):
            return self.node(node.filter)
        if isinstance(node, AndGroup):
            return or_(*(self.negated(child) for child in node.filters))
        if isinstance(node, OrGroup):
            return and_(*(self.negated(child) for child in node.filters))
        if isinstance(node, PartnerCohortFilter):
            flipped = "does_not_include" if node.operator == "includes" else "includes"
            return self.cohort(node.model_copy(update={"operator": flipped}))
        return _not(self.node(node))

    # -- cohorts -------------------------------------------------------------------------------------------

    def cohort_pk(self, partner: str, cohort_id: str) -> int:
        key = (partner, cohort_id)
        if key not in self._cohort_pks:
            pk = self.conn.execute(
                select(cohorts.c.id)
                .join(partners, partners.c.id == cohorts.c.partner_id)
                .where(
                    cohorts.c.workspace_id == self.workspace_id,
                    partners.c.name == partner.strip().lower(),
                    cohorts.c.cohort_id == cohort_id,
                )
            ).scalar()
            if pk is None:
                raise InvalidRequest(
                    f"unknown cohort: partner {partner!r} has no cohort {cohort_id!r} in this workspace"
                )
            self._cohort_pks[key] = int(pk)
        return self._cohort_pks[key]

    def cohort(self, node: PartnerCohortFilter) -> ColumnElement[bool]:
        pk = self.cohort_pk(node.partner, node.cohort_id)
        member = exists().where(cohort_members.c.cohort_pk == pk, cohort_members.c.user_id == users.c.id)
        return member if node.operator == "includes" else ~member

    # -- events and purchases ------------------------------------------------------------------------------

    def counted(
        self,
        table: Any,
        time_column: Any,
        conditions: list[ColumnElement[bool]],
        min_count: int,
        within_days: int | None,
    ) -> ColumnElement[bool]:
        where = [table.c.user_id == users.c.id, table.c.workspace_id == self.workspace_id, *conditions]
        if within_days is not None:
            where.append(time_column >= self.now - timedelta(days=within_days))
            where.append(time_column <= self.now)
        if min_count == 1:
            return exists().where(*where)
        # LIMIT inside the count stops scanning a heavy user's history once the threshold is reached.
        capped = select(literal(1)).select_from(table).where(*where).correlate(users).limit(min_count).subquery()
        return select(func.count()).select_from(capped).scalar_subquery() >= min_count

    # -- profile columns -----------------------------------------------------------------------------------

    def standard_attribute(self, node: StandardAttributeFilter) -> ColumnElement[bool]:
        column = users.c[node.attribute]
        kind = STANDARD_ATTRIBUTES[node.attribute]
        op, value = node.operator, node.value
        if op == "exists":
            return column.is_not(None)
        if op == "does_not_exist":
            return column.is_(None)
        if op == "equals":
            return column == value
        if op == "not_equals":
            return _not(column == value)
        if op == "in":
            return column.in_(list(value) if isinstance(value, list) else [value])
        if op == "contains":
            # instr/strpos: a substring test with no LIKE wildcards to escape.
            finder = func.strpos if self.postgres else func.instr
            return finder(column, value) > 0
        assert isinstance(value, str | int)
        if kind == "date":  # a YYYY-MM-DD string: ISO dates order as strings
            bound = self.now - timedelta(days=int(value)) if op == "within_last_days" else parse_date_value(str(value))
            text = _utc(bound).date().isoformat()
            if op == "before":
                return column < text
            if op == "after":
                return column > text
            return and_(column >= text, column <= self.now.date().isoformat())
        if op == "within_last_days":
            moment = self.now - timedelta(days=int(value))
        else:
            moment = _utc(parse_date_value(str(value)))
        if op == "before":
            return column < moment
        if op == "after":
            return column > moment
        return and_(column >= moment, column <= self.now)

    # -- custom attributes (JSON) --------------------------------------------------------------------------

    def custom_attribute(self, node: CustomAttributeFilter) -> ColumnElement[bool]:
        json = _PostgresJson(node.attribute) if self.postgres else _SqliteJson(node.attribute)
        op, value = node.operator, node.value
        if op == "exists":
            return json.present()
        if op == "does_not_exist":
            return _not(json.present())
        if op == "equals":
            return json.equals(value)
        if op == "not_equals":
            return _not(json.equals(value))
        if op == "in":
            return or_(*(json.equals(v) for v in (value if isinstance(value, list) else [value])))
        if op == "contains":
            return json.contains(str(value))
        if op in ("greater_than", "less_than"):
            assert isinstance(value, int | float)
            number = json.number()
            return number > value if op == "greater_than" else number < value
        if op == "within_last_days":
            assert isinstance(value, int)
            moment = json.moment()
            since = json.moment_param(self.now - timedelta(days=value))
            return and_(moment >= since, moment <= json.moment_param(self.now))
        moment = json.moment()
        bound = json.moment_param(_utc(parse_date_value(str(value))))
        return moment < bound if op == "before" else moment > bound


def _compare(column: Any, operator: str, value: object) -> Any:
    if operator == "equals":
        return column == value
    if operator == "not_equals":
        return column != value
    if operator == "less_than":
        return column < value
    return column > value


class _PostgresJson:
    """``custom_attributes`` is JSONB: containment (``@>``) for equality, typed extraction otherwise."""

    def __init__(self, attribute: str) -> None:
        self.attribute = attribute
        self.column = users.c.custom_attributes
        self.element = self.column.op("->")(bindparam(None, attribute, type_=String))
        self.text = self.column.op("->>")(bindparam(None, attribute, type_=String))
        self.jtype = func.jsonb_typeof(self.element)

    def _contains(self, document: object) -> ColumnElement[bool]:
        # Containment can use a GIN index on custom_attributes and compares numbers numerically (1 = 1.0).
        return self.column.op("@>", return_type=Boolean)(bindparam(None, document, type_=JSONB))

    def present(self) -> ColumnElement[bool]:
        return and_(self.column.op("?", return_type=Boolean)(self.attribute), self.jtype != "null")

    def equals(self, value: object) -> ColumnElement[bool]:
        return self._contains({self.attribute: value})

    def contains(self, value: str) -> ColumnElement[bool]:
        in_string = and_(self.jtype == "string", func.strpos(self.text, value) > 0)
        return or_(in_string, self._contains({self.attribute: [value]}))

    def number(self) -> ColumnElement[Any]:
        return case((self.jtype == "number", type_coerce(self.text, String).cast(Float)), else_=None)

    def moment(self) -> ColumnElement[Any]:
        # Only strings that start like an ISO date are cast (PostgreSQL would read 'today' or 'epoch' as
        # dates); the cast itself is the NULL-on-error function from migration 0002.
        looks_like_date = and_(self.jtype == "string", self.text.op("~")(r"^\d{4}-\d{2}-\d{2}"))
        return case((looks_like_date, func.cohortflow_try_timestamptz(self.text, type_=DateTime(timezone=True))))

    def moment_param(self, value: datetime) -> ColumnElement[Any]:
        return bindparam(None, _utc(value), type_=DateTime(timezone=True))


class _SqliteJson:
    """``custom_attributes`` is JSON text: ``json_type`` says what is stored, ``json_extract`` reads it."""

    def __init__(self, attribute: str) -> None:
        # A quoted path key accepts any attribute name; the name is still a bound parameter.
        self.path = '$."' + attribute.replace('"', '\\"') + '"'
        self.column = users.c.custom_attributes
        self.jtype = func.json_type(self.column, self.path)
        self.value = func.json_extract(self.column, self.path)

    def present(self) -> ColumnElement[bool]:
        return and_(self.jtype.is_not(None), self.jtype != "null")

    def equals(self, value: object) -> ColumnElement[bool]:
        if isinstance(value, bool):
            return self.jtype == ("true" if value else "false")
        if isinstance(value, int | float):
            return and_(self.jtype.in_(["integer", "real"]), self.value == value)
        return and_(self.jtype == "text", self.value == value)

    def contains(self, value: str) -> ColumnElement[bool]:
        in_string = and_(self.jtype == "text", func.instr(self.value, value) > 0)
        elements = func.json_each(self.column, self.path).table_valued("value", "type")
        in_array = and_(
            self.jtype == "array",
            exists(
                select(literal(1)).select_from(elements).where(elements.c.type == "text", elements.c.value == value)
            ),
        )
        return or_(in_string, in_array)

    def number(self) -> ColumnElement[Any]:
        return case((self.jtype.in_(["integer", "real"]), self.value), else_=None)

    def moment(self) -> ColumnElement[Any]:
        # julianday() parses ISO-8601 with an optional offset and returns NULL for anything else, but rolls
        # impossible days over (Feb 31 -> Mar 3); the date must read back unchanged, as PostgreSQL demands.
        day = func.substr(self.value, 1, 10)
        valid = and_(self.jtype == "text", func.date(func.julianday(day)) == day)
        return case((valid, func.julianday(self.value)), else_=None)

    def moment_param(self, value: datetime) -> ColumnElement[Any]:
        return func.julianday(bindparam(None, _utc(value).strftime("%Y-%m-%d %H:%M:%S.%f"), type_=String))


def compile_filter(conn: Connection, workspace_id: str, node: FilterNode, *, now: datetime) -> ColumnElement[bool]:
    """A WHERE clause over :data:`users` for ``node``; the caller also restricts to the workspace.

    Cohort references are resolved now (unknown ones raise :class:`InvalidRequest`); ``now`` anchors every
    "in the last N days" condition.
    """
    return _Compiler(conn, workspace_id, now).node(node)


def cohort_pks(conn: Connection, workspace_id: str, filters: list[PartnerCohortFilter]) -> list[int]:
    """The cohorts ``filters`` name, resolved in this workspace (unknown ones raise :class:`InvalidRequest`)."""
    compiler = _Compiler(conn, workspace_id, datetime.now(UTC))
    return [compiler.cohort_pk(f.partner, f.cohort_id) for f in filters]
