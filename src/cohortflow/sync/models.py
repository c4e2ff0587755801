"""Models: a SQL query or a table in a source, with a required primary key.

:func:`materialize` makes the model's rows available to the planner's DuckDB (only the primary key and the
identifier columns), defines each row's identity in SQL, and checks the rules: duplicate primary keys fail
the run (count and samples); rows without a usable identifier are rejected, counted and sampled by reason
(:func:`rejected_rows`, over the planner's diff).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa

from cohortflow.sync.config import IdentifierConfig, ModelConfig
from cohortflow.sync.errors import ModelError, SourceUnavailable
from cohortflow.sync.identifiers import identifier_columns, identity_sql, quote_column, resolution_sql
from cohortflow.sync.sources import ATTACHED, Source, model_query, quote_identifier

SAMPLE_SIZE = 5


@dataclass
class RejectedRows:
    reason: str
    count: int
    samples: list[str] = field(default_factory=list)  # primary keys

    def as_dict(self) -> dict[str, object]:
        return {"reason": self.reason, "count": self.count, "samples": self.samples}


@dataclass
class ModelInput:
    rows: int
    schema: pa.Schema  # the model's columns as the source types them


def materialize(
    con: duckdb.DuckDBPyConnection,
    source: Source,
    model: ModelConfig,
    identifier: IdentifierConfig,
    *,
    unsupported_kinds: Sequence[str] = (),
    on_rows: Callable[[int], None] | None = None,
) -> ModelInput:
    """Define the DuckDB views ``model_identities`` (:func:`identity_sql`) and ``model_rows`` (the same plus
    ``reason``, null when the row is valid).

    A DuckDB source is attached and read in place: a ``table`` model is a view over its table, a ``sql``
    model is run once into a table of the needed columns. Other sources stream Arrow batches into a table.
    Identity resolution runs as part of whatever query reads the view, so a 10M-row model is resolved once,
    inside the diff. Duplicate primary keys raise :class:`ModelError` here.
    """
    query = model_query(model)
    columns = [model.primary_key, *identifier_columns(identifier)]
    select_list = ", ".join(quote_column(c) for c in dict.fromkeys(columns))
    if source.attach(con):
        try:
            schema = con.sql(f"SELECT * FROM ({query}) AS model LIMIT 0").to_arrow_table().schema
            _check_columns(columns, schema.names)
            if model.table is not None:
                # Qualified, so that the view never binds to one of the planner's own tables.
                table = f"{ATTACHED}.{quote_identifier(model.table)}"
                con.execute(f"CREATE VIEW raw_rows AS SELECT {select_list} FROM {table}")
            else:
                con.execute(f"CREATE TABLE raw_rows AS SELECT {select_list} FROM ({query}) AS model")
        except duckdb.Error as exc:
            raise SourceUnavailable(f"source {source.name!r}: the query failed: {exc}") from exc
    else:
        with source.stream(query, model.batch_rows) as reader:
            _check_columns(columns, reader.schema.names)
            con.register("raw_schema", reader.schema.empty_table())
            con.execute(f"CREATE TABLE raw_rows AS SELECT {select_list} FROM raw_schema")
            con.unregister("raw_schema")
            count = 0
            try:
                for batch in reader:
                    con.register("raw_batch", batch)
                    con.execute(f"INSERT INTO raw_rows SELECT {select_list} FROM raw_batch")
                    con.unregister("raw_batch")
                    count += batch.num_rows
                    if on_rows is not None:
                        on_rows(count)
            except duckdb.Error as exc:
                raise SourceUnavailable(f"reading the model failed: {exc}") from exc
            schema = reader.schema
    identities = identity_sql(identifier, schema, model.primary_key, "raw_rows", unsupported_kinds)
    con.execute(f"CREATE VIEW model_identities AS {identities}")
    resolve = resolution_sql(identifier, schema, model.primary_key, "raw_rows", unsupported_kinds)
    con.execute(f"CREATE VIEW model_rows AS {resolve}")
    try:
        total = _scalar(con, "SELECT count(*) FROM raw_rows")
        if on_rows is not None:
            on_rows(total)
        # Sorting the keys and comparing neighbours: cheaper than hashing 10M keys, and cheapest when the
        # table is already in key order, as warehouse tables often are.
        dup = con.execute(
            f"SELECT count(*), list(k ORDER BY k)[1:{SAMPLE_SIZE}] FROM ("
            "SELECT DISTINCT CAST(pk AS VARCHAR) AS k FROM ("
            f"SELECT pk, lag(pk) OVER (ORDER BY pk) AS prev FROM (SELECT {quote_column(model.primary_key)} AS pk "
            "FROM raw_rows) WHERE pk IS NOT NULL) WHERE pk = prev)"
        ).fetchall()[0]
    except duckdb.Error as exc:
        raise SourceUnavailable(f"reading the model failed: {exc}") from exc
    assert dup is not None
    if dup[0]:
        raise ModelError(
            f"the model's primary key {model.primary_key!r} is not unique: {dup[0]} duplicated value(s), "
            f"e.g. {', '.join(dup[1])}",
            count=int(dup[0]),
            samples=list(dup[1]),
        )
    return ModelInput(rows=total, schema=schema)


def rejected_rows(con: duckdb.DuckDBPyConnection, table: str) -> list[RejectedRows]:
    """Counts and samples per reason of the rejected rows in ``table`` (pk, reason)."""
    return [
        RejectedRows(reason, int(n), list(samples))
        for reason, n, samples in con.execute(
            f"SELECT reason, count(*), list(coalesce(CAST(pk AS VARCHAR), '(null)') "
            f"ORDER BY CAST(pk AS VARCHAR))[1:{SAMPLE_SIZE}] "
            f"FROM {table} WHERE reason IS NOT NULL GROUP BY reason ORDER BY reason"
        ).fetchall()
    ]


def _check_columns(columns: Sequence[str], names: Sequence[str]) -> None:
    missing = [c for c in columns if c not in names]
    if missing:
        raise ModelError(f"the model has no column {', '.join(repr(c) for c in missing)} (it has: {', '.join(names)})")


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    row = con.execute(sql).fetchall()[0]
    assert row is not None
    return int(row[0])
