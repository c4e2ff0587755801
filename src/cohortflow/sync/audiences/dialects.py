"""Which SQL dialect a source speaks, and the few fragments whose portable form differs per warehouse.

The compiler builds one sqlglot expression tree; sqlglot renders it for the source's dialect (DuckDB,
PostgreSQL and SQLite are tested; Snowflake, BigQuery, Redshift, Databricks and the rest of sqlglot's dialects
come through the same renderer). What sqlglot cannot make portable is decided here:

- SQLite has no date or time types: temporal columns and values are normalized with ``DATE()`` /
  ``DATETIME()`` so that ``2024-05-01T10:00:00Z`` and ``2024-05-01 10:00:00`` compare as the same moment.
- A split's bucket is ``int(md5(salt || ':' || key)[:8], 16) % 10000`` everywhere. DuckDB and PostgreSQL read
  the hex digits natively; elsewhere they are summed digit by digit, which any SQL with ``MD5`` can do
  (SQLite gets ``md5`` from the source connection, see :mod:`cohortflow.sync.sources`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect

from cohortflow.sync.audiences.config import BUCKETS
from cohortflow.sync.config import DuckDBSource, PostgresSource, SourceConfig, SQLAlchemySource, SQLiteSource
from cohortflow.sync.errors import ConfigError

HEX_DIGITS = 8  # 32 bits of the MD5: plenty for 10,000 buckets, and an integer in every warehouse

# SQLAlchemy backend names whose sqlglot dialect has another name.
_BACKENDS = {"postgresql": "postgres", "mssql": "tsql", "awsathena": "athena"}


def source_dialect(source_name: str, source: SourceConfig) -> str:
    """The sqlglot dialect name of a source; :class:`ConfigError` when sqlglot knows none for it."""
    if isinstance(source, DuckDBSource):
        return "duckdb"
    if isinstance(source, SQLiteSource):
        return "sqlite"
    if isinstance(source, PostgresSource):
        return "postgres"
    assert isinstance(source, SQLAlchemySource)
    try:
        backend = make_url(source.url.get_secret_value()).get_backend_name()
    except ArgumentError as exc:
        raise ConfigError(f"source {source_name!r}: cannot read its URL: {exc}") from None
    name = _BACKENDS.get(backend, backend)
    if Dialect.get(name) is None:
        raise ConfigError(
            f"source {source_name!r}: audiences compile to SQL through sqlglot, which has no dialect for the "
            f"SQLAlchemy backend {backend!r}"
        )
    return name


@dataclass(frozen=True)
class DialectRules:
    name: str

    @property
    def correlated(self) -> bool:
        """Whether related and event conditions compile to ``EXISTS`` / correlated counts rather than keys
        ``IN`` grouped subqueries. DuckDB decorrelates the former into joins restricted to the people still
        selected; PostgreSQL would run a correlated count once per row, and SQLite always does, so they (and
        the untested dialects) get the uncorrelated form, which every engine runs as one hash semi-join."""
        return self.name == "duckdb"

    def temporal(self, expression: exp.Expr, kind: str) -> exp.Expr:
        """A temporal column or literal as the dialect compares it (``kind``: date or timestamp)."""
        if self.name == "sqlite" or isinstance(expression, exp.Literal):
            return exp.cast(expression, "DATE" if kind == "date" else "TIMESTAMP")
        return expression

    def bucket(self, key_text: exp.Expr) -> exp.Expr:
        """The split bucket (0..9999) of a text key."""
        digest = exp.Lower(this=exp.MD5(this=key_text))
        head = exp.Substring(this=digest, start=exp.Literal.number(1), length=exp.Literal.number(HEX_DIGITS))
        if self.name == "duckdb":
            number: exp.Expr = exp.cast(exp.DPipe(this=exp.Literal.string("0x"), expression=head), "BIGINT")
        elif self.name == "postgres":
            bits = exp.DataType.build(f"BIT({HEX_DIGITS * 4})", dialect="postgres")
            hex_bits = exp.Paren(this=exp.DPipe(this=exp.Literal.string("x"), expression=head))
            number = exp.cast(exp.cast(hex_bits, bits), "BIGINT")
        else:
            terms = [
                exp.Mul(
                    this=exp.Paren(
                        this=exp.Sub(
                            this=exp.StrPosition(
                                this=exp.Literal.string("0123456789abcdef"),
                                substr=exp.Substring(
                                    this=digest, start=exp.Literal.number(i + 1), length=exp.Literal.number(1)
                                ),
                            ),
                            expression=exp.Literal.number(1),
                        )
                    ),
                    expression=exp.Literal.number(16 ** (HEX_DIGITS - 1 - i)),
                )
                for i in range(HEX_DIGITS)
            ]
            number = exp.Paren(this=_sum(terms))
        return exp.Mod(this=number, expression=exp.Literal.number(BUCKETS))


def _sum(terms: Sequence[exp.Expr]) -> exp.Expr:
    total = terms[0]
    for term in terms[1:]:
        total = exp.Add(this=total, expression=term)
    return total
