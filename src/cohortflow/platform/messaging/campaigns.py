"""Campaigns: one message on one channel to one or more segments, sent now or at a scheduled time.

How a send never reaches a user twice, even across a crash
-----------------------------------------------------------
1. When a send starts, its audience (any target segment, AND the optional extra filter) is evaluated once,
   in SQL, and written as one ``pending`` row per user in ``campaign_deliveries`` (primary key
   ``(send_id, user_id)``). A resumed send works from these rows; it never re-evaluates the audience.
2. Before messages leave, their rows go ``pending -> claimed`` in a committed transaction (a chunk of rows
   per commit), with a conditional UPDATE: of two processes racing for the same row, exactly one changes it.
3. After the channel answers, the row becomes ``sent`` or ``failed`` (with the reason), one commit per
   message. Unreachable users and per-user template errors are logged (``skipped``, ``failed``) without a
   channel call.
4. One process at a time runs a send (a lease on ``campaign_sends``, see :mod:`.leases`). If it dies, the
   lease runs out and ``resume`` (or the worker) continues with the rows not yet ``sent``/``failed``/``skipped``.

A row still ``claimed`` after a crash was either never attempted (the rest of its chunk) or in flight when
the process died, in which case the message may or may not have been accepted. We resend it (at-least-once)
with the same idempotency identity:

* webhooks carry ``Idempotency-Key: cf-campaign-<send>-<user>`` on every attempt, so a receiver that keeps
  keys (as payment-style APIs do) processes the message once;
* email carries ``Message-ID: <cf-campaign-<send>-<user>@sender-domain>``. SMTP cannot de-duplicate by
  itself (RFC 1047): a message the server accepted, whose acceptance we never recorded, is sent again.
  That window is the few milliseconds between the server's final ``250`` and our commit. We chose
  at-least-once over at-most-once because at-most-once would silently drop every message that was in
  flight at the crash, including the far likelier case of one the server never accepted; mail stores
  that collapse duplicates by Message-ID keep one copy.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    and_,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.exc import IntegrityError

from cohortflow.clock import Clock, as_utc, utcnow
from cohortflow.platform.errors import AlreadyExists, InvalidRequest, NotFound
from cohortflow.platform.messaging.channels.email import check_smtp_settings
from cohortflow.platform.messaging.engine import STOPPED_REASON, Queue, drain
from cohortflow.platform.messaging.leases import Lease, new_owner, take_lease
from cohortflow.platform.messaging.messages import MessageSpec, check_message_templates, parse_model, shown_dump
from cohortflow.platform.segments.compiler import compile_filter
from cohortflow.platform.segments.filters import dump_filter, parse_filter
from cohortflow.platform.segments.service import audience_query, get_segment, segment_clause, validate_filter
from cohortflow.platform.store.engine import refresh_statistics
from cohortflow.platform.store.lookup import row_in_workspace
from cohortflow.platform.store.schema import (
    TS,
    BigId,
    campaign_deliveries,
    campaign_segments,
    campaign_sends,
    campaigns,
    users,
)
from cohortflow.settings import MessagingSettings

DELIVERY_STATUSES = ("pending", "claimed", "sent", "failed", "skipped")
SEND_STATUSES = ("scheduled", "running", "completed", "canceled")
MAX_LOG_PAGE = 1000
CLAIM_CHUNK = 50


class SendInProgress(AlreadyExists):
    """A "send now" while a send of the campaign is pending or running."""

    def __init__(self, message: str, *, send_id: int | None = None) -> None:
        super().__init__(message)
        self.send_id = send_id


class CampaignDefinition(BaseModel):
    """What a campaign sends, to whom, and how fast."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    segment_ids: list[str] = Field(min_length=1, max_length=50, description="Target segments (a user in any).")
    extra_filter: dict[str, Any] | None = Field(
        default=None, description="A segment filter tree every recipient must also match."
    )
    message: MessageSpec
    rate_limit_per_minute: int | None = Field(default=None, ge=1, le=10_000_000)
    ignore_frequency_capping: bool = Field(
        default=False, description="Send even to users who reached the workspace's frequency cap."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("name must be a non-empty string")
        return value.strip()

    @field_validator("segment_ids")
    @classmethod
    def _segments(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("segment_ids lists a segment twice")
        return value


@dataclass(frozen=True)
class Campaign:
    id: str
    workspace_id: str
    name: str
    channel: str
    definition: CampaignDefinition
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "channel": self.channel,
            **shown_dump(self.definition, exclude={"name"}),
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class CampaignSend:
    id: int
    campaign_id: str
    status: str
    scheduled_at: datetime
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    audience_size: int | None
    counts: dict[str, int]
    # Failed and skipped messages by reason (only a single send's view fills it; listings leave it empty).
    reasons: dict[str, dict[str, int]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "campaign_id": self.campaign_id,
            "status": self.status,
            "scheduled_at": self.scheduled_at.isoformat(),
            "created_at": self.created_at.isoformat(),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "audience_size": self.audience_size,
            "counts": self.counts,
            **({"reasons": self.reasons} if self.reasons is not None else {}),
        }


# --- definitions -------------------------------------------------------------------------------------


def _check_segments(conn: Connection, workspace_id: str, segment_ids: list[str], *, field: str) -> None:
    for segment_id in segment_ids:
        try:
            get_segment(conn, workspace_id, segment_id)
        except NotFound as exc:
            raise InvalidRequest(f"{field}: segment {segment_id!r} does not exist in this workspace") from exc


def check_channel_settings(channel: str, settings: MessagingSettings | None) -> None:
    """An email campaign needs SMTP settings that can work; say which one is wrong."""
    if channel == "email" and settings is not None:
        try:
            check_smtp_settings(settings)
        except ValueError as exc:
            raise InvalidRequest(f"email channel is misconfigured: {exc}") from exc


def _validated(
    conn: Connection,
    workspace_id: str,
    data: CampaignDefinition | Mapping[str, Any],
    settings: MessagingSettings | None,
) -> CampaignDefinition:
    """The definition checked whole: fields, segments of this workspace, the extra filter, templates, channel."""
    definition = parse_model(CampaignDefinition, data, what="campaign")
    _check_segments(conn, workspace_id, definition.segment_ids, field="segment_ids")
    if definition.extra_filter is not None:
        try:
            node = validate_filter(conn, workspace_id, definition.extra_filter)
        except InvalidRequest as exc:
            raise InvalidRequest(f"extra_filter: {exc.message}") from exc
        definition = definition.model_copy(update={"extra_filter": dump_filter(node)})
    check_message_templates(definition.message)
    check_channel_settings(definition.message.channel, settings)
    return definition


def create_campaign(
    conn: Connection,
    workspace_id: str,
    data: CampaignDefinition | Mapping[str, Any],
    *,
    settings: MessagingSettings | None = None,
) -> Campaign:
    """Validate everything (segments, filter, templates, channel settings), then save; or save nothing."""
    definition = _validated(conn, workspace_id, data, settings)
    now = utcnow()
    campaign_id = f"cmp_{uuid.uuid4().hex}"
    try:
        with conn.begin_nested():
            conn.execute(
                insert(campaigns).values(
                    id=campaign_id,
                    workspace_id=workspace_id,
                    name=definition.name,
                    channel=definition.message.channel,
                    definition=definition.model_dump(mode="json"),
                    created_at=now,
                    updated_at=now,
                )
            )
    except IntegrityError as exc:
        raise AlreadyExists(f"a campaign named {definition.name!r} already exists in this workspace") from exc
    conn.execute(
        insert(campaign_segments),
        [{"campaign_id": campaign_id, "segment_id": sid} for sid in definition.segment_ids],
    )
    return Campaign(campaign_id, workspace_id, definition.name, definition.message.channel, definition, now)


def update_campaign(
    conn: Connection,
    workspace_id: str,
    campaign_id: str,
    data: CampaignDefinition | Mapping[str, Any],
    *,
    settings: MessagingSettings | None = None,
) -> Campaign:
    """Replace a campaign's definition, checked like a new one; or change nothing.

    Later sends use the new definition. A send that has started keeps the audience it evaluated at its start
    and the message it loaded then: editing never changes what one send delivers halfway.
    """
    current = get_campaign(conn, workspace_id, campaign_id)
    definition = _validated(conn, workspace_id, data, settings)
    try:
        with conn.begin_nested():
            conn.execute(
                update(campaigns)
                .where(campaigns.c.workspace_id == workspace_id, campaigns.c.id == campaign_id)
                .values(
                    name=definition.name,
                    channel=definition.message.channel,
                    definition=definition.model_dump(mode="json"),
                    updated_at=utcnow(),
                )
            )
    except IntegrityError as exc:
        raise AlreadyExists(f"a campaign named {definition.name!r} already exists in this workspace") from exc
    conn.execute(delete(campaign_segments).where(campaign_segments.c.campaign_id == campaign_id))
    conn.execute(
        insert(campaign_segments),
        [{"campaign_id": campaign_id, "segment_id": sid} for sid in definition.segment_ids],
    )
    return Campaign(
        campaign_id, workspace_id, definition.name, definition.message.channel, definition, current.created_at
    )


def _row_to_campaign(row: Any) -> Campaign:
    return Campaign(
        id=str(row.id),
        workspace_id=str(row.workspace_id),
        name=str(row.name),
        channel=str(row.channel),
        definition=CampaignDefinition.model_validate(row.definition),
        created_at=as_utc(row.created_at),
    )


def get_campaign(conn: Connection, workspace_id: str, campaign_id: str) -> Campaign:
    return _row_to_campaign(row_in_workspace(conn, campaigns, workspace_id, campaign_id, "campaign"))


def list_campaigns(conn: Connection, workspace_id: str) -> list[Campaign]:
    rows = conn.execute(
        select(campaigns)
        .where(campaigns.c.workspace_id == workspace_id)
        .order_by(campaigns.c.created_at, campaigns.c.id)
    )
    return [_row_to_campaign(r) for r in rows]


def audience_clause(
    conn: Connection, workspace_id: str, definition: CampaignDefinition, *, now: datetime
) -> ColumnElement[bool]:
    """Members of any target segment who also match the extra filter, as evaluated right now."""
    in_any = or_(*(segment_clause(conn, workspace_id, sid, now=now) for sid in definition.segment_ids))
    extra = (
        compile_filter(conn, workspace_id, parse_filter(definition.extra_filter), now=now)
        if definition.extra_filter is not None
        else true()
    )
    return and_(in_any, extra)


# --- sends -------------------------------------------------------------------------------------------


def _send_counts(conn: Connection, send_ids: list[int]) -> dict[int, dict[str, int]]:
    counts: dict[int, dict[str, int]] = {sid: dict.fromkeys(DELIVERY_STATUSES, 0) for sid in send_ids}
    if not send_ids:
        return counts
    rows = conn.execute(
        select(campaign_deliveries.c.send_id, campaign_deliveries.c.status, func.count())
        .where(campaign_deliveries.c.send_id.in_(send_ids))
        .group_by(campaign_deliveries.c.send_id, campaign_deliveries.c.status)
    )
    for send_id, status, n in rows:
        counts[int(send_id)][str(status)] = int(n)
    return counts


def reason_counts(conn: Connection, table: Any, *scope: ColumnElement[bool]) -> dict[str, dict[str, int]]:
    """How many messages failed and were skipped, by reason (``failed`` and ``skipped`` keys)."""
    found: dict[str, dict[str, int]] = {"failed": {}, "skipped": {}}
    for status, reason, n in conn.execute(
        select(table.c.status, table.c.reason, func.count())
        .where(*scope, table.c.status.in_(("failed", "skipped")))
        .group_by(table.c.status, table.c.reason)
    ):
        found[str(status)][str(reason)] = int(n)
    return found


def _row_to_send(row: Any, counts: dict[str, int]) -> CampaignSend:
    return CampaignSend(
        id=int(row.id),
        campaign_id=str(row.campaign_id),
        status=str(row.status),
        scheduled_at=as_utc(row.scheduled_at),
        created_at=as_utc(row.created_at),
        started_at=as_utc(row.started_at) if row.started_at else None,
        finished_at=as_utc(row.finished_at) if row.finished_at else None,
        audience_size=row.audience_size,
        counts=counts,
    )


def request_send(
    conn: Connection, workspace_id: str, campaign_id: str, *, at: datetime | None = None, now: datetime | None = None
) -> CampaignSend:
    """Create a send due now (``at`` is None) or at ``at``, which must be in the future."""
    campaign = get_campaign(conn, workspace_id, campaign_id)
    now = now or utcnow()
    if at is not None:
        at = as_utc(at)
        if at <= now:
            raise InvalidRequest(f"at must be in the future (it is {at.isoformat()}, now is {now.isoformat()})")
    if at is None:
        # "Send now" twice (a double click, a retried request) must not start two sends.
        active = conn.execute(
            select(campaign_sends.c.id)
            .where(
                campaign_sends.c.campaign_id == campaign.id,
                campaign_sends.c.status.in_(("scheduled", "running")),
                campaign_sends.c.scheduled_at <= now,
            )
            .limit(1)
        ).scalar()
        if active is not None:
            raise SendInProgress(f"send {active} of this campaign is already pending or running", send_id=int(active))
    try:
        with conn.begin_nested():
            send_id = conn.execute(
                insert(campaign_sends)
                .values(
                    workspace_id=workspace_id,
                    campaign_id=campaign.id,
                    status="scheduled",
                    scheduled_at=at or now,
                    created_at=now,
                    immediate=at is None,
                )
                .returning(campaign_sends.c.id)
            ).scalar_one()
    except IntegrityError as exc:  # the partial unique index: a concurrent "send now" won
        raise SendInProgress("a send of this campaign is already pending or running") from exc
    return get_send(conn, workspace_id, campaign_id, int(send_id))


def get_send(conn: Connection, workspace_id: str, campaign_id: str, send_id: int) -> CampaignSend:
    row = conn.execute(
        select(campaign_sends).where(
            campaign_sends.c.workspace_id == workspace_id,
            campaign_sends.c.campaign_id == campaign_id,
            campaign_sends.c.id == send_id,
        )
    ).first()
    if row is None:
        raise NotFound(f"send {send_id} of campaign {campaign_id!r} does not exist in this workspace")
    send = _row_to_send(row, _send_counts(conn, [int(row.id)])[int(row.id)])
    return replace(send, reasons=reason_counts(conn, campaign_deliveries, campaign_deliveries.c.send_id == send_id))


def list_sends(conn: Connection, workspace_id: str, campaign_id: str) -> list[CampaignSend]:
    get_campaign(conn, workspace_id, campaign_id)
    rows = conn.execute(
        select(campaign_sends)
        .where(campaign_sends.c.workspace_id == workspace_id, campaign_sends.c.campaign_id == campaign_id)
        .order_by(campaign_sends.c.id)
    ).all()
    counts = _send_counts(conn, [int(r.id) for r in rows])
    return [_row_to_send(r, counts[int(r.id)]) for r in rows]


def last_sends(conn: Connection, workspace_id: str) -> dict[str, CampaignSend]:
    """Each campaign's latest send, without its delivery counts (a listing stays cheap however big sends are)."""
    s = campaign_sends
    latest = (
        select(func.max(s.c.id)).where(s.c.workspace_id == workspace_id).group_by(s.c.campaign_id).scalar_subquery()
    )
    rows = conn.execute(select(s).where(s.c.id.in_(latest))).all()
    return {str(r.campaign_id): _row_to_send(r, {}) for r in rows}


def find_send(conn: Connection, send_id: int) -> tuple[str, str]:
    """``(workspace_id, campaign_id)`` of a send, for operator commands that only know its id."""
    row = conn.execute(
        select(campaign_sends.c.workspace_id, campaign_sends.c.campaign_id).where(campaign_sends.c.id == send_id)
    ).first()
    if row is None:
        raise NotFound(f"send {send_id} does not exist")
    return str(row.workspace_id), str(row.campaign_id)


def send_log(
    conn: Connection,
    workspace_id: str,
    campaign_id: str,
    send_id: int,
    *,
    status: str | None = None,
    limit: int = 100,
    after_user_id: int | None = None,
) -> list[dict[str, Any]]:
    """The per-user log of a send, by user id; page with ``after_user_id`` (the last ``user_id`` seen)."""
    get_send(conn, workspace_id, campaign_id, send_id)
    if status is not None and status not in DELIVERY_STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(DELIVERY_STATUSES)}, got {status!r}")
    if not 1 <= limit <= MAX_LOG_PAGE:
        raise InvalidRequest(f"limit must be between 1 and {MAX_LOG_PAGE}")
    d = campaign_deliveries
    query = (
        select(d.c.user_id, users.c.external_id, users.c.braze_id, d.c.status, d.c.reason, d.c.attempts, d.c.updated_at)
        .join(users, users.c.id == d.c.user_id)
        .where(d.c.send_id == send_id)
        .order_by(d.c.user_id)
        .limit(limit)
    )
    if status is not None:
        query = query.where(d.c.status == status)
    if after_user_id is not None:
        query = query.where(d.c.user_id > after_user_id)
    return [{**dict(r), "updated_at": as_utc(r["updated_at"]).isoformat()} for r in conn.execute(query).mappings()]


def campaign_stats(conn: Connection, workspace_id: str, campaign_id: str) -> dict[str, Any]:
    sends = list_sends(conn, workspace_id, campaign_id)
    totals = dict.fromkeys(DELIVERY_STATUSES, 0)
    for send in sends:
        for status, n in send.counts.items():
            totals[status] += n
    return {"campaign_id": campaign_id, "totals": totals, "sends": [s.to_dict() for s in sends]}


@dataclass(frozen=True)
class SendRun:
    """What one call of :func:`run_send` did."""

    send_id: int
    completed: bool
    attempted: int
    counts: dict[str, int]


def _materialize(conn: Connection, send_row: Any, campaign: Campaign, now: datetime) -> int:
    audience = audience_query(
        campaign.workspace_id, [audience_clause(conn, campaign.workspace_id, campaign.definition, now=now)]
    ).subquery()
    conn.execute(
        insert(campaign_deliveries).from_select(
            ["send_id", "user_id", "status", "attempts", "updated_at"],
            select(
                literal(int(send_row.id), BigId),
                audience.c.id,
                literal("pending"),
                literal(0),
                literal(now, TS),
            ),
        )
    )
    size = int(
        conn.execute(
            select(func.count()).select_from(campaign_deliveries).where(campaign_deliveries.c.send_id == send_row.id)
        ).scalar_one()
    )
    conn.execute(update(campaign_sends).where(campaign_sends.c.id == send_row.id).values(audience_size=size))
    return size


def _start(engine: Engine, send_id: int, now: datetime) -> Campaign | None:
    """The send's campaign once the send is running; the first worker to start it evaluates the audience.

    ``scheduled -> running`` is a conditional UPDATE in the same transaction as the audience's rows, so of two
    workers starting one send, one writes the audience (the other waits for its commit, then sees ``running``).
    """
    s = campaign_sends
    written = 0
    with engine.begin() as conn:
        row = conn.execute(select(s).where(s.c.id == send_id)).first()
        if row is None or row.status not in ("scheduled", "running") or as_utc(row.scheduled_at) > now:
            return None
        campaign = get_campaign(conn, str(row.workspace_id), str(row.campaign_id))
        if row.status == "scheduled":
            started = conn.execute(
                update(s).where(s.c.id == send_id, s.c.status == "scheduled").values(status="running", started_at=now)
            ).rowcount
            if started == 1:
                written = _materialize(conn, row, campaign, now)
            elif conn.execute(select(s.c.status).where(s.c.id == send_id)).scalar_one() != "running":
                return None
    refresh_statistics(engine, campaign_deliveries.name, new_rows=written)
    return campaign


def send_queue(campaign: Campaign, send_id: int) -> Queue:
    d, s = campaign_deliveries, campaign_sends
    return Queue(
        table=d,
        scope=(d.c.send_id == send_id,),
        message=campaign.definition.message,
        workspace_id=campaign.workspace_id,
        running=exists().where(s.c.id == send_id, s.c.status == "running"),
        key=lambda row: f"cf-campaign-{send_id}-{row['user_id']}",
        rate_limit_per_minute=campaign.definition.rate_limit_per_minute,
        ignore_frequency_caps=campaign.definition.ignore_frequency_capping,
    )


def run_send(
    engine: Engine,
    settings: MessagingSettings,
    send_id: int,
    *,
    clock: Clock = utcnow,
    batch_size: int | None = None,
) -> SendRun | None:
    """Work on a due send until nothing is left to claim; ``None`` when it is not due or not running.

    Any number of processes may call this at once for the same send: they share its messages (see
    :mod:`.engine`). A send with a rate limit is run by one process at a time (a lease), so the limit holds.
    """
    campaign = _start(engine, send_id, clock())
    if campaign is None:
        return None
    s = campaign_sends
    lease: Lease | None = None
    if campaign.definition.rate_limit_per_minute is not None:
        owner = new_owner()
        if not take_lease(
            engine,
            s,
            send_id,
            owner,
            now=clock(),
            seconds=settings.send_lease_seconds,
            where=[s.c.status == "running"],
        ):
            return None
        lease = Lease(engine, s, send_id, owner, seconds=settings.send_lease_seconds, clock=clock)
    try:
        result = drain(
            engine,
            settings,
            send_queue(campaign, send_id),
            new_owner(),
            clock=clock,
            batch_size=batch_size,
            keep=lease.keep if lease is not None else None,
        )
    finally:
        if lease is not None:
            lease.release()
    d = campaign_deliveries
    with engine.begin() as conn:
        unfinished = exists().where(d.c.send_id == send_id, d.c.status.in_(("pending", "claimed")))
        conn.execute(
            update(s)
            .where(s.c.id == send_id, s.c.status == "running", ~unfinished)
            .values(status="completed", finished_at=clock())
        )
        status = conn.execute(select(s.c.status).where(s.c.id == send_id)).scalar_one()
        counts = _send_counts(conn, [send_id])[send_id]
    return SendRun(send_id, status == "completed", result.attempted, counts)


def stop_send(conn: Connection, workspace_id: str, campaign_id: str, send_id: int, *, now: datetime) -> CampaignSend:
    """Stop a scheduled or running send: nothing more is claimed once this commits.

    Messages not yet sent are logged ``skipped`` (reason ``stopped``). A worker that is sending a batch sees the
    stop within 0.2 s (``engine.HEARTBEAT_SECONDS``) and skips the rest of its batch; only messages already
    handed to the channel then complete.
    """
    send = get_send(conn, workspace_id, campaign_id, send_id)
    if send.status not in ("scheduled", "running"):
        raise InvalidRequest(f"send {send_id} is {send.status}; only a scheduled or running send can be stopped")
    s, d = campaign_sends, campaign_deliveries
    conn.execute(update(s).where(s.c.id == send_id).values(status="canceled", finished_at=now))
    conn.execute(
        update(d)
        .where(
            d.c.send_id == send_id,
            or_(
                d.c.status == "pending",
                and_(d.c.status == "claimed", or_(d.c.claimed_until.is_(None), d.c.claimed_until < now)),
            ),
        )
        .values(status="skipped", reason=STOPPED_REASON, claimed_until=None, updated_at=now)
    )
    return get_send(conn, workspace_id, campaign_id, send_id)


def due_sends(conn: Connection, *, now: datetime, limit: int = 100) -> list[int]:
    """Sends that are due and not held by a live process (scheduled, or running with an expired lease)."""
    s = campaign_sends
    rows = conn.execute(
        select(s.c.id)
        .where(
            s.c.status.in_(("scheduled", "running")),
            s.c.scheduled_at <= now,
            or_(s.c.lease_expires_at.is_(None), s.c.lease_expires_at < now),
        )
        .order_by(s.c.scheduled_at, s.c.id)
        .limit(limit)
    )
    return [int(r.id) for r in rows]
