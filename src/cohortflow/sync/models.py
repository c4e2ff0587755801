"""Models: a SQL query or a table in a source, with a required primary key.

:func:`materialize` streams the model's rows out of the source as Arrow batches straight into a DuckDB
table (only the primary key and the identifier columns), resolves each row's identity in SQL, and checks
the rules: duplicate primary keys fail the run (count and samples); rows without a usable identifier are
rejected, counted and sampled by reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import duckdb

from cohortflow.sync.config import IdentifierConfig, ModelConfig
from cohortflow.sync.errors import ModelError, SourceUnavailable
from cohortflow.sync.identifiers import identifier_columns, quote_column, resolution_sql
from cohortflow.sync.sources import Source, model_query

SAMPLE_SIZE = 5


@dataclass
class RejectedRows:
    reason: str
    count: int
    samples: list[str] = field(default_factory=list)  # primary keys

    def as_dict(self) -> dict[str, object]:
        return {"reason": self.reason, "count": self.count, "samples": self.samples}


@dataclass
class ModelStats:
    rows: int
    valid_rows: int
    rejected: list[RejectedRows]


def materialize(
    con: duckdb.DuckDBPyConnection,
    source: Source,
    model: ModelConfig,
    identifier: IdentifierConfig,
    *,
    unsupported_kinds: Sequence[str] = (),
    on_rows: Callable[[int], None] | None = None,
) -> ModelStats:
    """Fill the DuckDB tables ``model_rows`` (pk, kind, label, value, reason) and ``desired`` (valid identities)."""
    query = model_query(model)
    with source.stream(query, model.batch_rows) as reader:
        columns = [model.primary_key, *identifier_columns(identifier)]
        missing = [c for c in columns if c not in reader.schema.names]
        if missing:
            raise ModelError(
                f"the model has no column {', '.join(repr(c) for c in missing)} "
                f"(it has: {', '.join(reader.schema.names)})"
            )
        select_list = ", ".join(quote_column(c) for c in dict.fromkeys(columns))
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
    resolve = resolution_sql(identifier, schema, model.primary_key, "raw_rows", unsupported_kinds)
    con.execute(f"CREATE TABLE model_rows AS {resolve}")
    con.execute("DROP TABLE raw_rows")

    dup = con.execute(
        "SELECT count(*), list(pk ORDER BY pk)[1:" + str(SAMPLE_SIZE) + "] FROM "
        "(SELECT pk FROM model_rows WHERE pk IS NOT NULL GROUP BY pk HAVING count(*) > 1)"
    ).fetchall()[0]
    assert dup is not None
    if dup[0]:
        raise ModelError(
            f"the model's primary key {model.primary_key!r} is not unique: {dup[0]} duplicated value(s), "
            f"e.g. {', '.join(dup[1])}",
            count=int(dup[0]),
            samples=list(dup[1]),
        )
    rejected = [
        RejectedRows(reason, int(n), list(samples))
        for reason, n, samples in con.execute(
            f"SELECT reason, count(*), list(coalesce(pk, '(null)') ORDER BY pk)[1:{SAMPLE_SIZE}] "
            "FROM model_rows WHERE reason IS NOT NULL GROUP BY reason ORDER BY reason"
        ).fetchall()
    ]
    con.execute("CREATE TABLE desired AS SELECT DISTINCT kind, label, value FROM model_rows WHERE reason IS NULL")
    total = con.execute("SELECT count(*) FROM model_rows").fetchall()[0]
    assert total is not None
    return ModelStats(rows=int(total[0]), valid_rows=int(total[0]) - sum(r.count for r in rejected), rejected=rejected)
