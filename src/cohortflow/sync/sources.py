"""Warehouse sources: run a model's query and stream the result as Arrow record batches.

DuckDB hands Arrow batches over natively. SQLite, PostgreSQL and every other SQLAlchemy URL stream through a
server-side cursor in chunks of ``batch_rows``; their values are read as text (``NULL`` stays null), which is
what identifiers are on the wire anyway and keeps each batch's Arrow schema the same whatever the first rows
hold. Only one batch of Python values exists at a time, so memory does not grow with the model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from cohortflow.redact import redact_url
from cohortflow.sync.config import (
    DuckDBSource,
    ModelConfig,
    PostgresSource,
    SourceConfig,
    SQLAlchemySource,
    SQLiteSource,
)
from cohortflow.sync.errors import SourceUnavailable

ATTACHED = "model_source"  # the catalog name of an attached DuckDB source in the planner's database


def quote_identifier(name: str) -> str:
    """Quote a (possibly dotted) table name for DuckDB, SQLite and PostgreSQL alike."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


def model_query(model: ModelConfig) -> str:
    if model.sql is not None:
        return model.sql.strip().rstrip(";")
    assert model.table is not None
    return f"SELECT * FROM {quote_identifier(model.table)}"


def _sqlalchemy_url(source: SQLiteSource | PostgresSource | SQLAlchemySource, base_dir: Path) -> str:
    if isinstance(source, SQLiteSource):
        path = Path(source.path)
        if not path.is_absolute():
            path = base_dir / path
        if not path.exists():
            raise SourceUnavailable(f"SQLite source: file {path} does not exist")
        return f"sqlite:///{path}"
    url = source.url.get_secret_value()
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


class Source:
    """One configured warehouse. ``base_dir`` resolves relative file paths (the workspace file's folder)."""

    def __init__(self, name: str, config: SourceConfig, base_dir: Path) -> None:
        self.name = name
        self.config = config
        self.base_dir = base_dir

    def describe(self) -> str:
        cfg = self.config
        if isinstance(cfg, DuckDBSource | SQLiteSource):
            return f"{cfg.type} {cfg.path}"
        return f"{cfg.type} {redact_url(cfg.url.get_secret_value())}"

    def _duckdb_path(self) -> str:
        assert isinstance(self.config, DuckDBSource)
        if self.config.path == ":memory:":
            return ":memory:"
        path = Path(self.config.path)
        if not path.is_absolute():
            path = self.base_dir / path
        if not path.exists():
            raise SourceUnavailable(f"source {self.name!r}: DuckDB file {path} does not exist")
        return str(path)

    @contextmanager
    def stream(self, query: str, batch_rows: int = 50_000) -> Iterator[pa.RecordBatchReader]:
        """The query's rows as a stream of record batches, valid inside the ``with`` block."""
        if isinstance(self.config, DuckDBSource):
            try:
                con = duckdb.connect(self._duckdb_path(), read_only=self.config.read_only)
            except duckdb.Error as exc:
                raise SourceUnavailable(f"source {self.name!r} ({self.describe()}) is unavailable: {exc}") from exc
            try:
                try:
                    reader = con.sql(query).to_arrow_reader(batch_rows)
                except duckdb.Error as exc:
                    raise SourceUnavailable(f"source {self.name!r}: the query failed: {exc}") from exc
                yield reader
            finally:
                con.close()
            return
        url = _sqlalchemy_url(self.config, self.base_dir)
        try:
            engine = create_engine(url)
        except Exception as exc:  # an unknown dialect or a missing driver
            raise SourceUnavailable(f"source {self.name!r} ({self.describe()}): {exc}") from exc
        if isinstance(self.config, SQLiteSource):
            event.listen(engine, "connect", _sqlite_functions)
        try:
            try:
                conn = engine.connect()
            except SQLAlchemyError as exc:
                raise SourceUnavailable(
                    f"source {self.name!r} ({self.describe()}) is unavailable: {_first_line(exc)}"
                ) from exc
            with conn:
                try:
                    result = conn.execution_options(stream_results=True, max_row_buffer=batch_rows).execute(text(query))
                except SQLAlchemyError as exc:
                    raise SourceUnavailable(f"source {self.name!r}: the query failed: {_first_line(exc)}") from exc
                columns = list(result.keys())
                schema = pa.schema([(c, pa.string()) for c in columns])
                yield pa.RecordBatchReader.from_batches(schema, _text_batches(result, columns, schema, batch_rows))
        finally:
            engine.dispose()

    def attach(self, con: duckdb.DuckDBPyConnection) -> bool:
        """Attach a DuckDB source to ``con`` as ``model_source`` (read-only); False for other sources.

        The planner then reads the model where it lies instead of copying it through Arrow batches. The
        source is searched after the planner's own tables, so the model's SQL resolves unqualified names
        as it would in the warehouse, while the planner's tables (and its cursors) stay in ``memory``.
        """
        if not isinstance(self.config, DuckDBSource):
            return False
        path = self._duckdb_path()
        mode = " (READ_ONLY)" if self.config.read_only and path != ":memory:" else ""
        try:
            con.execute(f"ATTACH '{path.replace(chr(39), chr(39) * 2)}' AS {ATTACHED}{mode}")
            # Every schema of the source goes on the search path, or a schema-qualified name in the model's
            # SQL (``analytics.customers``) would be looked up in ``memory`` only.
            schemas = [
                row[0]
                for row in con.execute(
                    "SELECT schema_name FROM information_schema.schemata WHERE catalog_name = ? ORDER BY 1",
                    [ATTACHED],
                ).fetchall()
            ]
            ordered = ["main", *(s for s in schemas if s != "main")]
            search_path = ",".join(["memory.main", *(f"{ATTACHED}.{quote_identifier(s)}" for s in ordered)])
            con.execute(f"SET search_path = '{search_path.replace(chr(39), chr(39) * 2)}'")
        except duckdb.Error as exc:
            raise SourceUnavailable(f"source {self.name!r} ({self.describe()}) is unavailable: {exc}") from exc
        return True

    def test(self) -> str:
        """Connect and run a trivial query; the error says what failed."""
        with self.stream("SELECT 1 AS ok") as reader:
            reader.read_all()
        return f"source {self.name!r} ({self.describe()}) answers"

    def preview(self, query: str, limit: int = 10) -> pa.Table:
        with self.stream(f"SELECT * FROM ({query}) AS model LIMIT {int(limit)}", batch_rows=max(1, limit)) as reader:
            return reader.read_all()


def _md5(value: object) -> str | None:
    return None if value is None else hashlib.md5(str(value).encode("utf-8"), usedforsecurity=False).hexdigest()


def _sqlite_functions(dbapi_connection: Any, _record: Any) -> None:
    """SQLite has no MD5, which audience splits hash keys with (DuckDB and PostgreSQL have it built in)."""
    dbapi_connection.create_function("md5", 1, _md5, deterministic=True)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _text_batches(result: Any, columns: list[str], schema: pa.Schema, batch_rows: int) -> Iterator[pa.RecordBatch]:
    try:
        for rows in result.partitions(batch_rows):
            arrays = [pa.array([_text(row[i]) for row in rows], type=pa.string()) for i in range(len(columns))]
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)
    except SQLAlchemyError as exc:
        raise SourceUnavailable(f"the source failed while streaming rows: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
