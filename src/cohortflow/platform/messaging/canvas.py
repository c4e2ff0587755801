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
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import Connection, Engine, exists, func, insert, literal, or_, select, update
from sqlalchemy.exc import IntegrityError

from cohortflow.clock import Clock, as_utc, utcnow
from cohortflow.platform.bounds import MAX_DAYS, MAX_DURATION, Days, Hours, Minutes, Seconds, UtcDateTime
from cohortflow.platform.errors import AlreadyExists, InvalidRequest, NotFound
from cohortflow.platform.messaging.campaigns import check_channel_settings
from cohortflow.platform.messaging.delivery import Deliverer, Outcome
from cohortflow.platform.messaging.leases import Lease, new_owner, take_lease
from cohortflow.platform.messaging.messages import MessageSpec, check_message_templates, parse_model, shown_dump
from cohortflow.platform.messaging.templates import PROFILE_COLUMNS
from cohortflow.platform.segments.compiler import compile_filter
from cohortflow.platform.segments.filters import dump_filter, parse_filter
from cohortflow.platform.segments.service import get_segment, segment_clause, validate_filter
from cohortflow.platform.store.lookup import row_in_workspace
from cohortflow.platform.store.schema import (
    TS,
    canvas_deliveries,
    canvas_positions,
    canvas_step_events,
    canvases,
    users,
)
from cohortflow.settings import MessagingSettings

EVERYONE_ELSE = "Everyone Else"
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


class CanvasDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    entry_segment_id: str
    entry_schedule: EntrySchedule = Field(default_factory=lambda: EntryNow(type="now"))
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


def _events(
    conn: Connection,
    canvas_id: str,
    user_ids: list[int],
    step_id: str,
    event: str,
    now: datetime,
    path: str | None = None,
) -> None:
    if user_ids:
        conn.execute(
            insert(canvas_step_events),
            [
                {"canvas_id": canvas_id, "user_id": uid, "step_id": step_id, "event": event, "path": path, "at": now}
                for uid in user_ids
            ],
        )


def _move(
    conn: Connection,
    canvas_id: str,
    definition: CanvasDefinition,
    user_ids: list[int],
    step_id: str,
    next_id: str | None,
    now: datetime,
) -> None:
    """Users at ``step_id`` go on to ``next_id``, or exit the Canvas when there is none."""
    if not user_ids:
        return
    p = canvas_positions
    where = (p.c.canvas_id == canvas_id, p.c.user_id.in_(user_ids), p.c.step_id == step_id, p.c.state == "active")
    if next_id is None:
        conn.execute(update(p).where(*where).values(state="exited", due_at=None, updated_at=now))
        _events(conn, canvas_id, user_ids, step_id, "exited", now)
        return
    target = definition.step(next_id)
    conn.execute(update(p).where(*where).values(step_id=next_id, due_at=_due_at(target, now), updated_at=now))
    _events(conn, canvas_id, user_ids, next_id, "entered", now)


def _enter(conn: Connection, canvas_row: Any, definition: CanvasDefinition, now: datetime) -> int:
    """Users of the entry segment who never entered this Canvas enter it at the first step."""
    canvas_id = str(canvas_row.id)
    workspace_id = str(canvas_row.workspace_id)
    first = definition.steps[0]
    p = canvas_positions
    newcomers = (
        select(users.c.id)
        .where(
            users.c.workspace_id == workspace_id,
            segment_clause(conn, workspace_id, definition.entry_segment_id, now=now),
            ~exists().where(p.c.canvas_id == canvas_id, p.c.user_id == users.c.id),
        )
        .subquery()
    )
    # Events first: the positions insert below is what makes these users "already entered".
    conn.execute(
        insert(canvas_step_events).from_select(
            ["canvas_id", "user_id", "step_id", "event", "at"],
            select(literal(canvas_id), newcomers.c.id, literal(first.id), literal("entered"), literal(now, TS)),
        )
    )
    conn.execute(
        insert(p).from_select(
            ["canvas_id", "user_id", "step_id", "state", "due_at", "entered_at", "updated_at"],
            select(
                literal(canvas_id),
                newcomers.c.id,
                literal(first.id),
                literal("active"),
                literal(_due_at(first, now), TS),
                literal(now, TS),
                literal(now, TS),
            ),
        )
    )
    entered = int(
        conn.execute(
            select(func.count()).select_from(p).where(p.c.canvas_id == canvas_id, p.c.entered_at == now)
        ).scalar_one()
    )
    conn.execute(
        update(canvases)
        .where(canvases.c.id == canvas_id)
        .values(last_entry_at=now, next_entry_at=_next_entry(definition.entry_schedule, now, first=False))
    )
    return entered


def advance_canvas(
    engine: Engine,
    settings: MessagingSettings,
    canvas_id: str,
    *,
    clock: Clock = utcnow,
    deliverer: Deliverer | None = None,
    batch_size: int = 500,
) -> AdvanceRun | None:
    """Let due users enter, then move every user whose step is due, as far as they can go now.

    ``None`` when another live process is advancing this Canvas.
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
    own_deliverer = deliverer is None
    deliverer = deliverer or Deliverer(settings)
    entered = moved = 0
    try:
        with engine.begin() as conn:
            row = conn.execute(select(canvases).where(canvases.c.id == canvas_id)).one()
            definition = CanvasDefinition.model_validate(row.definition)
            if row.next_entry_at is not None and as_utc(row.next_entry_at) <= now:
                entered = _enter(conn, row, definition, now)
        workspace_id = str(row.workspace_id)
        p = canvas_positions
        while lease.keep():
            with engine.connect() as conn:
                due = conn.execute(
                    select(p.c.user_id, p.c.step_id)
                    .where(p.c.canvas_id == canvas_id, p.c.state == "active", p.c.due_at <= now)
                    .order_by(p.c.due_at, p.c.user_id)
                    .limit(batch_size)
                ).all()
            if not due:
                break
            by_step: dict[str, list[int]] = defaultdict(list)
            for user_id, step_id in due:
                by_step[str(step_id)].append(int(user_id))
            for step_id, user_ids in by_step.items():
                step = definition.step(step_id)
                if isinstance(step, MessageStep):
                    _message_step(engine, canvas_id, definition, step, user_ids, deliverer, now)
                else:
                    with engine.begin() as conn:
                        if isinstance(step, DelayStep):
                            _move(conn, canvas_id, definition, user_ids, step.id, step.next, now)
                        elif isinstance(step, SplitStep):
                            _split(conn, workspace_id, canvas_id, definition, step, user_ids, now)
                        else:
                            _move(conn, canvas_id, definition, user_ids, step.id, None, now)
                moved += len(user_ids)
    finally:
        if own_deliverer:
            deliverer.close()
        lease.release()
    return AdvanceRun(canvas_id, entered, moved)


def _split(
    conn: Connection,
    workspace_id: str,
    canvas_id: str,
    definition: CanvasDefinition,
    step: SplitStep,
    user_ids: list[int],
    now: datetime,
) -> None:
    remaining = set(user_ids)
    for path in step.paths:
        if not remaining:
            break
        clause = compile_filter(conn, workspace_id, parse_filter(path.filter), now=now)
        matched = [
            int(uid)
            for uid in conn.execute(
                select(users.c.id).where(users.c.workspace_id == workspace_id, users.c.id.in_(remaining), clause)
            ).scalars()
        ]
        _events(conn, canvas_id, matched, step.id, "path", now, path=path.name)
        _move(conn, canvas_id, definition, matched, step.id, path.next, now)
        remaining.difference_update(matched)
    rest = sorted(remaining)
    _events(conn, canvas_id, rest, step.id, "path", now, path=EVERYONE_ELSE)
    _move(conn, canvas_id, definition, rest, step.id, step.else_next, now)


def _message_step(
    engine: Engine,
    canvas_id: str,
    definition: CanvasDefinition,
    step: MessageStep,
    user_ids: list[int],
    deliverer: Deliverer,
    now: datetime,
) -> None:
    d = canvas_deliveries
    with engine.connect() as conn:
        profiles = {
            int(r["id"]): r for r in conn.execute(select(*PROFILE_COLUMNS).where(users.c.id.in_(user_ids))).mappings()
        }
        previous = {
            int(r.user_id): r
            for r in conn.execute(
                select(d.c.user_id, d.c.status, d.c.attempts).where(
                    d.c.canvas_id == canvas_id, d.c.step_id == step.id, d.c.user_id.in_(user_ids)
                )
            )
        }
    for user_id in user_ids:
        key = (d.c.canvas_id == canvas_id, d.c.step_id == step.id, d.c.user_id == user_id)
        before = previous.get(user_id)
        if before is not None and before.status != "claimed":
            # The outcome was recorded but the move was not (the two commit together, so this is a rerun
            # of a step whose move failed): move on without sending again.
            with engine.begin() as conn:
                _move(conn, canvas_id, definition, [user_id], step.id, step.next, now)
            continue
        attempts = before.attempts if before is not None else 0
        claimed = False

        def claim(
            attempts: int = attempts, before: Any = before, key: tuple[Any, ...] = key, user_id: int = user_id
        ) -> bool:
            nonlocal claimed
            try:
                with engine.begin() as conn:
                    if before is None:
                        conn.execute(
                            insert(d).values(
                                canvas_id=canvas_id,
                                step_id=step.id,
                                user_id=user_id,
                                status="claimed",
                                attempts=1,
                                updated_at=now,
                            )
                        )
                        claimed = True
                    else:
                        result = conn.execute(
                            update(d)
                            .where(*key, d.c.status == "claimed", d.c.attempts == attempts)
                            .values(attempts=attempts + 1, updated_at=now)
                        )
                        claimed = result.rowcount == 1
            except IntegrityError:
                claimed = False
            return claimed

        profile = profiles.get(user_id)
        outcome = (
            deliverer.deliver(step.message, profile, f"cf-canvas-{canvas_id}-{step.id}-{user_id}", before_send=claim)
            if profile is not None
            else Outcome("skipped", "user no longer exists")
        )
        if outcome.status == "lost":
            continue
        with engine.begin() as conn:
            reason = outcome.reason[:1000] if outcome.reason else None
            if claimed or before is not None:
                conn.execute(update(d).where(*key).values(status=outcome.status, reason=reason, updated_at=now))
            else:
                conn.execute(
                    insert(d).values(
                        canvas_id=canvas_id,
                        step_id=step.id,
                        user_id=user_id,
                        status=outcome.status,
                        reason=reason,
                        attempts=0,
                        updated_at=now,
                    )
                )
            _move(conn, canvas_id, definition, [user_id], step.id, step.next, now)


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
