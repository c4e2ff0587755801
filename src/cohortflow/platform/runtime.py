"""What a running platform process holds: settings, the database engine and the rate limiter.

The same runtime serves the HTTP API, the operator CLI and the dashboard, so every entry point calls the
same domain functions with the same engine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import TypeVar

from sqlalchemy import Connection, Engine

from cohortflow.clock import Clock, utcnow
from cohortflow.platform.ratelimit import PartnerRateLimiter
from cohortflow.platform.store.engine import NO_WAIT, READ_ONLY, is_sqlite, make_engine, migrate, retry_collisions
from cohortflow.settings import PlatformSettings

T = TypeVar("T")


@dataclass
class PlatformRuntime:
    settings: PlatformSettings
    engine: Engine
    clock: Clock = field(default=utcnow)

    @classmethod
    def open(cls, settings: PlatformSettings, *, run_migrations: bool = True) -> PlatformRuntime:
        engine = make_engine(
            settings.database_url,
            pool_size=settings.db_pool_size,
            write_wait_seconds=settings.cohort_lock_wait_seconds,
        )
        if run_migrations:
            migrate(engine)
        return cls(settings=settings, engine=engine)

    @cached_property
    def rate_limiter(self) -> PartnerRateLimiter:
        """The partner rate limiter (its counters live where ``rate_limit_storage_uri`` says)."""
        return PartnerRateLimiter.from_settings(self.settings, self.engine)

    @contextmanager
    def transaction(self, *, wait: bool = True) -> Iterator[Connection]:
        """One unit of work: all of it commits, or none of it does.

        ``wait=False``: on SQLite, raise :class:`~cohortflow.platform.store.engine.WriterBusy` before anything
        begins when another transaction holds the one writer lock, instead of waiting for it (a caller on the
        event loop must not block it); on PostgreSQL, which locks rows and not the database, no difference.
        """
        if wait:
            with self.engine.begin() as conn:
                yield conn
            return
        with self.engine.connect() as conn:
            conn.execution_options(**{NO_WAIT: True})
            with conn.begin():
                yield conn

    def in_transaction(self, work: Callable[[Connection], T]) -> T:
        """``work`` in one :meth:`transaction`, run again from the start when PostgreSQL aborts it for a deadlock or
        a serialization failure with a concurrent transaction (:func:`~cohortflow.platform.store.engine.
        retry_collisions`): for requests whose only effects are in the database, such a collision is nobody's
        error, and the caller should not see it."""

        def attempt() -> T:
            with self.transaction() as conn:
                return work(conn)

        return retry_collisions(attempt)

    @cached_property
    def single_writer(self) -> bool:
        """Whether the database takes one writer at a time (SQLite): writes then gain nothing from threads."""
        return is_sqlite(self.engine)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A unit of work that only reads: one consistent snapshot, and on SQLite no wait for (or block of) the
        one writer that :meth:`transaction` serializes on. Writing inside it is a bug (SQLite refuses it late)."""
        with self.engine.connect() as conn:
            conn.execution_options(**{READ_ONLY: True})
            with conn.begin():
                yield conn

    def close(self) -> None:
        self.engine.dispose()
