"""SQLite engine: writers of one process queue on a lock whose bounded wait fails like SQLite's busy timeout."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from cohortflow.platform.store.engine import make_engine


def test_sqlite_writer_wait_is_bounded_and_wrapped_like_a_driver_error(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}", write_wait_seconds=0.2)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    holding, release = threading.Event(), threading.Event()

    def long_writer() -> None:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (1)"))
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=long_writer)
    thread.start()
    assert holding.wait(10)
    with pytest.raises(OperationalError, match="database is locked"), engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (2)"))
    release.set()
    thread.join()
    with engine.begin() as conn:  # the lock was released: the next writer gets in, and only row 1 exists
        assert conn.execute(text("SELECT x FROM t")).scalars().all() == [1]
    engine.dispose()
