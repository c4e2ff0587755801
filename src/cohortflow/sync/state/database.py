"""Engine and migrations of the sync state database.

SQLite runs in WAL mode: a committed transaction survives the process being killed (it is in the WAL file
the moment COMMIT returns), which is what lets a run commit per acknowledged batch and be killed anywhere.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

from cohortflow.fresh_schema import create_if_empty
from cohortflow.sync.state.schema import metadata

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_PG_MIGRATION_LOCK = 0x73796E63  # any constant shared by every process migrating the same database
# Its own version table, so the sync state may share a PostgreSQL database with the platform.
VERSION_TABLE = "sync_alembic_version"


def normalize_url(url: str) -> str:
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_state_engine(url: str) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, below
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            # IMMEDIATE takes the write lock at BEGIN, so two processes never deadlock upgrading a read lock.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_size=4, max_overflow=4, pool_pre_ping=True)


def migrate(engine: Engine) -> None:
    """Create or upgrade the state schema to the newest revision; safe from many processes at once.

    A brand-new SQLite database gets the schema of :mod:`~cohortflow.sync.state.schema` in one go, stamped with
    the newest revision (:mod:`cohortflow.fresh_schema`; ``tests/sync/test_state_schema.py`` compares it with every
    migration in turn, object by object).
    """
    if create_if_empty(engine, metadata, MIGRATIONS_DIR / "versions", VERSION_TABLE):
        return
    upgrade_with_alembic(engine)


def upgrade_with_alembic(engine: Engine) -> None:
    """Run every migration the database lacks (:func:`migrate` skips them only for a brand-new SQLite file)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    postgres = engine.dialect.name == "postgresql"
    with engine.connect() as conn:
        if postgres:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        alembic_log = logging.getLogger("alembic")
        level = alembic_log.level
        alembic_log.setLevel(logging.WARNING)  # its INFO lines would clutter every CLI command's output
        try:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            conn.commit()
        finally:
            alembic_log.setLevel(level)
            if postgres:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_MIGRATION_LOCK})
                conn.commit()
