"""Compilation: an audience definition becomes one SQL query in its source's dialect.

The query reads the parent model as ``p`` and keeps the rows the filter tree selects::

    SELECT p.* FROM customers AS p
    LEFT JOIN (SELECT customer_id AS k0, SUM(amount) AS v FROM orders ... GROUP BY customer_id) AS t1 ON ...
    WHERE p.country = 'FR'
      AND p.id IN (SELECT customer_id FROM page_views WHERE viewed_at >= ... GROUP BY customer_id
                   HAVING COUNT(*) >= 3)

It is built as a sqlglot expression tree and rendered for the dialect, then fed to the planner as the SQL of
an ordinary model (:meth:`CompiledAudience.as_model`). The shapes are the ones every engine runs well:

- a related or event condition is a key ``IN`` an uncorrelated subquery (a hash semi-join in DuckDB and
  PostgreSQL, one temporary index in SQLite), grouped with ``HAVING`` only when the count needs it. When
  zero rows satisfy the count ("at most 2"), the subquery selects the people who break it and the condition
  is its negation, so people with no rows at all are included;
- a trait is a ``LEFT JOIN`` of one aggregated subquery per trait used, so it is computed once per query;
- SQL's third truth value never leaks: a condition may be NULL where it does not hold (a null column),
  which AND, OR and WHERE already treat as false, and only a negation folds NULL to false first. NOT is
  pushed down to the conditions (De Morgan), so ``not in_audience`` and ``not related`` stay anti-joins;
- relative windows ("within the last 30 days") are turned into literal UTC moments from ``now`` at compile
  time: the SQL shown is the SQL run, and a run compiles afresh.

Models declared with ``sql:`` are pasted in verbatim as subqueries (sqlglot never rewrites the user's SQL);
``table:`` models are referenced by name.
"""

from __future__ import annotations

import itertools
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlglot import exp

from cohortflow.clock import utcnow
from cohortflow.sync.audiences.config import AudienceRef, TraitConfig
from cohortflow.sync.audiences.dialects import DialectRules, source_dialect
from cohortflow.sync.audiences.filters import (
    AndGroup,
    CountRule,
    EventCondition,
    FilterNode,
    InAudienceCondition,
    NotGroup,
    OrGroup,
    PropertyCondition,
    RelatedCondition,
    temporal_value,
)
from cohortflow.sync.audiences.schema import Relation, parent_columns, relations
from cohortflow.sync.audiences.validate import reference_problems
from cohortflow.sync.config import ModelConfig, WorkspaceConfig
from cohortflow.sync.errors import UnknownObject
from cohortflow.sync.sources import model_query

PARENT = "p"
TEMPORAL = ("date", "timestamp")
# Operators that are the negation of another: they hold where the column is null.
_NEGATIONS = {"not_equals": "equals", "not_in": "in", "does_not_contain": "contains", "does_not_exist": "exists"}
_COMPARISONS: dict[str, type[exp.Binary]] = {
    "greater_than": exp.GT,
    "greater_than_or_equal": exp.GTE,
    "less_than": exp.LT,
    "less_than_or_equal": exp.LTE,
    "before": exp.LT,
    "after": exp.GT,
}
_COUNT_RULES: dict[str, type[exp.Binary]] = {"at_least": exp.GTE, "at_most": exp.LTE, "exactly": exp.EQ}


@dataclass(frozen=True)
class CompiledAudience:
    """One audience (or one split group / priority share of it) as SQL for its source."""

    target: AudienceRef
    parent: str
    source: str
    dialect: str
    primary_key: str
    sql: str

    def as_model(self) -> ModelConfig:
        """The audience as a model the planner reads like any other."""
        return ModelConfig(source=self.source, sql=self.sql, primary_key=self.primary_key)


@dataclass(frozen=True)
class _Row:
    """The row a condition reads: the parent (columns and traits) or a related / event model's row."""

    alias: str
    columns: dict[str, str]
    is_parent: bool


def _ident(name: str) -> exp.Identifier:
    return exp.to_identifier(name, quoted=True)


def _col(name: str, table: str) -> exp.Column:
    return exp.column(name, table=table, quoted=True)


def _not(condition: exp.Expr) -> exp.Expr:
    """Two-valued negation: a condition that is NULL (unknown) counts as false before it is negated."""
    return exp.Not(this=exp.Coalesce(this=condition, expressions=[exp.false()]))


def _is(condition: exp.Expr, value: bool) -> bool:
    """Whether ``condition`` is the literal TRUE / FALSE (an audience without filter, ``at least 0``)."""
    return isinstance(condition, exp.Boolean) and condition.this is value


def _and(parts: Sequence[exp.Expr]) -> exp.Expr:
    parts = [p for p in parts if not _is(p, True)]
    if any(_is(p, False) for p in parts):
        return exp.false()
    return exp.and_(*parts) if parts else exp.true()


def _or(parts: Sequence[exp.Expr]) -> exp.Expr:
    parts = [p for p in parts if not _is(p, False)]
    if any(_is(p, True) for p in parts):
        return exp.true()
    return exp.or_(*parts) if parts else exp.false()


def _not_null(column: exp.Expr) -> exp.Expr:
    return exp.Not(this=exp.Is(this=column, expression=exp.Null()))


def _number(value: int | float) -> exp.Expr:
    return exp.Literal.number(value)


def as_ref(target: AudienceRef | str) -> AudienceRef:
    return target if isinstance(target, AudienceRef) else AudienceRef(name=target)


class AudienceQuery:
    """Conditions and queries over one parent in one dialect. Build the conditions first (they register the
    trait joins they need), then render them with :meth:`members` or :meth:`counts`."""

    def __init__(self, config: WorkspaceConfig, parent: str, *, dialect: str, now: datetime | None = None) -> None:
        self.config = config
        self.parent_name = parent
        self.parent = config.parents[parent]
        self.parent_model = config.models[self.parent.model]
        self.rules = DialectRules(dialect)
        moment = now if now is not None else utcnow()
        self.now = moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo is not None else moment
        self._relations = relations(self.parent)
        self._row = _Row(PARENT, parent_columns(self.parent), is_parent=True)
        # Placeholders stand for sql: models until rendering; a random part keeps them out of user values.
        self._nonce = secrets.token_hex(4)
        self._raw: dict[str, str] = {}
        self._traits: dict[str, tuple[exp.Expr, exp.Expr]] = {}  # name -> (joined query, on)
        self._aliases = itertools.count(1)

    # -- public -------------------------------------------------------------------------------------------

    def audience(self, target: AudienceRef | str) -> exp.Expr:
        """The condition of membership of ``target``: the audience's filter, minus the audiences listed before
        it in its priority list, within its split group."""
        ref = as_ref(target)
        audience = self.config.audiences[ref.name]
        parts = [self.tree(audience.filter)]
        if ref.priority_list is not None:
            listed = self.config.priority_lists[ref.priority_list].audiences
            for earlier in listed[: listed.index(ref.name)]:
                parts.append(self.tree(self.config.audiences[earlier].filter, negate=True))
        if ref.split is not None:
            parts.append(self.split_group(ref.name, ref.split))
        return _and(parts)

    def tree(self, node: FilterNode | None, *, negate: bool = False) -> exp.Expr:
        """A filter tree over the parent (None: everyone)."""
        if node is None:
            return exp.false() if negate else exp.true()
        return self._node(node, self._row, negate)

    def split_group(self, audience_name: str, group: str) -> exp.Expr:
        splits = self.config.audiences[audience_name].splits
        assert splits is not None
        low, high = splits.bucket_ranges()[group]
        salt = splits.salt if splits.salt is not None else audience_name
        key = exp.DPipe(
            this=exp.Literal.string(f"{salt}:"),
            expression=exp.cast(_col(self.parent_model.primary_key, PARENT), "TEXT"),
        )
        return exp.Between(this=self.rules.bucket(key), low=_number(low), high=_number(high - 1))

    def members(self, condition: exp.Expr, *, limit: int | None = None) -> str:
        """``SELECT p.*`` of the parent rows where ``condition`` holds."""
        query = self._from(exp.select(exp.Column(this=exp.Star(), table=exp.to_identifier(PARENT))))
        if not _is(condition, True):
            query = query.where(condition)
        if limit is not None:
            query = query.limit(limit)
        return self._render(query)

    def counts(self, within: exp.Expr, conditions: Sequence[exp.Expr] = ()) -> str:
        """One row: ``rows``, how many parent rows satisfy ``within``, then ``c0``, ``c1``, ... how many of those
        satisfy each of ``conditions``. The filter is a WHERE, not one more CASE, so that the engine can apply it
        first (and, in DuckDB, join only the selected people into correlated subqueries)."""
        columns: list[exp.Expr] = [exp.alias_(exp.Count(this=exp.Star()), "rows")]
        for i, condition in enumerate(conditions):
            flag = exp.Case(ifs=[exp.If(this=condition, true=_number(1))], default=_number(0))
            columns.append(exp.alias_(exp.Sum(this=flag), f"c{i}"))
        query = self._from(exp.select(*columns))
        if not _is(within, True):
            query = query.where(within)
        return self._render(query)

    # -- trees --------------------------------------------------------------------------------------------

    def _node(self, node: FilterNode, row: _Row, negate: bool) -> exp.Expr:
        if isinstance(node, AndGroup | OrGroup):
            parts = [self._node(child, row, negate) for child in node.filters]
            return _or(parts) if isinstance(node, AndGroup) == negate else _and(parts)
        if isinstance(node, NotGroup):
            return self._node(node.filter, row, not negate)
        if isinstance(node, PropertyCondition):
            return self._property(node, row, negate)
        if isinstance(node, RelatedCondition | EventCondition):
            return self._relation(node, negate)
        assert isinstance(node, InAudienceCondition)
        return self.tree(self.config.audiences[node.audience].filter, negate=negate)

    def _column(self, row: _Row, name: str) -> tuple[exp.Expr, str]:
        kind = row.columns[name]
        if row.is_parent and name not in self.parent.columns:
            return self._trait(name), kind
        column = _col(name, row.alias)
        return (self.rules.temporal(column, kind) if kind in TEMPORAL else column), kind

    def _literal(self, value: object, kind: str) -> exp.Expr:
        if kind in TEMPORAL:
            moment = temporal_value(value, kind)
            text = moment.isoformat(sep=" ") if isinstance(moment, datetime) else moment.isoformat()
            return self.rules.temporal(exp.Literal.string(text), kind)
        if isinstance(value, bool):
            return exp.Boolean(this=value)
        if isinstance(value, int | float):
            return _number(value)
        assert isinstance(value, str)
        return exp.Literal.string(value)

    def _days_ago(self, days: int, kind: str) -> exp.Expr:
        moment: date | datetime = (self.now - timedelta(days=days)) if kind == "timestamp" else self._today(days)
        return self._literal(moment, kind)

    def _today(self, minus_days: int = 0) -> date:
        return self.now.date() - timedelta(days=minus_days)

    def _now(self, kind: str) -> exp.Expr:
        return self._literal(self.now if kind == "timestamp" else self._today(), kind)

    def _property(self, node: PropertyCondition, row: _Row, negate: bool) -> exp.Expr:
        operator: str = node.operator
        if operator in _NEGATIONS:
            operator, negate = _NEGATIONS[operator], not negate
        column, kind = self._column(row, node.column)
        condition = self._compare(column, kind, operator, node.value)
        if not negate:
            return condition
        if operator == "exists":
            return exp.Is(this=column.copy(), expression=exp.Null())
        return _not(condition)

    def _compare(self, column: exp.Expr, kind: str, operator: str, value: object) -> exp.Expr:
        def col() -> exp.Expr:
            return column.copy()

        if operator == "exists":
            return _not_null(col())
        if operator == "equals":
            return exp.EQ(this=col(), expression=self._literal(value, kind))
        if operator == "in":
            assert isinstance(value, list)
            return exp.In(this=col(), expressions=[self._literal(v, kind) for v in value])
        if operator in _COMPARISONS:
            return _COMPARISONS[operator](this=col(), expression=self._literal(value, kind))
        if operator == "between":
            assert isinstance(value, list)
            low, high = (self._literal(v, kind) for v in value)
            return exp.and_(exp.GTE(this=col(), expression=low), exp.LTE(this=col(), expression=high))
        if operator == "within_last_days":
            assert isinstance(value, int)
            return exp.and_(
                exp.GTE(this=col(), expression=self._days_ago(value, kind)),
                exp.LTE(this=col(), expression=self._now(kind)),
            )
        if operator == "more_than_days_ago":
            assert isinstance(value, int)
            return exp.LT(this=col(), expression=self._days_ago(value, kind))
        # Text by position, not LIKE: no wildcard to escape, and the same case-sensitivity everywhere.
        assert isinstance(value, str)
        text = exp.Literal.string(value)
        if operator == "contains":
            return exp.GT(this=exp.StrPosition(this=col(), substr=text), expression=_number(0))
        length = _number(len(value))
        if operator == "starts_with":
            start: exp.Expr = _number(1)
        else:
            assert operator == "ends_with"
            start = exp.Add(this=exp.Sub(this=exp.Length(this=col()), expression=length), expression=_number(1))
        return exp.EQ(this=exp.Substring(this=col(), start=start, length=length.copy()), expression=text)

    # -- related models and events ------------------------------------------------------------------------

    def _table(self, model_name: str, alias: str) -> exp.Expr:
        model = self.config.models[model_name]
        if model.table is not None:
            parts = [_ident(p) for p in model.table.split(".")]
            table = exp.Table(
                this=parts[-1],
                db=parts[-2] if len(parts) > 1 else None,
                catalog=parts[-3] if len(parts) > 2 else None,
            )
        else:
            placeholder = f"cohortflow_model_{self._nonce}_{model_name}"
            self._raw[placeholder] = model_query(model)
            table = exp.Table(this=_ident(placeholder))
        return exp.alias_(table, alias, table=True)

    def _alias(self, prefix: str) -> str:
        return f"{prefix}{next(self._aliases)}"

    def _parent_key(self, relation: Relation) -> exp.Expr:
        keys = [_col(c, PARENT) for c in relation.config.join]
        return keys[0] if len(keys) == 1 else exp.Tuple(expressions=keys)

    def _rows(self, relation: Relation, where: FilterNode | None) -> tuple[str, list[exp.Expr], list[exp.Expr]]:
        """An alias for the relation's rows, their join-key columns, and the conditions every query over them
        starts with (keys present, the ``where`` tree)."""
        alias = self._alias("r")
        keys: list[exp.Expr] = [_col(c, alias) for c in relation.config.join.values()]
        conditions = [_not_null(k.copy()) for k in keys]
        if where is not None:
            conditions.append(self._node(where, _Row(alias, relation.columns, is_parent=False), False))
        return alias, keys, conditions

    def _window(self, node: EventCondition, relation: Relation, alias: str) -> list[exp.Expr]:
        assert relation.timestamp is not None
        kind = relation.columns[relation.timestamp]
        moment = self.rules.temporal(_col(relation.timestamp, alias), kind)
        if node.within_last_days is not None:
            return [self._compare(moment, kind, "within_last_days", node.within_last_days)]
        bounds = [("after", node.after), ("before", node.before)]
        return [self._compare(moment, kind, op, value) for op, value in bounds if value is not None]

    def _relation(self, node: RelatedCondition | EventCondition, negate: bool) -> exp.Expr:
        rule = node.count
        if rule.operator == "at_least" and rule.value == 0:
            return exp.false() if negate else exp.true()
        name = node.relation if isinstance(node, RelatedCondition) else node.event
        relation = self._relations[name]
        alias, keys, conditions = self._rows(relation, node.where)
        if isinstance(node, EventCondition):
            conditions += self._window(node, relation, alias)
        table = self._table(relation.config.model, alias)
        if self.rules.correlated:
            return self._correlated(relation, keys, table, conditions, rule, negate)
        query = exp.select(*keys).from_(table).where(_and(conditions))
        # With zero rows allowed ("at most 2"), select who breaks the rule and negate: people with no rows at
        # all then count, without a scan of the parent in the subquery.
        zero_ok = rule.holds(0)
        having = self._count_rule(rule, exp.Count(this=exp.Star()))
        if zero_ok:
            having = exp.Not(this=having)
        if not self._every_count(rule, zero_ok):
            query = query.group_by(*[k.copy() for k in keys]).having(having)
        member = exp.In(this=self._parent_key(relation), query=exp.Subquery(this=query))
        holds = _not(member) if zero_ok else member
        if not negate:
            return holds
        return member if zero_ok else _not(member)

    def _correlated(
        self,
        relation: Relation,
        keys: list[exp.Expr],
        table: exp.Expr,
        conditions: list[exp.Expr],
        rule: CountRule,
        negate: bool,
    ) -> exp.Expr:
        """The same condition as an ``EXISTS`` or a correlated count, for engines that decorrelate them: DuckDB
        then joins the parent's remaining keys into the subquery, so it counts rows of selected people only
        instead of grouping the whole event table (4x faster on 100M events, see BENCHMARKS.md). Both forms
        are never NULL, so negation is a plain NOT."""
        matches = [
            exp.EQ(this=k.copy(), expression=_col(c, PARENT)) for k, c in zip(keys, relation.config.join, strict=True)
        ]
        rows = exp.select(_number(1)).from_(table).where(_and([*matches, *conditions]))
        if self._every_count(rule, zero_ok=False):
            holds: exp.Expr = exp.Exists(this=rows)
        elif self._every_count(rule, zero_ok=True):
            holds = exp.Not(this=exp.Exists(this=rows))
        else:
            counted = rows.select(exp.Count(this=exp.Star()), append=False)
            holds = self._count_rule(rule, exp.Subquery(this=counted))
        return exp.Not(this=holds) if negate else holds

    @staticmethod
    def _count_rule(rule: CountRule, count: exp.Expr) -> exp.Expr:
        return _COUNT_RULES[rule.operator](this=count, expression=_number(rule.value))

    @staticmethod
    def _every_count(rule: CountRule, zero_ok: bool) -> bool:
        """Whether every key with at least one row belongs to the subquery's set (no HAVING needed)."""
        if zero_ok:  # the set is who breaks the rule: everyone with rows when no positive count keeps it
            return rule.operator in ("at_most", "exactly") and rule.value == 0
        return rule.operator == "at_least" and rule.value <= 1

    # -- traits -------------------------------------------------------------------------------------------

    def _trait(self, name: str) -> exp.Expr:
        trait = self.parent.traits[name]
        if name not in self._traits:
            self._traits[name] = self._trait_join(trait)
        alias = self._traits[name][0].alias
        value = _col("v", alias)
        if trait.aggregate in ("count", "sum"):
            return exp.Coalesce(this=value, expressions=[_number(0)])
        return value

    def _trait_join(self, trait: TraitConfig) -> tuple[exp.Expr, exp.Expr]:
        relation = self._relations[trait.relation]
        alias, keys, conditions = self._rows(relation, trait.where)
        key_names = [f"k{i}" for i in range(len(keys))]
        keyed = [exp.alias_(k.copy(), n) for k, n in zip(keys, key_names, strict=True)]
        source = self._table(relation.config.model, alias)
        value: exp.Expr | None = None
        if trait.column is not None:
            value, _ = self._column(_Row(alias, relation.columns, is_parent=False), trait.column)
        if trait.aggregate == "count":
            query = exp.select(*keyed, exp.alias_(exp.Count(this=exp.Star()), "v"))
            query = query.from_(source).where(_and(conditions)).group_by(*[k.copy() for k in keys])
        elif trait.aggregate in ("sum", "average", "min", "max"):
            function = {"sum": exp.Sum, "average": exp.Avg, "min": exp.Min, "max": exp.Max}[trait.aggregate]
            query = exp.select(*keyed, exp.alias_(function(this=value), "v"))
            query = query.from_(source).where(_and(conditions)).group_by(*[k.copy() for k in keys])
        elif trait.aggregate in ("first", "last"):
            assert value is not None
            order_name = trait.order_by or relation.timestamp
            assert order_name is not None
            order, _ = self._column(_Row(alias, relation.columns, is_parent=False), order_name)
            conditions.append(_not_null(order.copy()))
            primary_key = _col(self.config.models[relation.config.model].primary_key, alias)
            desc = trait.aggregate == "last"
            ranked = (
                exp.select(
                    *keyed,
                    exp.alias_(value, "v"),
                    exp.alias_(self._first_row(keys, [(order, desc), (primary_key, desc)]), "rn"),
                )
                .from_(source)
                .where(_and(conditions))
            )
            query = self._top_rows(ranked, key_names)
        else:
            assert trait.aggregate == "most_frequent" and value is not None
            conditions.append(_not_null(value.copy()))
            grouped = exp.select(*keyed, exp.alias_(value, "v"), exp.alias_(exp.Count(this=exp.Star()), "n"))
            grouped = grouped.from_(source).where(_and(conditions)).group_by(*[k.copy() for k in keys], value.copy())
            inner = self._alias("g")
            ranked = exp.select(
                *[_col(n, inner) for n in key_names],
                _col("v", inner),
                exp.alias_(
                    self._first_row(
                        [_col(n, inner) for n in key_names], [(_col("n", inner), True), (_col("v", inner), False)]
                    ),
                    "rn",
                ),
            ).from_(exp.alias_(exp.Subquery(this=grouped), inner, table=True))
            query = self._top_rows(ranked, key_names)
        joined_alias = self._alias("t")
        joined = exp.alias_(exp.Subquery(this=query), joined_alias, table=True)
        on = _and(
            [
                exp.EQ(this=_col(n, joined_alias), expression=_col(c, PARENT))
                for n, c in zip(key_names, relation.config.join, strict=True)
            ]
        )
        return joined, on

    @staticmethod
    def _first_row(partition: list[exp.Expr], order: list[tuple[exp.Expr, bool]]) -> exp.Expr:
        return exp.Window(
            this=exp.RowNumber(),
            partition_by=[p.copy() for p in partition],
            order=exp.Order(expressions=[exp.Ordered(this=e.copy(), desc=desc) for e, desc in order]),
        )

    def _top_rows(self, ranked: exp.Select, key_names: list[str]) -> exp.Select:
        alias = self._alias("x")
        return (
            exp.select(*[_col(n, alias) for n in key_names], _col("v", alias))
            .from_(exp.alias_(exp.Subquery(this=ranked), alias, table=True))
            .where(exp.EQ(this=_col("rn", alias), expression=_number(1)))
        )

    # -- rendering ----------------------------------------------------------------------------------------

    def _from(self, select: exp.Select) -> exp.Select:
        query = select.from_(self._table(self.parent.model, PARENT))
        for joined, on in self._traits.values():
            query = query.join(joined.copy(), on=on.copy(), join_type="left")
        return query

    def _render(self, query: exp.Expr) -> str:
        sql = query.sql(dialect=self.rules.name, pretty=True)
        for placeholder, raw in self._raw.items():
            pattern = re.compile(r'["`\[]?' + re.escape(placeholder) + r'["`\]]?')
            replacement = f"(\n{raw}\n)".replace("\\", "\\\\")  # the model's SQL verbatim, not a pattern
            sql = pattern.sub(replacement, sql)
        return sql


def check_target(config: WorkspaceConfig, target: AudienceRef | str) -> AudienceRef:
    """``target`` when it names an audience (and a split group and priority list of it) of ``config``;
    :class:`UnknownObject` naming what does not resolve otherwise."""
    ref = as_ref(target)
    problems = reference_problems(config, ref)
    if problems:
        raise UnknownObject("; ".join(message for _, message in problems))
    return ref


def query_for(config: WorkspaceConfig, parent: str, *, now: datetime | None = None) -> AudienceQuery:
    """An :class:`AudienceQuery` over ``parent`` in the dialect of its model's source."""
    source_name = config.models[config.parents[parent].model].source
    dialect = source_dialect(source_name, config.sources[source_name])
    return AudienceQuery(config, parent, dialect=dialect, now=now)


def compile_audience(
    config: WorkspaceConfig, target: AudienceRef | str, *, now: datetime | None = None
) -> CompiledAudience:
    """The SQL of an audience's members (of one split group, of its share of a priority list) for its source."""
    ref = check_target(config, target)
    audience = config.audiences[ref.name]
    query = query_for(config, audience.parent, now=now)
    sql = query.members(query.audience(ref))
    return CompiledAudience(
        target=ref,
        parent=audience.parent,
        source=query.parent_model.source,
        dialect=query.rules.name,
        primary_key=query.parent_model.primary_key,
        sql=sql,
    )
