"""SQLite engine: writers of one process queue on a lock whose bounded wait fails like SQLite's busy timeout;
a transaction that must not wait fails at once with WriterBusy, whoever holds the writer."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.exc import OperationalError

from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.store.engine import WriterBusy, make_engine
from cohortflow.settings import PlatformSettings

# Far below SQLite's 30 s busy timeout, far above any scheduling delay: "did not wait for the writer".
NOT_WAITED = 10


@contextmanager
def _writer_holding(begin: Callable[[], AbstractContextManager[Connection]]) -> Iterator[None]:
    """Another thread holds the writer lock (it has inserted row 1) for the duration of the block."""
    holding, release = threading.Event(), threading.Event()

    def long_writer() -> None:
        with begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (1)"))
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=long_writer)
    thread.start()
    assert holding.wait(10)
    try:
        yield
    finally:
        release.set()
        thread.join()


def test_sqlite_writer_wait_is_bounded_and_wrapped_like_a_driver_error(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}", write_wait_seconds=0.2)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    with (
        _writer_holding(engine.begin),
        pytest.raises(OperationalError, match="database is locked"),
        engine.begin() as conn,
    ):
        conn.execute(text("INSERT INTO t VALUES (2)"))
    with engine.begin() as conn:  # the lock was released: the next writer gets in, and only row 1 exists
        assert conn.execute(text("SELECT x FROM t")).scalars().all() == [1]
    engine.dispose()


def test_a_transaction_that_must_not_wait_is_writer_busy_at_once(tmp_path: Path) -> None:
    runtime = PlatformRuntime.open(PlatformSettings(database_url=f"sqlite:///{tmp_path / 'w.db'}"))
    with runtime.transaction() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    with _writer_holding(runtime.transaction):
        started = time.monotonic()
        with pytest.raises(WriterBusy), runtime.transaction(wait=False) as conn:
            conn.execute(text("INSERT INTO t VALUES (2)"))
        assert time.monotonic() - started < NOT_WAITED

    # Another process's writer (here another connection, outside the engine's own lock): busy at once too, and
    # the connection goes back to the pool with SQLite's usual busy wait.
    other = sqlite3.connect(tmp_path / "w.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    with pytest.raises(WriterBusy), runtime.transaction(wait=False) as conn:
        conn.execute(text("INSERT INTO t VALUES (3)"))
    assert time.monotonic() - started < NOT_WAITED
    other.execute("ROLLBACK")
    other.close()

    with runtime.transaction(wait=False) as conn:  # a free writer: the transaction runs as usual
        conn.execute(text("INSERT INTO t VALUES (4)"))
    with runtime.engine.connect() as conn:
        assert conn.execute(text("SELECT x FROM t ORDER BY x")).scalars().all() == [1, 4]
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
    runtime.close()
