"""Schedules: when each sync is next due, and queueing the runs that are due.

Per sync (``schedule:`` in ``cohortflow.yaml``): ``manual``, ``interval`` (every N minutes), ``cron`` (an
expression read in a time zone) or ``after`` (each time another sync's run succeeds). The state database keeps,
per sync, the schedule last seen and the next due time (``sync_schedules``), so every ``sync serve`` process
agrees, and a restart knows what it missed.

Missed runs run once, not as a backlog: a sync due while no service was running is queued once at the next
tick, and its next due time is computed from *now*. An ``after`` sync fires once per upstream success it has not
seen; successes from before the schedule existed never fire it. Time comes from the store's clock, so tests
drive schedules with a fake clock.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter
from sqlalchemy import Connection, select, update
from sqlalchemy.dialects import postgresql, sqlite

from cohortflow.clock import as_utc
from cohortflow.sync.config import AfterSchedule, CronSchedule, IntervalSchedule, ScheduleConfig, SyncConfig
from cohortflow.sync.queue import enqueue_in
from cohortflow.sync.runs import QUEUED, SUCCEEDED, RunOptions
from cohortflow.sync.state.schema import sync_runs, sync_schedules
from cohortflow.sync.workspace import Workspace

SCHEDULE_TRIGGER = "schedule"


def schedule_key(schedule: ScheduleConfig) -> str:
    """The schedule as stored: a change (new interval, other cron, other time zone) restarts its count."""
    return schedule.model_dump_json()


def describe_schedule(schedule: ScheduleConfig) -> str:
    if isinstance(schedule, IntervalSchedule):
        minutes = schedule.minutes
        if minutes < 1:
            return f"every {minutes * 60:g} seconds"
        if minutes % 60 == 0:
            hours = minutes / 60
            return "every hour" if hours == 1 else f"every {hours:g} hours"
        return "every minute" if minutes == 1 else f"every {minutes:g} minutes"
    if isinstance(schedule, CronSchedule):
        return f"cron {schedule.expression} ({schedule.timezone})"
    if isinstance(schedule, AfterSchedule):
        return f"after {schedule.sync} succeeds"
    return "manual"


def next_fire(schedule: ScheduleConfig, after: datetime) -> datetime | None:
    """The first due time strictly after ``after`` (UTC), or None for schedules that are not time-based."""
    after = as_utc(after)
    if isinstance(schedule, IntervalSchedule):
        return after + timedelta(minutes=schedule.minutes)
    if isinstance(schedule, CronSchedule):
        local = after.astimezone(ZoneInfo(schedule.timezone))
        fire: datetime = croniter(schedule.expression, local).get_next(datetime)
        return as_utc(fire)
    return None


def _last_started(conn: Connection, sync_name: str) -> datetime | None:
    value = conn.execute(
        select(sync_runs.c.started_at)
        .where(sync_runs.c.sync_name == sync_name, sync_runs.c.status != QUEUED, sync_runs.c.dry_run.is_(False))
        .order_by(sync_runs.c.started_at.desc())
        .limit(1)
    ).scalar_one_or_none()
    return as_utc(value) if value is not None else None


def _last_success(conn: Connection, sync_name: str) -> str | None:
    value = conn.execute(
        select(sync_runs.c.id)
        .where(
            sync_runs.c.sync_name == sync_name,
            sync_runs.c.status == SUCCEEDED,
            sync_runs.c.dry_run.is_(False),
        )
        .order_by(sync_runs.c.finished_at.desc(), sync_runs.c.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    return str(value) if value is not None else None


def _first_due(conn: Connection, name: str, schedule: ScheduleConfig, now: datetime) -> datetime | None:
    """When a newly seen (or changed) schedule is first due. An interval counts from the sync's last run, so
    starting the service does not run a sync that just ran; a sync that never ran is due at once."""
    if isinstance(schedule, IntervalSchedule):
        last = _last_started(conn, name)
        return now if last is None else max(now, last + timedelta(minutes=schedule.minutes))
    return next_fire(schedule, now)


def _insert_row(conn: Connection, values: dict[str, object]) -> bool:
    """Insert a schedule row unless another process just did; whether this one did."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(sync_schedules).values(**values).on_conflict_do_nothing(index_elements=["sync_name"])
    return bool(conn.execute(statement).rowcount)


def tick(workspace: Workspace, now: datetime | None = None) -> list[tuple[str, str]]:
    """Queue every run that is due at ``now`` (default: the store's clock); returns ``(sync, run id)`` pairs.

    Safe to call from several processes at once: each schedule row is handled by whichever process locks it
    (PostgreSQL ``FOR UPDATE SKIP LOCKED``; SQLite's writer lock serializes ticks).
    """
    store = workspace.store
    now = as_utc(now or store.clock())
    queued: list[tuple[str, str]] = []
    syncs: dict[str, SyncConfig] = dict(workspace.config.syncs)
    with store.transaction() as conn:
        query = select(sync_schedules)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        rows = {r.sync_name: r for r in conn.execute(query).all()}
        for name, sync in syncs.items():
            schedule = sync.schedule
            key = schedule_key(schedule)
            row = rows.get(name)
            after_id = _last_success(conn, schedule.sync) if isinstance(schedule, AfterSchedule) else None
            if row is None or row.schedule != key:
                # A schedule seen for the first time (or changed): record it; upstream successes from before it
                # existed never fire an ``after`` schedule.
                due = _first_due(conn, name, schedule, now)
                values = {"schedule": key, "next_run_at": due, "after_run_id": after_id, "updated_at": now}
                if row is None:
                    if not _insert_row(conn, {"sync_name": name, **values}):
                        continue  # another process recorded it first and handles it
                else:
                    conn.execute(update(sync_schedules).where(sync_schedules.c.sync_name == name).values(**values))
                seen_after = after_id
            else:
                due = as_utc(row.next_run_at) if row.next_run_at is not None else None
                seen_after = row.after_run_id
            if not sync.enabled:
                continue
            trigger: str | None = None
            changes: dict[str, object] = {}
            if isinstance(schedule, AfterSchedule):
                if after_id is not None and after_id != seen_after:
                    trigger = f"after:{schedule.sync}"
                    changes = {"after_run_id": after_id}
            elif due is not None and due <= now:
                trigger = SCHEDULE_TRIGGER
                # From now, not from the missed time: one run for any number of missed ones.
                changes = {"next_run_at": next_fire(schedule, now)}
            if trigger is None:
                continue
            run_id, created = enqueue_in(conn, name, RunOptions(), trigger, now)
            if created:
                queued.append((name, run_id))
            conn.execute(
                update(sync_schedules)
                .where(sync_schedules.c.sync_name == name)
                .values(**changes, last_enqueued_at=now, updated_at=now)
            )
    return queued


def next_runs(workspace: Workspace) -> dict[str, datetime | None]:
    """Each sync's next due time as the state database holds it (None: manual, ``after``, or not seen yet)."""
    with workspace.store.engine.connect() as conn:
        rows = conn.execute(select(sync_schedules.c.sync_name, sync_schedules.c.next_run_at)).all()
    return {r.sync_name: as_utc(r.next_run_at) if r.next_run_at else None for r in rows}
