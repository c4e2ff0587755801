"""A ``limits`` storage over a table of the product's own database (key, count, expires_at).

The login throttle needs counters every server process shares; a product hands the kit its engine and a table
with these three columns, and failed sign-ins are counted there (a fixed window per key).
"""

from __future__ import annotations

import time
from typing import Any

from limits.storage import Storage
from sqlalchemy import Engine, Table, case, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError


class TableCounterStorage(Storage):
    STORAGE_SCHEME = None

    def __init__(self, engine: Engine, table: Table) -> None:
        super().__init__(wrap_exceptions=False)
        self.engine = engine
        self.table = table

    @property
    def base_exceptions(self) -> type[Exception]:
        return SQLAlchemyError

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        c = self.table.c
        dialect: Any = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        insert = dialect.insert(self.table).values(key=key, count=amount, expires_at=now + expiry)
        ended = c.expires_at <= now
        statement = insert.on_conflict_do_update(
            index_elements=[c.key],
            set_={
                "count": case((ended, insert.excluded.count), else_=c.count + insert.excluded.count),
                "expires_at": case((ended, insert.excluded.expires_at), else_=c.expires_at),
            },
        ).returning(c.count)
        with self.engine.begin() as conn:
            return int(conn.execute(statement).scalar_one())

    def _live(self, key: str, column: Any) -> Any:
        with self.engine.connect() as conn:
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
        with self.engine.begin() as conn:
            return int(conn.execute(delete(self.table)).rowcount)

    def clear(self, key: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(self.table).where(self.table.c.key == key))
