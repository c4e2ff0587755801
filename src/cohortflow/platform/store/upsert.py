"""The dialect's INSERT, for ``ON CONFLICT`` clauses (both SQLite and PostgreSQL have them; Core's generic
``insert`` does not)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite


def upsert_insert(conn: Connection, table: Any) -> Any:
    """``INSERT INTO table`` in the connection's dialect, with ``on_conflict_do_nothing`` / ``..._do_update``."""
    return dialect_insert(conn.dialect.name, table)


def dialect_insert(dialect: str, table: Any) -> Any:
    """:func:`upsert_insert` for the dialect named ``dialect``: for statements built once and kept."""
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
