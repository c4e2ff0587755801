"""Global frequency capping: at most N messages per user per channel in any period, across every campaign and
Canvas of the workspace, however many workers send at once.

A message counts when it is claimed (a ``message_receipts`` row written in the claim's transaction) and stops
counting if it fails or is skipped. Claims that may cap lock the users they are about to count (in user id order,
so two claims never deadlock), which makes "count, then add" atomic across workers on PostgreSQL; on SQLite the
whole claim holds the database's writer lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection, delete, func, insert, select

from cohortflow.platform.errors import InvalidRequest, NotFound
from cohortflow.platform.messaging.messages import Channel, parse_model
from cohortflow.platform.store.schema import frequency_caps, message_receipts, users, workspaces

CAPPED_REASON = "frequency capped"


class FrequencyCap(BaseModel):
    """At most ``max_messages`` per user on ``channel`` in any ``period_seconds``."""

    model_config = ConfigDict(extra="forbid")

    channel: Channel
    max_messages: int = Field(ge=1, le=1000)
    period_seconds: int = Field(ge=60, le=366 * 86400, description="Rolling window, e.g. 86400 for a day.")


@dataclass(frozen=True)
class ActiveCap:
    max_messages: int
    period: timedelta


def list_caps(conn: Connection, workspace_id: str) -> list[FrequencyCap]:
    rows = conn.execute(
        select(frequency_caps).where(frequency_caps.c.workspace_id == workspace_id).order_by(frequency_caps.c.channel)
    )
    return [FrequencyCap(channel=r.channel, max_messages=r.max_messages, period_seconds=r.period_seconds) for r in rows]


def _writing_caps(conn: Connection, workspace_id: str) -> None:
    """Serialize changes to one workspace's caps: two saves at once would both delete, then both insert the same
    channel, and the second would fail on the primary key instead of winning. (SQLite's writer lock does this.)"""
    if conn.dialect.name == "postgresql":
        conn.execute(select(workspaces.c.id).where(workspaces.c.id == workspace_id).with_for_update())


def set_caps(conn: Connection, workspace_id: str, caps: Sequence[FrequencyCap | dict[str, Any]]) -> list[FrequencyCap]:
    """Replace the workspace's caps (an empty list removes them); at most one per channel."""
    parsed = [parse_model(FrequencyCap, c, what="frequency cap") for c in caps]
    channels = [c.channel for c in parsed]
    if len(set(channels)) != len(channels):
        raise InvalidRequest("frequency caps: at most one cap per channel")
    _writing_caps(conn, workspace_id)
    conn.execute(delete(frequency_caps).where(frequency_caps.c.workspace_id == workspace_id))
    if parsed:
        conn.execute(insert(frequency_caps), [{"workspace_id": workspace_id, **c.model_dump()} for c in parsed])
    return list_caps(conn, workspace_id)


def set_cap(conn: Connection, workspace_id: str, cap: FrequencyCap | dict[str, Any]) -> list[FrequencyCap]:
    """Set one channel's cap, replacing that channel's cap if it has one; the other channels keep theirs."""
    parsed = parse_model(FrequencyCap, cap, what="frequency cap")
    _writing_caps(conn, workspace_id)
    conn.execute(
        delete(frequency_caps).where(
            frequency_caps.c.workspace_id == workspace_id, frequency_caps.c.channel == parsed.channel
        )
    )
    conn.execute(insert(frequency_caps), [{"workspace_id": workspace_id, **parsed.model_dump()}])
    return list_caps(conn, workspace_id)


def remove_cap(conn: Connection, workspace_id: str, channel: str) -> FrequencyCap:
    """Remove one channel's cap; the channel's messages are no longer capped."""
    _writing_caps(conn, workspace_id)
    for cap in list_caps(conn, workspace_id):
        if cap.channel == channel:
            conn.execute(
                delete(frequency_caps).where(
                    frequency_caps.c.workspace_id == workspace_id, frequency_caps.c.channel == channel
                )
            )
            return cap
    raise NotFound(f"no frequency cap on {channel!r} in this workspace")


def active_cap(conn: Connection, workspace_id: str, channel: str) -> ActiveCap | None:
    row = conn.execute(
        select(frequency_caps.c.max_messages, frequency_caps.c.period_seconds).where(
            frequency_caps.c.workspace_id == workspace_id, frequency_caps.c.channel == channel
        )
    ).first()
    return ActiveCap(int(row.max_messages), timedelta(seconds=int(row.period_seconds))) if row else None


def reserve(conn: Connection, cap: ActiveCap, channel: str, keys: dict[int, str], now: datetime) -> set[int]:
    """Count each user's messages in the window and add this one for those under the cap; returns the capped."""
    if not keys:
        return set()
    ids = sorted(keys)
    if conn.dialect.name == "postgresql":
        conn.execute(select(users.c.id).where(users.c.id.in_(ids)).order_by(users.c.id).with_for_update(key_share=True))
    r = message_receipts
    counts = {
        int(user_id): int(n)
        for user_id, n in conn.execute(
            select(r.c.user_id, func.count())
            .where(r.c.user_id.in_(ids), r.c.channel == channel, r.c.at > now - cap.period)
            .group_by(r.c.user_id)
        )
    }
    capped = {uid for uid in ids if counts.get(uid, 0) >= cap.max_messages}
    rows = [{"user_id": uid, "channel": channel, "source": keys[uid], "at": now} for uid in ids if uid not in capped]
    if rows:
        conn.execute(insert(r), rows)
    return capped


def release(conn: Connection, keys: Sequence[str]) -> None:
    """Messages that were not sent after all no longer count."""
    if keys:
        conn.execute(delete(message_receipts).where(message_receipts.c.source.in_(list(keys))))
