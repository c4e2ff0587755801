"""A ``limits`` storage over a table of the product's own database (key, count, expires_at).

Counters every server process must share (the platform's partner request budget, the login throttles of both
web apps) live in a table with these three columns. A hit is one upsert; a window that has ended restarts at
the next hit, so rows never need sweeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from limits.storage import Storage
from sqlalchemy import Connection, Engine, Table, case, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

Transaction = Callable[[], AbstractContextManager[Connection]]


class TableCounterStorage(Storage):
    """Fixed-window counters in ``table``; ``transaction`` opens the unit of work each call runs in (by default
    ``engine.begin``; the platform bounds its lock waits)."""

    STORAGE_SCHEME = None

    def __init__(self, engine: Engine, table: Table, transaction: Transaction | None = None) -> None:
        super().__init__(wrap_exceptions=False)
        self.engine = engine
        self.table = table
        self._transaction: Transaction = transaction or engine.begin

    @property
    def base_exceptions(self) -> type[Exception]:
        return SQLAlchemyError

    def hit_window(self, key: str, expiry: int, amount: int = 1, conn: Connection | None = None) -> tuple[int, float]:
        """Add ``amount`` to ``key``'s window and return its count and end (epoch seconds) after the hit.

        One statement: the fixed window's whole hit, and everything ``X-RateLimit-*`` needs. With ``conn`` it
        runs in that transaction (the caller commits it).
        """
        if conn is None:
            with self._transaction() as own:
                return self.hit_window(key, expiry, amount, own)
        now = time.time()
        c = self.table.c
        dialect: Any = postgresql if conn.dialect.name == "postgresql" else sqlite
        insert = dialect.insert(self.table).values(key=key, count=amount, expires_at=now + expiry)
        ended = c.expires_at <= now
        statement = insert.on_conflict_do_update(
            index_elements=[c.key],
            set_={
                "count": case((ended, insert.excluded.count), else_=c.count + insert.excluded.count),
                "expires_at": case((ended, insert.excluded.expires_at), else_=c.expires_at),
            },
        ).returning(c.count, c.expires_at)
        count, expires_at = conn.execute(statement).one()
        return int(count), float(expires_at)

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return self.hit_window(key, expiry, amount)[0]

    def _live(self, key: str, column: Any) -> Any:
        with self._transaction() as conn:
            return conn.execute(
                select(column).where(self.table.c.key == key, self.table.c.expires_at > time.time())
            ).scalar()

    def get(self, key: str) -> int:
        return int(self._live(key, self.table.c.count) or 0)

    def get_expiry(self, key: str) -> float:
        value = self._live(key, self.table.c.expires_at)
        return float(value) if value is not None else time.time()

    def check(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(select(1))
            return True
        except SQLAlchemyError:
            return False

    def reset(self) -> int | None:
        with self._transaction() as conn:
            return int(conn.execute(delete(self.table)).rowcount)

    def clear(self, key: str) -> None:
        with self._transaction() as conn:
            conn.execute(delete(self.table).where(self.table.c.key == key))
