"""Engine factory and schema migration for the platform database (SQLite or PostgreSQL)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from cohortflow.fresh_schema import create_if_empty
from cohortflow.platform.store.schema import metadata

if TYPE_CHECKING:
    from alembic.config import Config

T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any constant works; it only has to be the same for every process migrating the same database.
_PG_MIGRATION_LOCK = 0x636F686F


def normalize_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` and use psycopg 3, the driver we ship."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


# PostgreSQL's deadlock_detected and serialization_failure: the server aborted the transaction for colliding with a
# concurrent one, so nothing of it was applied and the same work can simply run again.
_COLLISION_SQLSTATES = frozenset({"40P01", "40001"})
#: How often work that collides is tried in all.
COLLISION_ATTEMPTS = 4


def is_collision(exc: BaseException) -> bool:
    """Whether ``exc`` is PostgreSQL aborting a transaction for a deadlock or a serialization failure."""
    return getattr(getattr(exc, "orig", None), "sqlstate", None) in _COLLISION_SQLSTATES


def retry_collisions(work: Callable[[], T], attempts: int = COLLISION_ATTEMPTS) -> T:
    """``work()``, run again when the database aborted it for colliding with a concurrent transaction.

    ``work`` must be one transaction (or one autocommitted statement) and nothing outside the database: then an
    aborted try left nothing behind. The pause before a new try is random, so two requests that deadlocked do
    not meet again in the same order; after ``attempts`` tries the last collision is raised (a retryable 503).
    """
    try:
        # The first try outside tenacity: its retry state costs a tenth of a /users/track request's CPU.
        return work()
    except DBAPIError as exc:
        if not is_collision(exc) or attempts <= 1:
            raise
    # Imported on the first collision only: every process that opens the database imports this module.
    from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random

    retrying = Retrying(
        retry=retry_if_exception(is_collision),
        stop=stop_after_attempt(attempts - 1),
        wait=wait_random(0.005, 0.05),
        reraise=True,
    )
    return retrying(work)


# Execution option of a connection that only reads (``PlatformRuntime.read``): on SQLite it begins without the
# write lock that every other transaction takes up front.
READ_ONLY = "cf_read_only"
# Execution option of a transaction that must not wait for SQLite's one writer (``PlatformRuntime.transaction(
# wait=False)``): its BEGIN raises :class:`WriterBusy` at once instead. Other databases ignore it.
NO_WAIT = "cf_no_wait"
_BUSY_TIMEOUT_MS = 30_000


class WriterBusy(Exception):
    """Another transaction holds SQLite's writer lock; nothing has begun, so the caller may go and wait elsewhere."""


def make_engine(url: str, *, pool_size: int = 10, echo: bool = False, write_wait_seconds: float = 30.0) -> Engine:
    """An engine for SQLite (WAL, IMMEDIATE transactions) or PostgreSQL (psycopg 3, pooled).

    ``write_wait_seconds`` bounds how long a SQLite transaction waits for the process's other writers;
    past it the wait fails like SQLite's own busy timeout (``database is locked``).
    """
    url = normalize_url(url)
    kwargs: dict[str, Any] = {"echo": echo, "future": True}
    if url.startswith("sqlite"):
        # Each request gets its own connection; SQLite itself serializes writers (WAL lets readers go on).
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # pysqlite's own transaction handling would defer BEGIN; we issue BEGIN ourselves (below).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            cur.close()

        # SQLite's busy handler sleeps in growing steps (up to 100 ms) while another connection writes, so
        # threads of one process queue on this lock instead; other processes still meet busy_timeout.
        writer = threading.RLock()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            options = conn.get_execution_options()
            if options.get(READ_ONLY):
                # A reader: a deferred BEGIN reads a WAL snapshot and waits for no writer (nor blocks one).
                conn.exec_driver_sql("BEGIN")
                return
            no_wait = bool(options.get(NO_WAIT))
            if not (writer.acquire(blocking=False) if no_wait else writer.acquire(timeout=write_wait_seconds)):
                if no_wait:
                    raise WriterBusy
                # The same error SQLite's busy timeout gives, wrapped as SQLAlchemy wraps driver errors, so
                # callers map both waits alike (423 for imports, 503 elsewhere).
                raise OperationalError("BEGIN IMMEDIATE", None, sqlite3.OperationalError("database is locked"))
            conn.info["cf_writer_lock"] = True
            try:
                # IMMEDIATE takes the write lock at BEGIN, so two writers never deadlock on lock upgrade.
                if no_wait:
                    _begin_immediate_or_busy(conn.connection.driver_connection)
                else:
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                _release(conn)
                raise

        def _release(conn: Any) -> None:
            if conn.info.pop("cf_writer_lock", False):
                writer.release()

        event.listen(engine, "commit", _release)
        event.listen(engine, "rollback", _release)

        return engine
    kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
    return create_engine(url, **kwargs)


def _begin_immediate_or_busy(raw: sqlite3.Connection) -> None:
    """``BEGIN IMMEDIATE`` without SQLite's busy wait: another process's writer makes it :class:`WriterBusy`."""
    raw.execute("PRAGMA busy_timeout=0")
    try:
        raw.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise WriterBusy from exc
        raise
    finally:
        raw.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")


def alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return cfg


def migrate(engine: Engine) -> None:
    """Create or upgrade the schema to the newest revision. Safe to call from many processes at once.

    A brand-new SQLite database gets the schema of :mod:`~cohortflow.platform.store.schema` in one go, stamped
    with the newest revision (:mod:`cohortflow.fresh_schema`; ``tests/platform/test_migrations.py`` compares it
    with every migration in turn, object by object).
    """
    if create_if_empty(engine, metadata, MIGRATIONS_DIR / "versions", "alembic_version"):
        return
    upgrade_with_alembic(engine)


def upgrade_with_alembic(engine: Engine) -> None:
    """Run every migration the database lacks (:func:`migrate` skips them only for a brand-new SQLite file)."""
    from alembic import command

    cfg = alembic_config(engine)
    sqlite = is_sqlite(engine)
    with engine.connect() as conn:
        if sqlite:
            # SQLite's procedure for altering tables (sqlite.org/lang_altertable.html): with foreign keys on, the
            # DROP of the old copy a batch migration makes of a parent table cascade-deletes its children's rows.
            # The pragma is a no-op inside a transaction, so it goes to the driver before the migration's BEGIN.
            conn.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
        else:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        try:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            if sqlite and conn.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
                raise RuntimeError("a migration left rows that break a foreign key; nothing was committed")
            conn.commit()
        finally:
            if sqlite:
                conn.rollback()
                conn.connection.driver_connection.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]
            else:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_MIGRATION_LOCK})
                conn.commit()


# Below this many new rows the planner's guess cannot cost much; above it, a stale guess can (see below).
ANALYZE_AFTER_ROWS = 10_000


def refresh_statistics(engine: Engine, table: str, *, new_rows: int) -> None:
    """Give PostgreSQL's planner fresh statistics on ``table`` after a bulk write of ``new_rows`` rows.

    Autovacuum analyzes a table only a minute or more after it grew, and under load much later. Until then a
    delivery table that just received a million ``pending`` rows is believed empty, and a claim (``... ORDER BY
    user_id LIMIT 500``) is planned as a bitmap scan of every remaining row plus a sort: 385 ms a claim instead of
    a walk of 500 index entries. ANALYZE samples a fixed number of rows, so it costs about the same at any size;
    it runs in its own transaction so that its lock is not held until the caller commits.
    """
    if engine.dialect.name != "postgresql" or new_rows < ANALYZE_AFTER_ROWS:
        return
    with engine.begin() as conn:
        conn.exec_driver_sql(f"ANALYZE {table}")
