"""How a model row names a user in the destination: external id, alias (name + fixed label) or device id.

An identity is the triple ``(kind, label, value)``: kind ``e`` (external id), ``a`` (alias; ``label`` is the
alias label) or ``d`` (device id); ``label`` is ``""`` unless an alias. Resolution happens in DuckDB SQL so
the planner never holds one Python object per row; :func:`resolution_sql` builds that SQL from the sync's
identifier choice (a single identifier, or an ordered fallback list: the first one present wins per row).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from cohortflow.sync.config import IdentifierChoice, IdentifierConfig
from cohortflow.sync.errors import ModelError
from cohortflow.wire import Alias, CohortChange

EXTERNAL_ID = "e"
ALIAS = "a"
DEVICE_ID = "d"
KIND_NAMES = {EXTERNAL_ID: "external_id", ALIAS: "alias", DEVICE_ID: "device_id"}
# The platform stores identifiers in 512-character columns; Braze documents no larger limit either.
MAX_IDENTIFIER_LENGTH = 512

# Reasons a row is rejected (counted and sampled per run).
NULL_IDENTIFIER = "null_identifier"
EMPTY_IDENTIFIER = "empty_identifier"
NOT_A_STRING = "not_a_string"
TOO_LONG = "identifier_too_long"
CONTROL_CHARACTERS = "control_characters"
NULL_PRIMARY_KEY = "null_primary_key"
UNSUPPORTED_BY_DESTINATION = "unsupported_by_destination"


def quote_column(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class _Resolved:
    kind: str
    label: str
    column: str


def _resolved(choice: IdentifierChoice) -> _Resolved:
    if choice.external_id is not None:
        return _Resolved(EXTERNAL_ID, "", choice.external_id)
    if choice.alias is not None:
        return _Resolved(ALIAS, choice.alias.label, choice.alias.name_column)
    assert choice.device_id is not None
    return _Resolved(DEVICE_ID, "", choice.device_id)


def fixed_kind_and_label(config: IdentifierConfig) -> tuple[str, str] | None:
    """The (kind, label) every identity of this sync has, when it has a single identifier choice."""
    choices = [_resolved(c) for c in config.choices()]
    return (choices[0].kind, choices[0].label) if len(choices) == 1 else None


def identifier_columns(config: IdentifierConfig) -> list[str]:
    return list(dict.fromkeys(_resolved(c).column for c in config.choices()))


def _is_textual(arrow_type: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(arrow_type)
        or pa.types.is_large_string(arrow_type)
        or pa.types.is_string_view(arrow_type)
        or pa.types.is_integer(arrow_type)
    )


def _blank(text: str) -> str:
    """Empty or only spaces (DuckDB's trim strips spaces only); the cheap tests run first."""
    return f"({text} = '' OR (starts_with({text}, ' ') AND trim({text}) = ''))"


def identity_sql(
    config: IdentifierConfig, schema: pa.Schema, primary_key: str, table: str, unsupported_kinds: Sequence[str] = ()
) -> str:
    """SQL over ``table`` yielding per row ``pk, kind, label, value`` and ``key``, the value to match on.

    ``key`` is null when the row cannot be valid for reasons known without looking at the value's
    characters (no primary key, no identifier present, a non-text column, a kind the destination cannot
    address). The value-level rules (blank, length, control characters) are left to :func:`reason_sql`,
    so a planner may apply them only to rows that do not match an identity already confirmed: a confirmed
    identity passed them when it was planned. With a single identifier choice, the columns are then just
    the raw ones, at no cost per row. Several choices also yield ``chosen``, ``is_blank``, ``bad_type``.

    Integer columns are accepted and sent as their decimal text; any other non-text type (floats, booleans,
    dates, nested values) is not a valid identifier string.
    """
    names = set(schema.names)
    wanted = [primary_key, *identifier_columns(config)]
    missing = [c for c in wanted if c not in names]
    if missing:
        raise ModelError(
            f"the model has no column {', '.join(repr(c) for c in missing)} (it has: {', '.join(schema.names)})"
        )
    pk = quote_column(primary_key)
    choices = [_resolved(c) for c in config.choices()]
    if len(choices) == 1:
        r = choices[0]
        col = quote_column(r.column)
        matchable = _is_textual(schema.field(r.column).type) and r.kind not in unsupported_kinds
        key = f"CASE WHEN {pk} IS NOT NULL THEN CAST({col} AS VARCHAR) END" if matchable else "NULL::VARCHAR"
        return (
            f"SELECT {pk} AS pk, {sql_string(r.kind)} AS kind, {sql_string(r.label)} AS label, "
            f"CAST({col} AS VARCHAR) AS value, {key} AS key FROM {table}"
        )
    # Each choice's presence is computed once per row (__cf_p0, ...) and then picked by the CASEs above it.
    presence, whens_kind, whens_label, whens_value, whens_bad, blank_checks = [], [], [], [], [], []
    for i, r in enumerate(choices):
        col = quote_column(r.column)
        textual = _is_textual(schema.field(r.column).type)
        text = f"CAST({col} AS VARCHAR)"
        if textual:
            presence.append(f"({col} IS NOT NULL AND NOT {_blank(text)}) AS __cf_p{i}")
            blank_checks.append(f"({col} IS NOT NULL AND {_blank(text)})")
        else:
            presence.append(f"({col} IS NOT NULL) AS __cf_p{i}")
        whens_kind.append(f"WHEN __cf_p{i} THEN {sql_string(r.kind)}")
        whens_label.append(f"WHEN __cf_p{i} THEN {sql_string(r.label)}")
        whens_value.append(f"WHEN __cf_p{i} THEN {text}")
        whens_bad.append(f"WHEN __cf_p{i} THEN {'FALSE' if textual else 'TRUE'}")
    unsupported = (
        f" AND kind NOT IN ({', '.join(sql_string(k) for k in unsupported_kinds)})" if unsupported_kinds else ""
    )
    columns = ", ".join(quote_column(c) for c in dict.fromkeys(r.column for r in choices))
    return f"""
        SELECT pk, kind, label, value, kind IS NOT NULL AS chosen, is_blank, bad_type,
            CASE WHEN pk IS NOT NULL AND kind IS NOT NULL AND NOT bad_type{unsupported} THEN value END AS key
        FROM (
            SELECT __cf_pk AS pk,
                CASE {" ".join(whens_kind)} END AS kind,
                CASE {" ".join(whens_label)} END AS label,
                CASE {" ".join(whens_value)} END AS value,
                COALESCE(CASE {" ".join(whens_bad)} END, FALSE) AS bad_type,
                ({" OR ".join(blank_checks) or "FALSE"}) AS is_blank
            FROM (SELECT {pk} AS __cf_pk, {columns}, {", ".join(presence)} FROM {table})
        )
    """


def reason_sql(config: IdentifierConfig, schema: pa.Schema, alias: str, unsupported_kinds: Sequence[str] = ()) -> str:
    """Why the row ``alias`` of :func:`identity_sql` is rejected: a SQL expression, null when it is valid."""
    choices = [_resolved(c) for c in config.choices()]
    if len(choices) == 1:
        r = choices[0]
        value = f"{alias}.value"
        chosen = f"({value} IS NOT NULL AND NOT {_blank(value)})"
        is_blank = f"({value} IS NOT NULL AND {_blank(value)})"
        bad_type = "FALSE" if _is_textual(schema.field(r.column).type) else "TRUE"
    else:
        chosen, is_blank, bad_type = f"{alias}.chosen", f"{alias}.is_blank", f"{alias}.bad_type"
    unsupported = (
        f"WHEN {alias}.kind IN ({', '.join(sql_string(k) for k in unsupported_kinds)}) "
        f"THEN {sql_string(UNSUPPORTED_BY_DESTINATION)}"
        if unsupported_kinds
        else ""
    )
    return f"""CASE
        WHEN {alias}.pk IS NULL THEN {sql_string(NULL_PRIMARY_KEY)}
        WHEN NOT {chosen} AND {is_blank} THEN {sql_string(EMPTY_IDENTIFIER)}
        WHEN NOT {chosen} THEN {sql_string(NULL_IDENTIFIER)}
        WHEN {bad_type} THEN {sql_string(NOT_A_STRING)}
        {unsupported}
        WHEN length({alias}.value) > {MAX_IDENTIFIER_LENGTH} THEN {sql_string(TOO_LONG)}
        WHEN regexp_matches({alias}.value, '[\\x00-\\x1f\\x7f]') THEN {sql_string(CONTROL_CHARACTERS)}
        ELSE NULL
    END"""


def resolution_sql(
    config: IdentifierConfig, schema: pa.Schema, primary_key: str, table: str, unsupported_kinds: Sequence[str] = ()
) -> str:
    """SQL over ``table`` yielding ``pk, kind, label, value, key, reason`` per row (``reason`` null when valid)."""
    identities = identity_sql(config, schema, primary_key, table, unsupported_kinds)
    reason = reason_sql(config, schema, "r", unsupported_kinds)
    return f"SELECT r.*, {reason} AS reason FROM ({identities}) AS r"


def describe(identity: tuple[str, str, str]) -> str:
    kind, label, value = identity
    if kind == ALIAS:
        return f"alias {label}:{value}"
    return f"{KIND_NAMES[kind]} {value}"


def cohort_change(ids: Sequence[tuple[str, str, str]], *, remove: bool) -> CohortChange:
    """One wire change object carrying every identifier kind of a batch."""
    return CohortChange(
        user_ids=[v for k, _, v in ids if k == EXTERNAL_ID],
        device_ids=[v for k, _, v in ids if k == DEVICE_ID],
        aliases=[Alias(alias_name=v, alias_label=lb) for k, lb, v in ids if k == ALIAS],
        should_remove=remove,
    )
