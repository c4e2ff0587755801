"""Canvas: a multi-step journey users enter from a segment and move through over time.

A Canvas has an entry audience (a segment), an entry schedule (once now, once at a time, or recurring on a
cron expression) and steps: ``message`` (email or webhook), ``delay``, ``split`` (audience paths chosen by
segment filters evaluated when the user reaches the step, with an "Everyone Else" fallback) and ``exit``.
Steps name their successor with ``next``; a missing ``next`` exits the journey. The steps form a graph
without cycles, so every journey ends.

Each user's position (step and when it is due) is a row in ``canvas_positions``; :func:`advance_canvas`
moves every user whose step is due and is what the worker runs. Time comes from the ``clock`` argument, so
a test advances a fake clock instead of waiting for a delay. A user enters a Canvas at most once, even on a
recurring schedule (re-entry is not offered).

Message steps follow the campaign rules (see :mod:`.campaigns`): a ``canvas_deliveries`` row is claimed and
committed before the message leaves; the outcome and the move to the next step commit together. A row left
``claimed`` by a crash is resent with the same idempotency key (at-least-once).
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import ColumnElement, Connection, Engine, and_, exists, func, insert, literal, or_, select, update
from sqlalchemy.exc import IntegrityError

from cohortflow.clock import Clock, as_utc, utcnow
from cohortflow.platform.bounds import MAX_DAYS, MAX_DURATION, Days, Hours, Minutes, Seconds, UtcDateTime
from cohortflow.platform.errors import AlreadyExists, InvalidRequest, NotFound
from cohortflow.platform.messaging.campaigns import check_channel_settings, reason_counts
from cohortflow.platform.messaging.engine import STOPPED_REASON, Queue, drain
from cohortflow.platform.messaging.leases import Lease, new_owner, take_lease
from cohortflow.platform.messaging.messages import MessageSpec, check_message_templates, parse_model, shown_dump
from cohortflow.platform.segments.compiler import compile_filter
from cohortflow.platform.segments.filters import dump_filter, parse_filter
from cohortflow.platform.segments.service import get_segment, segment_clause, validate_filter
from cohortflow.platform.store.engine import refresh_statistics
from cohortflow.platform.store.lookup import row_in_workspace
from cohortflow.platform.store.schema import (
    TS,
    canvas_deliveries,
    canvas_positions,
    canvas_step_events,
    canvases,
    user_events,
    users,
)
from cohortflow.platform.store.upsert import upsert_insert
from cohortflow.settings import MessagingSettings

EVERYONE_ELSE = "Everyone Else"
# The ``path`` of an ``exited`` event written because the user met the Canvas's exit criteria.
EXIT_CRITERIA = "exit criteria"
STEP_ID = r"^[A-Za-z0-9_.-]{1,64}$"


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=STEP_ID)
    name: str | None = Field(default=None, max_length=200)


class MessageStep(_Step):
    type: Literal["message"]
    message: MessageSpec
    next: str | None = None


class DelayStep(_Step):
    type: Literal["delay"]
    days: Days = 0
    hours: Hours = 0
    minutes: Minutes = 0
    seconds: Seconds = 0
    next: str | None = None

    @model_validator(mode="after")
    def _positive(self) -> DelayStep:
        if self.duration <= timedelta(0):
            raise ValueError("a delay needs a positive duration (days, hours, minutes and/or seconds)")
        if self.duration > MAX_DURATION:
            raise ValueError(f"a delay can be at most {MAX_DAYS} days (days, hours, minutes and seconds together)")
        return self

    @property
    def duration(self) -> timedelta:
        return timedelta(days=self.days, hours=self.hours, minutes=self.minutes, seconds=self.seconds)


class SplitPath(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    filter: dict[str, Any] = Field(description="A segment filter tree, evaluated when the user reaches the split.")
    next: str | None = None


class SplitStep(_Step):
    type: Literal["split"]
    paths: list[SplitPath] = Field(min_length=1, max_length=20, description="Tried in order; the first match wins.")
    else_next: str | None = Field(default=None, description=f"Where '{EVERYONE_ELSE}' goes.")

    @field_validator("paths")
    @classmethod
    def _unique_names(cls, paths: list[SplitPath]) -> list[SplitPath]:
        names = [p.name for p in paths]
        if len(set(names)) != len(names) or EVERYONE_ELSE in names:
            raise ValueError(f"path names must be unique and not {EVERYONE_ELSE!r}")
        return paths


class ExitStep(_Step):
    type: Literal["exit"]


Step = Annotated[MessageStep | DelayStep | SplitStep | ExitStep, Field(discriminator="type")]


class EntryNow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["now"]


class EntryAt(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["at"]
    at: UtcDateTime


class EntryRecurring(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["recurring"]
    cron: str = Field(description="Five-field cron expression, UTC, e.g. '0 9 * * 1' (Mondays 09:00).")
    until: UtcDateTime | None = None

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        if not croniter.is_valid(value):
            raise ValueError(f"cron {value!r} is not a valid cron expression")
        return value


EntrySchedule = Annotated[EntryNow | EntryAt | EntryRecurring, Field(discriminator="type")]


def _successors(step: MessageStep | DelayStep | SplitStep | ExitStep) -> list[str | None]:
    if isinstance(step, SplitStep):
        return [*(p.next for p in step.paths), step.else_next]
    if isinstance(step, ExitStep):
        return []
    return [step.next]


class Reentry(BaseModel):
    """Whether a user who exited may enter again (on a later entry of a recurring Canvas), and how soon."""

    model_config = ConfigDict(extra="forbid")
    allowed: bool = False
    after_seconds: int = Field(default=0, ge=0, le=366 * 86400, description="Time since the user exited.")


EventName = Annotated[str, Field(min_length=1, max_length=255)]


class ExitCriteria(BaseModel):
    """Active users exit the Canvas when they leave its entry segment, or perform one of these custom events."""

    model_config = ConfigDict(extra="forbid")
    leaves_entry_segment: bool = False
    performs_events: list[Annotated[str, Field(min_length=1, max_length=255)]] = Field(
        default_factory=list, max_length=20
    )


class CanvasDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    entry_segment_id: str
    entry_schedule: EntrySchedule = Field(default_factory=lambda: EntryNow(type="now"))
    reentry: Reentry = Field(default_factory=Reentry)
    exit_criteria: ExitCriteria = Field(default_factory=ExitCriteria)
    ignore_frequency_capping: bool = False
    steps: list[Step] = Field(min_length=1, max_length=200, description="Users enter at the first step.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("name must be a non-empty string")
        return value.strip()

    @model_validator(mode="after")
    def _graph(self) -> CanvasDefinition:
        ids = [s.id for s in self.steps]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"step ids must be unique; repeated: {', '.join(duplicates)}")
        known = set(ids)
        for step in self.steps:
            for target in _successors(step):
                if target is not None and target not in known:
                    raise ValueError(f"step {step.id!r} leads to unknown step {target!r}")
        by_id = {s.id: s for s in self.steps}
        state: dict[str, int] = {}  # 1: on the current path, 2: done

        def visit(step_id: str) -> None:
            state[step_id] = 1
            for target in _successors(by_id[step_id]):
                if target is None:
                    continue
                if state.get(target) == 1:
                    raise ValueError(f"steps form a cycle through {target!r}; a journey must end")
                if target not in state:
                    visit(target)
            state[step_id] = 2

        for step_id in ids:
            if step_id not in state:
                visit(step_id)
        return self

    def step(self, step_id: str) -> MessageStep | DelayStep | SplitStep | ExitStep:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)


@dataclass(frozen=True)
class Canvas:
    id: str
    workspace_id: str
    name: str
    status: str
    definition: CanvasDefinition
    next_entry_at: datetime | None
    created_at: datetime
    started_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            **shown_dump(self.definition, exclude={"name"}),
            "next_entry_at": self.next_entry_at.isoformat() if self.next_entry_at else None,
            "created_at": self.created_at.isoformat(),
            "started_at": self.started_at.isoformat() if self.started_at else None,
        }


# --- definitions -------------------------------------------------------------------------------------


def _validated(
    conn: Connection,
    workspace_id: str,
    data: CanvasDefinition | Mapping[str, Any],
    settings: MessagingSettings | None,
) -> CanvasDefinition:
    """The whole journey checked (segment, split filters, templates, channel settings); filters normalized."""
    definition = parse_model(CanvasDefinition, data, what="canvas")
    try:
        get_segment(conn, workspace_id, definition.entry_segment_id)
    except NotFound as exc:
        raise InvalidRequest(
            f"entry_segment_id: segment {definition.entry_segment_id!r} does not exist in this workspace"
        ) from exc
    steps: list[MessageStep | DelayStep | SplitStep | ExitStep] = []
    for index, step in enumerate(definition.steps):
        where = f"steps[{index}] ({step.id})"
        if isinstance(step, MessageStep):
            check_message_templates(step.message, field=f"{where}.message")
            check_channel_settings(step.message.channel, settings)
        if isinstance(step, SplitStep):
            paths = []
            for p_index, path in enumerate(step.paths):
                try:
                    node = validate_filter(conn, workspace_id, path.filter)
                except InvalidRequest as exc:
                    raise InvalidRequest(f"{where}.paths[{p_index}] ({path.name}).filter: {exc.message}") from exc
                paths.append(path.model_copy(update={"filter": dump_filter(node)}))
            step = step.model_copy(update={"paths": paths})
        steps.append(step)
    return definition.model_copy(update={"steps": steps})


def create_canvas(
    conn: Connection,
    workspace_id: str,
    data: CanvasDefinition | Mapping[str, Any],
    *,
    settings: MessagingSettings | None = None,
) -> Canvas:
    """Validate the whole journey (segment, filters, templates, channel settings), then save it as a draft."""
    definition = _validated(conn, workspace_id, data, settings)
    now = utcnow()
    canvas_id = f"cnv_{uuid.uuid4().hex}"
    try:
        with conn.begin_nested():
            conn.execute(
                insert(canvases).values(
                    id=canvas_id,
                    workspace_id=workspace_id,
                    name=definition.name,
                    definition=definition.model_dump(mode="json"),
                    entry_segment_id=definition.entry_segment_id,
                    status="draft",
                    created_at=now,
                    updated_at=now,
                )
            )
    except IntegrityError as exc:
        raise AlreadyExists(f"a Canvas named {definition.name!r} already exists in this workspace") from exc
    return get_canvas(conn, workspace_id, canvas_id)


def update_canvas(
    conn: Connection,
    workspace_id: str,
    canvas_id: str,
    data: CanvasDefinition | Mapping[str, Any],
    *,
    settings: MessagingSettings | None = None,
) -> Canvas:
    """Replace a draft's journey, checked like a new one; or change nothing.

    Only a draft can change: once users have entered, their positions name steps of the journey they entered.
    """
    current = get_canvas(conn, workspace_id, canvas_id)
    if current.status != "draft":
        raise InvalidRequest(f"Canvas {current.name!r} is {current.status}; only a draft can be edited")
    definition = _validated(conn, workspace_id, data, settings)
    try:
        with conn.begin_nested():
            conn.execute(
                update(canvases)
                .where(canvases.c.workspace_id == workspace_id, canvases.c.id == canvas_id)
                .values(
                    name=definition.name,
                    definition=definition.model_dump(mode="json"),
                    entry_segment_id=definition.entry_segment_id,
                    updated_at=utcnow(),
                )
            )
    except IntegrityError as exc:
        raise AlreadyExists(f"a Canvas named {definition.name!r} already exists in this workspace") from exc
    return get_canvas(conn, workspace_id, canvas_id)


def _row_to_canvas(row: Any) -> Canvas:
    return Canvas(
        id=str(row.id),
        workspace_id=str(row.workspace_id),
        name=str(row.name),
        status=str(row.status),
        definition=CanvasDefinition.model_validate(row.definition),
        next_entry_at=as_utc(row.next_entry_at) if row.next_entry_at else None,
        created_at=as_utc(row.created_at),
        started_at=as_utc(row.started_at) if row.started_at else None,
    )


def get_canvas(conn: Connection, workspace_id: str, canvas_id: str) -> Canvas:
    return _row_to_canvas(row_in_workspace(conn, canvases, workspace_id, canvas_id, "Canvas"))


def list_canvases(conn: Connection, workspace_id: str) -> list[Canvas]:
    rows = conn.execute(
        select(canvases).where(canvases.c.workspace_id == workspace_id).order_by(canvases.c.created_at, canvases.c.id)
    )
    return [_row_to_canvas(r) for r in rows]


def _next_entry(schedule: EntryNow | EntryAt | EntryRecurring, after: datetime, *, first: bool) -> datetime | None:
    if isinstance(schedule, EntryNow):
        return after if first else None
    if isinstance(schedule, EntryAt):
        return as_utc(schedule.at) if first else None
    upcoming: datetime = croniter(schedule.cron, after).get_next(datetime)
    if schedule.until is not None and upcoming > as_utc(schedule.until):
        return None
    return upcoming


def start_canvas(conn: Connection, workspace_id: str, canvas_id: str, *, now: datetime | None = None) -> Canvas:
    """Activate a draft: users enter at the schedule's first entry time (the worker does the rest)."""
    canvas = get_canvas(conn, workspace_id, canvas_id)
    if canvas.status != "draft":
        raise InvalidRequest(f"Canvas {canvas_id!r} is {canvas.status}; only a draft can be started")
    now = now or utcnow()
    conn.execute(
        update(canvases)
        .where(canvases.c.id == canvas_id)
        .values(
            status="active",
            started_at=now,
            updated_at=now,
            next_entry_at=_next_entry(canvas.definition.entry_schedule, now, first=True),
        )
    )
    return get_canvas(conn, workspace_id, canvas_id)


# --- advancing users ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdvanceRun:
    canvas_id: str
    entered: int
    moved: int


def _due_at(step: MessageStep | DelayStep | SplitStep | ExitStep, now: datetime) -> datetime:
    return now + step.duration if isinstance(step, DelayStep) else now


def _position_events(
    conn: Connection,
    canvas_id: str,
    where: Sequence[ColumnElement[bool]],
    step_id: str,
    event: str,
    now: datetime,
    path: str | None = None,
) -> None:
    """One event per position matching ``where`` (set-based: one INSERT ... SELECT)."""
    p = canvas_positions
    conn.execute(
        insert(canvas_step_events).from_select(
            ["canvas_id", "user_id", "step_id", "event", "path", "at"],
            select(
                literal(canvas_id), p.c.user_id, literal(step_id), literal(event), literal(path), literal(now, TS)
            ).where(*where),
        )
    )


def _move_due(
    conn: Connection,
    canvas_id: str,
    definition: CanvasDefinition,
    where: Sequence[ColumnElement[bool]],
    step_id: str,
    next_id: str | None,
    now: datetime,
) -> int:
    """Positions matching ``where`` (at ``step_id``) go on to ``next_id``, or exit when there is none."""
    p = canvas_positions
    if next_id is None:
        _position_events(conn, canvas_id, where, step_id, "exited", now)
        return int(
            conn.execute(
                update(p).where(*where).values(state="exited", due_at=None, exited_at=now, updated_at=now)
            ).rowcount
        )
    _position_events(conn, canvas_id, where, next_id, "entered", now)
    target = definition.step(next_id)
    return int(
        conn.execute(
            update(p).where(*where).values(step_id=next_id, due_at=_due_at(target, now), updated_at=now)
        ).rowcount
    )


def _enter(conn: Connection, canvas_row: Any, definition: CanvasDefinition, now: datetime) -> int:
    """Users of the entry segment enter at the first step: newcomers (one INSERT ... SELECT), and, when the Canvas
    allows re-entry, users who exited long enough ago (one UPDATE)."""
    canvas_id = str(canvas_row.id)
    workspace_id = str(canvas_row.workspace_id)
    first = definition.steps[0]
    p = canvas_positions
    in_segment = segment_clause(conn, workspace_id, definition.entry_segment_id, now=now)
    # Members who never entered: the primary key (canvas, user) skips those who did. Not ``NOT EXISTS`` on the
    # positions table itself: PostgreSQL may plan that as a nested loop rescanning the rows this very statement
    # inserts (invisible to it, yet read), quadratic in the audience (minutes at 1M users).
    conn.execute(
        upsert_insert(conn, p)
        .from_select(
            ["canvas_id", "user_id", "step_id", "state", "due_at", "entered_at", "updated_at"],
            select(
                literal(canvas_id),
                users.c.id,
                literal(first.id),
                literal("active"),
                literal(_due_at(first, now), TS),
                literal(now, TS),
                literal(now, TS),
            ).where(users.c.workspace_id == workspace_id, in_segment),
        )
        .on_conflict_do_nothing(index_elements=["canvas_id", "user_id"])
    )
    reentry = definition.reentry
    if reentry.allowed:
        returning = (
            p.c.canvas_id == canvas_id,
            p.c.state == "exited",
            p.c.exited_at <= now - timedelta(seconds=reentry.after_seconds),
            exists().where(users.c.id == p.c.user_id, in_segment),
        )
        conn.execute(
            update(p)
            .where(*returning)
            .values(
                step_id=first.id,
                state="active",
                due_at=_due_at(first, now),
                entered_at=now,
                exited_at=None,
                entries=p.c.entries + 1,
                updated_at=now,
            )
        )
    just_entered = (p.c.canvas_id == canvas_id, p.c.entered_at == now)
    _position_events(conn, canvas_id, just_entered, first.id, "entered", now)
    # (The driver's rowcount of an INSERT ... SELECT is not reliable across dialects.)
    entered = conn.execute(select(func.count()).select_from(p).where(*just_entered)).scalar_one()
    conn.execute(
        update(canvases)
        .where(canvases.c.id == canvas_id)
        .values(last_entry_at=now, next_entry_at=_next_entry(definition.entry_schedule, now, first=False))
    )
    return int(entered)


def _exit_by_criteria(
    conn: Connection, workspace_id: str, canvas_id: str, definition: CanvasDefinition, now: datetime
) -> int:
    """Active users who left the entry segment, or performed an exit event since they entered, exit."""
    criteria = definition.exit_criteria
    p, e = canvas_positions, canvas_step_events
    reasons: list[ColumnElement[bool]] = []
    if criteria.leaves_entry_segment:
        in_segment = segment_clause(conn, workspace_id, definition.entry_segment_id, now=now)
        reasons.append(~exists().where(users.c.id == p.c.user_id, in_segment))
    if criteria.performs_events:
        ev = user_events
        reasons.append(
            exists().where(
                ev.c.user_id == p.c.user_id, ev.c.name.in_(criteria.performs_events), ev.c.time >= p.c.entered_at
            )
        )
    if not reasons:
        return 0
    leaving = (p.c.canvas_id == canvas_id, p.c.state == "active", or_(*reasons))
    conn.execute(
        insert(e).from_select(
            ["canvas_id", "user_id", "step_id", "event", "path", "at"],
            select(
                literal(canvas_id),
                p.c.user_id,
                p.c.step_id,
                literal("exited"),
                literal(EXIT_CRITERIA),
                literal(now, TS),
            ).where(*leaving),
        )
    )
    return int(
        conn.execute(
            update(p).where(*leaving).values(state="exited", due_at=None, exited_at=now, updated_at=now)
        ).rowcount
    )


def advance_canvas(
    engine: Engine,
    settings: MessagingSettings,
    canvas_id: str,
    *,
    clock: Clock = utcnow,
    batch_size: int | None = None,
    deliver: bool = True,
) -> AdvanceRun | None:
    """Let due users enter, apply exit criteria, move every due user as far as they can go now, then deliver
    the message steps' queued messages (unless ``deliver`` is False: see :func:`deliver_canvas`).

    Moving is set-based: one statement per step moves every user due there (a delay, a split path, an exit, or
    a message step, whose users get a ``pending`` delivery row and go on in the same transaction). The
    messages are then delivered by the batched engine (:mod:`.engine`), which any number of workers share.
    ``None`` when another live process is moving this Canvas's users.
    """
    owner = new_owner()
    now = clock()
    if not take_lease(
        engine,
        canvases,
        canvas_id,
        owner,
        now=now,
        seconds=settings.send_lease_seconds,
        where=[canvases.c.status == "active"],
    ):
        return None
    lease = Lease(engine, canvases, canvas_id, owner, seconds=settings.send_lease_seconds, clock=clock)
    entered = moved = 0
    try:
        with engine.begin() as conn:
            row = conn.execute(select(canvases).where(canvases.c.id == canvas_id)).one()
            definition = CanvasDefinition.model_validate(row.definition)
            workspace_id = str(row.workspace_id)
            if row.next_entry_at is not None and as_utc(row.next_entry_at) <= now:
                entered = _enter(conn, row, definition, now)
            moved += _exit_by_criteria(conn, workspace_id, canvas_id, definition, now)
        order = _topological(definition)
        progressed = True
        while progressed and lease.keep():
            progressed = False
            for step in order:
                with engine.begin() as conn:
                    n = _advance_step(conn, workspace_id, canvas_id, definition, step, now)
                if isinstance(step, MessageStep):
                    refresh_statistics(engine, canvas_deliveries.name, new_rows=n)
                moved += n
                progressed = progressed or n > 0
    finally:
        lease.release()
    if deliver:
        deliver_canvas(engine, settings, canvas_id, clock=clock, batch_size=batch_size)
    return AdvanceRun(canvas_id, entered, moved)


def deliver_canvas(
    engine: Engine, settings: MessagingSettings, canvas_id: str, *, clock: Clock = utcnow, batch_size: int | None = None
) -> int:
    """Deliver the queued messages of every message step; any number of processes may share the work."""
    with engine.connect() as conn:
        row = conn.execute(
            select(canvases.c.workspace_id, canvases.c.definition).where(canvases.c.id == canvas_id)
        ).one()
    definition = CanvasDefinition.model_validate(row.definition)
    attempted = 0
    for step in definition.steps:
        if isinstance(step, MessageStep):
            queue = step_queue(canvas_id, str(row.workspace_id), definition, step)
            attempted += drain(engine, settings, queue, new_owner(), clock=clock, batch_size=batch_size).attempted
    return attempted


def step_queue(canvas_id: str, workspace_id: str, definition: CanvasDefinition, step: MessageStep) -> Queue:
    d = canvas_deliveries

    def key(row: Mapping[str, Any]) -> str:
        entry = int(row.get("entry") or 1)
        # The first entry keeps the key format of Canvases from before re-entry existed.
        suffix = "" if entry == 1 else f"-{entry}"
        return f"cf-canvas-{canvas_id}-{step.id}-{row['user_id']}{suffix}"

    return Queue(
        table=d,
        scope=(d.c.canvas_id == canvas_id, d.c.step_id == step.id),
        message=step.message,
        workspace_id=workspace_id,
        running=exists().where(canvases.c.id == canvas_id, canvases.c.status == "active"),
        key=key,
        extra=(d.c.entry,),
        ignore_frequency_caps=definition.ignore_frequency_capping,
    )


def _topological(definition: CanvasDefinition) -> list[MessageStep | DelayStep | SplitStep | ExitStep]:
    """Steps so that each comes before its successors: one pass moves a user through every step due now."""
    by_id = {s.id: s for s in definition.steps}
    done: set[str] = set()
    order: list[MessageStep | DelayStep | SplitStep | ExitStep] = []

    def visit(step_id: str) -> None:
        if step_id in done:
            return
        done.add(step_id)
        for target in _successors(by_id[step_id]):
            if target is not None:
                visit(target)
        order.append(by_id[step_id])

    for step in definition.steps:
        visit(step.id)
    return list(reversed(order))


def _advance_step(
    conn: Connection,
    workspace_id: str,
    canvas_id: str,
    definition: CanvasDefinition,
    step: MessageStep | DelayStep | SplitStep | ExitStep,
    now: datetime,
) -> int:
    p = canvas_positions
    due = (p.c.canvas_id == canvas_id, p.c.state == "active", p.c.step_id == step.id, p.c.due_at <= now)
    if isinstance(step, MessageStep):
        d = canvas_deliveries
        # The message is queued and the user goes on in one transaction: each entry gets it once.
        conn.execute(
            insert(d).from_select(
                ["canvas_id", "step_id", "user_id", "entry", "status", "attempts", "updated_at"],
                select(
                    literal(canvas_id),
                    literal(step.id),
                    p.c.user_id,
                    p.c.entries,
                    literal("pending"),
                    literal(0),
                    literal(now, TS),
                ).where(*due),
            )
        )
        return _move_due(conn, canvas_id, definition, due, step.id, step.next, now)
    if isinstance(step, DelayStep):
        return _move_due(conn, canvas_id, definition, due, step.id, step.next, now)
    if isinstance(step, ExitStep):
        return _move_due(conn, canvas_id, definition, due, step.id, None, now)
    moved = 0
    # Paths in order, the first match wins: a user a path moves is no longer at the split for the next paths.
    for path in step.paths:
        clause = compile_filter(conn, workspace_id, parse_filter(path.filter), now=now)
        matches = (*due, exists().where(users.c.id == p.c.user_id, clause))
        _position_events(conn, canvas_id, matches, step.id, "path", now, path=path.name)
        moved += _move_due(conn, canvas_id, definition, matches, step.id, path.next, now)
    _position_events(conn, canvas_id, due, step.id, "path", now, path=EVERYONE_ELSE)
    return moved + _move_due(conn, canvas_id, definition, due, step.id, step.else_next, now)


def stop_canvas(conn: Connection, workspace_id: str, canvas_id: str, *, now: datetime | None = None) -> Canvas:
    """Stop an active Canvas: nobody enters or moves any more, and its queued messages are not sent."""
    canvas = get_canvas(conn, workspace_id, canvas_id)
    if canvas.status != "active":
        raise InvalidRequest(f"Canvas {canvas.name!r} is {canvas.status}; only an active Canvas can be stopped")
    now = now or utcnow()
    conn.execute(
        update(canvases).where(canvases.c.id == canvas_id).values(status="stopped", next_entry_at=None, updated_at=now)
    )
    d = canvas_deliveries
    conn.execute(
        update(d)
        .where(
            d.c.canvas_id == canvas_id,
            or_(
                d.c.status == "pending",
                and_(d.c.status == "claimed", or_(d.c.claimed_until.is_(None), d.c.claimed_until < now)),
            ),
        )
        .values(status="skipped", reason=STOPPED_REASON, claimed_until=None, updated_at=now)
    )
    return get_canvas(conn, workspace_id, canvas_id)


def canvas_stats(conn: Connection, workspace_id: str, canvas_id: str) -> dict[str, Any]:
    """Per step: users who entered it, are there now, were sent / failed / skipped, took each path, exited."""
    canvas = get_canvas(conn, workspace_id, canvas_id)
    e = canvas_step_events
    events: Counter[tuple[str, str]] = Counter()
    paths: dict[str, dict[str, int]] = defaultdict(dict)
    for step_id, event, path, n in conn.execute(
        select(e.c.step_id, e.c.event, e.c.path, func.count())
        .where(e.c.canvas_id == canvas_id)
        .group_by(e.c.step_id, e.c.event, e.c.path)
    ):
        if event == "path":
            paths[str(step_id)][str(path)] = int(n)
        else:
            events[(str(step_id), str(event))] += int(n)
    d = canvas_deliveries
    deliveries: Counter[tuple[str, str]] = Counter()
    for step_id, status, n in conn.execute(
        select(d.c.step_id, d.c.status, func.count())
        .where(d.c.canvas_id == canvas_id)
        .group_by(d.c.step_id, d.c.status)
    ):
        deliveries[(str(step_id), str(status))] = int(n)
    p = canvas_positions
    here: Counter[str] = Counter()
    states: Counter[str] = Counter()
    for step_id, state, n in conn.execute(
        select(p.c.step_id, p.c.state, func.count()).where(p.c.canvas_id == canvas_id).group_by(p.c.step_id, p.c.state)
    ):
        states[str(state)] += int(n)
        if state == "active":
            here[str(step_id)] = int(n)
    steps = []
    for step in canvas.definition.steps:
        item: dict[str, Any] = {
            "id": step.id,
            "type": step.type,
            "name": step.name,
            "entered": events[(step.id, "entered")],
            "at_step": here[step.id],
            "exited": events[(step.id, "exited")],
        }
        if isinstance(step, MessageStep):
            item.update({s: deliveries[(step.id, s)] for s in ("sent", "failed", "skipped")})
            item["in_flight"] = deliveries[(step.id, "claimed")]
            item["queued"] = deliveries[(step.id, "pending")]
            item["reasons"] = reason_counts(conn, d, d.c.canvas_id == canvas_id, d.c.step_id == step.id)
        if isinstance(step, SplitStep):
            item["paths"] = {
                name: paths[step.id].get(name, 0) for name in [*(x.name for x in step.paths), EVERYONE_ELSE]
            }
        steps.append(item)
    return {
        "canvas_id": canvas_id,
        "status": canvas.status,
        "entered": states["active"] + states["exited"],
        "active": states["active"],
        "exited": states["exited"],
        "steps": steps,
    }


def canvas_journeys(conn: Connection, workspace_id: str, canvas_id: str, *, limit: int = 1000) -> list[dict[str, Any]]:
    """Each user's position (for operators and tests): step, state and when the step is due."""
    get_canvas(conn, workspace_id, canvas_id)
    p = canvas_positions
    rows = conn.execute(
        select(p.c.user_id, users.c.external_id, p.c.step_id, p.c.state, p.c.due_at)
        .join(users, users.c.id == p.c.user_id)
        .where(p.c.canvas_id == canvas_id)
        .order_by(p.c.user_id)
        .limit(limit)
    ).mappings()
    return [{**dict(r), "due_at": as_utc(r["due_at"]).isoformat() if r["due_at"] else None} for r in rows]


def active_canvases(conn: Connection, *, now: datetime) -> list[str]:
    """Active Canvases not held by a live process."""
    rows = conn.execute(
        select(canvases.c.id)
        .where(
            canvases.c.status == "active",
            or_(canvases.c.lease_expires_at.is_(None), canvases.c.lease_expires_at < now),
        )
        .order_by(canvases.c.created_at)
    )
    return [str(r.id) for r in rows]
