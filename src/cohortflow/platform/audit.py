"""The cohort import audit: one row per ``/cohorts/users`` request that passed validation.

The row is written in the import's own transaction, so an audit row exists exactly when the request's changes
were applied. Retention is bounded by ``audit_retention_days``: old rows are deleted in small batches, at most
once a minute per process, outside any import transaction (so pruning never holds an import's locks).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, insert, select

from cohortflow.clock import as_utc, utcnow
from cohortflow.platform.store.schema import cohort_imports

PRUNE_INTERVAL_SECONDS = 60.0
PRUNE_BATCH_SIZE = 10_000


@dataclass(frozen=True)
class ImportRecord:
    at: datetime
    received: int
    matched: int
    unmatched: int
    added: int
    removed: int
    unchanged: int
    unmatched_sample: list[dict[str, str]]


SAMPLE_VALUE_MAX_CHARS = 256


def describe_identifier(sample: object) -> str:
    """An unmatched sample as people read it: ``user_id=u1``, or an alias as ``alias label:name``."""
    if isinstance(sample, dict):
        if set(sample) == {"alias_name", "alias_label"}:
            return f"alias {sample['alias_label']}:{sample['alias_name']}"
        return ", ".join(f"{k}={v}" for k, v in sample.items())
    return str(sample)


def _printable(value: str) -> str:
    """A sample value as stored: NUL replaced (JSONB refuses it) and cut short, so a row stays small."""
    value = value.replace("\x00", "\ufffd")
    return value if len(value) <= SAMPLE_VALUE_MAX_CHARS else value[: SAMPLE_VALUE_MAX_CHARS - 1] + "…"


def record_import(
    conn: Connection,
    *,
    workspace_id: str,
    partner_id: int,
    cohort_pk: int,
    at: datetime,
    received: int,
    matched: int,
    unmatched: int,
    added: int,
    removed: int,
    unchanged: int,
    unmatched_sample: Sequence[dict[str, str]],
) -> None:
    conn.execute(
        insert(cohort_imports).values(
            workspace_id=workspace_id,
            partner_id=partner_id,
            cohort_pk=cohort_pk,
            at=at,
            received=received,
            matched=matched,
            unmatched=unmatched,
            added=added,
            removed=removed,
            unchanged=unchanged,
            unmatched_sample=[{k: _printable(v) for k, v in item.items()} for item in unmatched_sample],
        )
    )


def recent_imports(conn: Connection, cohort_pk: int, limit: int = 10) -> list[ImportRecord]:
    """The cohort's latest imports, newest first."""
    t = cohort_imports
    rows = conn.execute(
        select(
            t.c.at,
            t.c.received,
            t.c.matched,
            t.c.unmatched,
            t.c.added,
            t.c.removed,
            t.c.unchanged,
            t.c.unmatched_sample,
        )
        .where(t.c.cohort_pk == cohort_pk)
        .order_by(t.c.at.desc(), t.c.id.desc())
        .limit(limit)
    )
    return [
        ImportRecord(
            at=as_utc(r.at),
            received=int(r.received),
            matched=int(r.matched),
            unmatched=int(r.unmatched),
            added=int(r.added),
            removed=int(r.removed),
            unchanged=int(r.unchanged),
            unmatched_sample=list(r.unmatched_sample or []),
        )
        for r in rows
    ]


def prune_expired(
    conn: Connection, *, retention_days: int, now: datetime | None = None, batch_size: int = PRUNE_BATCH_SIZE
) -> int:
    """Delete up to ``batch_size`` audit rows older than the retention; returns how many went.

    The batch keeps each delete short even after a long pause; the next prune takes the rest.
    """
    cutoff = (now or utcnow()) - timedelta(days=retention_days)
    t = cohort_imports
    expired = select(t.c.id).where(t.c.at < cutoff).order_by(t.c.at).limit(batch_size)
    return int(conn.execute(delete(t).where(t.c.id.in_(expired))).rowcount or 0)


_last_prune: dict[str, float] = {}
_last_prune_lock = threading.Lock()


def prune_due(database_key: str, *, interval: float = PRUNE_INTERVAL_SECONDS) -> bool:
    """Claim this process's pruning slot for ``database_key``; true at most once per ``interval`` seconds."""
    now = time.monotonic()
    with _last_prune_lock:
        last = _last_prune.get(database_key)
        if last is not None and now - last < interval:
            return False
        _last_prune[database_key] = now
        return True
