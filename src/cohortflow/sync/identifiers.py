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


def _sql_string(value: str) -> str:
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


def identifier_columns(config: IdentifierConfig) -> list[str]:
    return list(dict.fromkeys(_resolved(c).column for c in config.choices()))


def _is_textual(arrow_type: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(arrow_type)
        or pa.types.is_large_string(arrow_type)
        or pa.types.is_string_view(arrow_type)
        or pa.types.is_integer(arrow_type)
    )


def resolution_sql(
    config: IdentifierConfig, schema: pa.Schema, primary_key: str, table: str, unsupported_kinds: Sequence[str] = ()
) -> str:
    """SQL over ``table`` yielding ``pk, kind, label, value, reason`` per row (``reason`` null when valid).

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
    # Each choice's presence is computed once per row (__cf_p0, ...) and then picked by the CASEs above it.
    # Blank means empty or only spaces (DuckDB's trim strips spaces only); the cheap tests run first.
    presence, whens_kind, whens_label, whens_value, whens_bad, blank_checks = [], [], [], [], [], []
    for i, choice in enumerate(config.choices()):
        r = _resolved(choice)
        col = quote_column(r.column)
        textual = _is_textual(schema.field(r.column).type)
        text = f"CAST({col} AS VARCHAR)"
        if textual:
            blank = f"({text} = '' OR (starts_with({text}, ' ') AND trim({text}) = ''))"
            presence.append(f"({col} IS NOT NULL AND NOT {blank}) AS __cf_p{i}")
            blank_checks.append(f"({col} IS NOT NULL AND {blank})")
        else:
            presence.append(f"({col} IS NOT NULL) AS __cf_p{i}")
        whens_kind.append(f"WHEN __cf_p{i} THEN {_sql_string(r.kind)}")
        whens_label.append(f"WHEN __cf_p{i} THEN {_sql_string(r.label)}")
        whens_value.append(f"WHEN __cf_p{i} THEN {text}")
        whens_bad.append(f"WHEN __cf_p{i} THEN {'FALSE' if textual else 'TRUE'}")
    blank_any = " OR ".join(blank_checks) or "FALSE"
    unsupported = (
        f"WHEN kind IN ({', '.join(_sql_string(k) for k in unsupported_kinds)}) "
        f"THEN {_sql_string(UNSUPPORTED_BY_DESTINATION)}"
        if unsupported_kinds
        else ""
    )
    pk = quote_column(primary_key)
    columns = ", ".join(quote_column(c) for c in dict.fromkeys(identifier_columns(config)))
    # The primary key keeps its type (cheaper to compare); it is cast to text only for samples.
    return f"""
        SELECT pk, kind, label, value,
            CASE
                WHEN pk IS NULL THEN {_sql_string(NULL_PRIMARY_KEY)}
                WHEN kind IS NULL AND is_blank THEN {_sql_string(EMPTY_IDENTIFIER)}
                WHEN kind IS NULL THEN {_sql_string(NULL_IDENTIFIER)}
                WHEN bad_type THEN {_sql_string(NOT_A_STRING)}
                {unsupported}
                WHEN length(value) > {MAX_IDENTIFIER_LENGTH} THEN {_sql_string(TOO_LONG)}
                WHEN regexp_matches(value, '[\\x00-\\x1f\\x7f]') THEN {_sql_string(CONTROL_CHARACTERS)}
                ELSE NULL
            END AS reason
        FROM (
            SELECT __cf_pk AS pk,
                CASE {" ".join(whens_kind)} END AS kind,
                CASE {" ".join(whens_label)} END AS label,
                CASE {" ".join(whens_value)} END AS value,
                COALESCE(CASE {" ".join(whens_bad)} END, FALSE) AS bad_type,
                ({blank_any}) AS is_blank
            FROM (SELECT {pk} AS __cf_pk, {columns}, {", ".join(presence)} FROM {table})
        )
    """


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
