"""A generated warehouse for audience tests, written identically to DuckDB, SQLite and PostgreSQL.

People (the parent) with accounts (many-to-one), orders and tickets (one-to-many; tickets join on two
columns), page views (an event with a timestamp) and logins (an event with a date). Values come from small
domains with nulls, dangling keys, future moments and moments exactly on window edges, so random filter
trees hit every rule. SQLite stores moments as text, half of them with a ``T``, as real SQLite data does.
"""

from __future__ import annotations

import random
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from sqlalchemy import create_engine, text

NOW = datetime(2030, 6, 15, 12, 0, 0)
NOW_UTC = NOW.replace(tzinfo=UTC)
TODAY = NOW.date()

# name -> [(column, arrow type, SQL type)]
TABLES: dict[str, list[tuple[str, pa.DataType, str]]] = {
    "customers": [
        ("id", pa.int64(), "BIGINT"),
        ("external_id", pa.string(), "TEXT"),
        ("email", pa.string(), "TEXT"),
        ("country", pa.string(), "TEXT"),
        ("ltv", pa.float64(), "DOUBLE PRECISION"),
        ("vip", pa.bool_(), "BOOLEAN"),
        ("signed_up_at", pa.timestamp("us"), "TIMESTAMP"),
        ("birthday", pa.date32(), "DATE"),
        ("account_id", pa.int64(), "BIGINT"),
    ],
    "accounts": [("id", pa.int64(), "BIGINT"), ("plan", pa.string(), "TEXT"), ("seats", pa.int64(), "BIGINT")],
    "orders": [
        ("order_id", pa.int64(), "BIGINT"),
        ("customer_id", pa.int64(), "BIGINT"),
        ("amount", pa.float64(), "DOUBLE PRECISION"),
        ("status", pa.string(), "TEXT"),
        ("ordered_at", pa.timestamp("us"), "TIMESTAMP"),
    ],
    "tickets": [
        ("ticket_id", pa.int64(), "BIGINT"),
        ("customer_id", pa.int64(), "BIGINT"),
        ("country", pa.string(), "TEXT"),
        ("priority", pa.int64(), "BIGINT"),
    ],
    "page_views": [
        ("view_id", pa.int64(), "BIGINT"),
        ("customer_id", pa.int64(), "BIGINT"),
        ("url", pa.string(), "TEXT"),
        ("viewed_at", pa.timestamp("us"), "TIMESTAMP"),
    ],
    "logins": [
        ("login_id", pa.int64(), "BIGINT"),
        ("customer_id", pa.int64(), "BIGINT"),
        ("day", pa.date32(), "DATE"),
        ("device", pa.string(), "TEXT"),
    ],
}

SCHEMA: dict[str, Any] = {
    "people": {
        "model": "customers",
        "identifiers": ["external_id", "email"],
        "columns": {
            "country": "text",
            "email": "text",
            "ltv": "number",
            "vip": "boolean",
            "signed_up_at": "timestamp",
            "birthday": "date",
        },
        "related": {
            "account": {
                "model": "accounts",
                "join": {"account_id": "id"},
                "cardinality": "one",
                "columns": {"plan": "text", "seats": "number"},
            },
            "orders": {
                "model": "orders",
                "join": {"id": "customer_id"},
                "columns": {"amount": "number", "status": "text", "ordered_at": "timestamp"},
            },
            "tickets": {
                "model": "tickets",
                "join": {"id": "customer_id", "country": "country"},
                "columns": {"priority": "number"},
            },
        },
        "events": {
            "page_views": {
                "model": "page_views",
                "join": {"id": "customer_id"},
                "timestamp": "viewed_at",
                "columns": {"url": "text"},
            },
            "logins": {
                "model": "logins",
                "join": {"id": "customer_id"},
                "timestamp": "day",
                "columns": {"day": "date", "device": "text"},
            },
        },
        "traits": {
            "order_count": {"relation": "orders", "aggregate": "count"},
            "paid_total": {
                "relation": "orders",
                "aggregate": "sum",
                "column": "amount",
                "where": {"type": "property", "column": "status", "operator": "equals", "value": "paid"},
            },
            "average_amount": {"relation": "orders", "aggregate": "average", "column": "amount"},
            "first_order_at": {"relation": "orders", "aggregate": "min", "column": "ordered_at"},
            "last_status": {"relation": "orders", "aggregate": "last", "column": "status", "order_by": "ordered_at"},
            "first_url": {"relation": "page_views", "aggregate": "first", "column": "url"},
            "top_url": {"relation": "page_views", "aggregate": "most_frequent", "column": "url"},
            "max_seats": {"relation": "account", "aggregate": "max", "column": "seats"},
            "last_login": {"relation": "logins", "aggregate": "max", "column": "day"},
        },
    }
}


@dataclass
class Data:
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def rows(self, table: str) -> list[dict[str, Any]]:
        return self.tables[table]


def generate(seed: int = 7, people: int = 80) -> Data:
    rng = random.Random(seed)

    def moment(max_days: int) -> datetime | None:
        if rng.random() < 0.1:
            return None
        choice = rng.random()
        if choice < 0.1:  # exactly on a window's edge
            return NOW - timedelta(days=rng.choice([7, 30, 90]))
        if choice < 0.15:  # in the future of "now"
            return NOW + timedelta(hours=rng.randint(1, 100))
        return NOW - timedelta(seconds=rng.randint(0, max_days * 86_400))

    def pick(*values: Any) -> Any:
        return rng.choice(values)

    data = Data()
    data.tables["accounts"] = [
        {"id": i, "plan": pick("free", "pro", "team", None), "seats": pick(1, 5, 20, None)} for i in range(1, 6)
    ]
    data.tables["customers"] = [
        {
            "id": i,
            "external_id": f"u{i}",
            "email": pick(f"p{i}@example.com", f"p{i}@corp.io", None),
            "country": pick("FR", "DE", "US", "fr", None),
            "ltv": pick(None, 0.0, 5.5, 10.0, 99.5, 100.0, 250.0),
            "vip": pick(True, False, None),
            "signed_up_at": moment(400),
            "birthday": pick(None, date(1990, 1, 1), date(1985, 6, 15), TODAY - timedelta(days=rng.randint(0, 60))),
            "account_id": pick(1, 2, 3, 4, 5, None, 99),
        }
        for i in range(1, people + 1)
    ]
    countries = ("FR", "DE", "US", None)
    data.tables["orders"] = [
        {
            "order_id": i,
            "customer_id": pick(*range(1, people + 1), None, 999),
            "amount": pick(None, 5.0, 10.0, 20.0, 50.0, 120.0),
            "status": pick("paid", "refunded", "pending", None),
            "ordered_at": moment(200),
        }
        for i in range(1, people * 3)
    ]
    data.tables["tickets"] = [
        {
            "ticket_id": i,
            "customer_id": rng.randint(1, people),
            "country": pick(*countries),
            "priority": pick(1, 2, 3),
        }
        for i in range(1, people)
    ]
    data.tables["page_views"] = [
        {
            "view_id": i,
            "customer_id": pick(*range(1, people // 2), None),
            "url": pick("home", "pricing", "blog", "docs", None),
            "viewed_at": moment(90),
        }
        for i in range(1, people * 5)
    ]
    data.tables["logins"] = [
        {
            "login_id": i,
            "customer_id": rng.randint(1, people),
            "day": TODAY - timedelta(days=rng.randint(-2, 60)),
            "device": pick("ios", "web", None),
        }
        for i in range(1, people * 2)
    ]
    return data


def _arrow(table: str, rows: list[dict[str, Any]]) -> pa.Table:
    columns = TABLES[table]
    return pa.table({c: pa.array([r[c] for r in rows], type=t) for c, t, _ in columns})


def write_duckdb(data: Data, path: Path) -> dict[str, Any]:
    con = duckdb.connect(str(path))
    try:
        for table, rows in data.tables.items():
            con.register("incoming", _arrow(table, rows))
            con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM incoming")
            con.unregister("incoming")
    finally:
        con.close()
    return {"type": "duckdb", "path": str(path)}


def _sqlite_value(value: Any, row_number: int) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, datetime):
        return value.isoformat(sep="T" if row_number % 2 else " ")
    if isinstance(value, date):
        return value.isoformat()
    return value


def write_sqlite(data: Data, path: Path) -> dict[str, Any]:
    con = sqlite3.connect(path)
    try:
        for table, rows in data.tables.items():
            columns = TABLES[table]
            types = {"BIGINT": "INTEGER", "DOUBLE PRECISION": "REAL", "BOOLEAN": "INTEGER"}
            ddl = ", ".join(f"{c} {types.get(sql, 'TEXT')}" for c, _, sql in columns)
            con.execute(f"DROP TABLE IF EXISTS {table}")
            con.execute(f"CREATE TABLE {table} ({ddl})")
            con.executemany(
                f"INSERT INTO {table} VALUES ({', '.join('?' for _ in columns)})",
                [[_sqlite_value(r[c], n) for c, _, _ in columns] for n, r in enumerate(rows)],
            )
        con.commit()
    finally:
        con.close()
    return {"type": "sqlite", "path": str(path)}


def write_postgres(data: Data, url: str) -> dict[str, Any]:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.begin() as conn:
            for table, rows in data.tables.items():
                columns = TABLES[table]
                conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
                conn.execute(text(f"CREATE TABLE {table} ({', '.join(f'{c} {sql}' for c, _, sql in columns)})"))
                if rows:
                    names = [c for c, _, _ in columns]
                    conn.execute(
                        text(f"INSERT INTO {table} VALUES ({', '.join(':' + n for n in names)})"),
                        [{n: r[n] for n in names} for r in rows],
                    )
    finally:
        engine.dispose()
    return {"type": "postgres", "url": url}


def models(orders_as_sql: bool = True) -> dict[str, Any]:
    """Every table as a model of source ``wh``; ``orders`` as SQL, so pasted model SQL is exercised too."""
    out: dict[str, Any] = {
        name: {"source": "wh", "table": name, "primary_key": cols[0][0]} for name, cols in TABLES.items()
    }
    if orders_as_sql:
        out["orders"] = {"source": "wh", "sql": "SELECT * FROM orders -- every order", "primary_key": "order_id"}
    return out


def workspace_doc(source: dict[str, Any], audiences: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "sources": {"wh": source},
        "models": models(),
        "parents": SCHEMA,
        "audiences": audiences or {},
        **extra,
    }
