"""Leases: which process is running a campaign send or advancing a Canvas.

A lease is a row's ``lease_owner`` and ``lease_expires_at``, taken with one conditional UPDATE so two
processes can never both hold it. The holder renews it while working; a process that dies stops
renewing, the lease runs out, and any other process may take over and resume the work.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Table, or_, update

from cohortflow.clock import Clock


def new_owner() -> str:
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def take_lease(
    engine: Engine,
    table: Table,
    row_id: Any,
    owner: str,
    *,
    now: datetime,
    seconds: float,
    where: list[Any],
    values: dict[str, Any] | None = None,
) -> bool:
    """Take (or re-take) the lease on ``row_id`` if it is free or expired and ``where`` holds."""
    with engine.begin() as conn:
        result = conn.execute(
            update(table)
            .where(
                table.c.id == row_id,
                or_(
                    table.c.lease_expires_at.is_(None),
                    table.c.lease_expires_at < now,
                    table.c.lease_owner == owner,
                ),
                *where,
            )
            .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=seconds), **(values or {}))
        )
    return result.rowcount == 1


class Lease:
    """A held lease; :meth:`keep` renews it when a third of its time has passed."""

    def __init__(self, engine: Engine, table: Table, row_id: Any, owner: str, *, seconds: float, clock: Clock) -> None:
        self.engine = engine
        self.table = table
        self.row_id = row_id
        self.owner = owner
        self.seconds = seconds
        self.clock = clock
        self._renewed = time.monotonic()

    def keep(self) -> bool:
        """Renew if due; False when the lease was lost (another process took it over)."""
        if time.monotonic() - self._renewed < self.seconds / 3:
            return True
        with self.engine.begin() as conn:
            result = conn.execute(
                update(self.table)
                .where(self.table.c.id == self.row_id, self.table.c.lease_owner == self.owner)
                .values(lease_expires_at=self.clock() + timedelta(seconds=self.seconds))
            )
        self._renewed = time.monotonic()
        return result.rowcount == 1

    def release(self, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(self.table)
                .where(self.table.c.id == self.row_id, self.table.c.lease_owner == self.owner)
                .values(lease_owner=None, lease_expires_at=None, **values)
            )
