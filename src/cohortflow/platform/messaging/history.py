"""What one user received: campaign sends and Canvas message steps that reached (or tried to reach) them.

The delivery tables have no index on ``user_id`` alone (every message of a send would pay for one), so a user's
history probes their primary keys instead: once per send of the workspace's campaigns (``(send_id, user_id)``)
and once per Canvas the user entered (``canvas_positions``, then ``(canvas_id, step_id, user_id)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from cohortflow.clock import as_utc
from cohortflow.platform.store.schema import (
    campaign_deliveries,
    campaign_sends,
    campaigns,
    canvas_deliveries,
    canvas_positions,
    canvases,
)


@dataclass(frozen=True)
class ReceivedMessage:
    source: str  # "campaign" | "canvas"
    source_id: str
    name: str
    detail: str  # "send 12" or the Canvas step's id
    channel: str
    status: str  # sent | failed | skipped | claimed | pending
    reason: str | None
    at: datetime


def received_messages(conn: Connection, workspace_id: str, user_id: int, *, limit: int = 50) -> list[ReceivedMessage]:
    """The user's messages, newest first (at most ``limit``)."""
    d, s, c = campaign_deliveries, campaign_sends, campaigns
    sends = select(s.c.id).where(s.c.workspace_id == workspace_id)
    found = [
        ReceivedMessage(
            "campaign",
            str(r.campaign_id),
            str(r.name),
            f"send {r.send_id}",
            str(r.channel),
            str(r.status),
            r.reason,
            as_utc(r.updated_at),
        )
        for r in conn.execute(
            select(d.c.send_id, d.c.status, d.c.reason, d.c.updated_at, s.c.campaign_id, c.c.name, c.c.channel)
            .join(s, s.c.id == d.c.send_id)
            .join(c, c.c.id == s.c.campaign_id)
            .where(d.c.send_id.in_(sends), d.c.user_id == user_id)
            .order_by(d.c.updated_at.desc())
            .limit(limit)
        )
    ]
    cd, cp, cv = canvas_deliveries, canvas_positions, canvases
    entered = (
        select(cp.c.canvas_id)
        .join(cv, cv.c.id == cp.c.canvas_id)
        .where(cv.c.workspace_id == workspace_id, cp.c.user_id == user_id)
    )
    for r in conn.execute(
        select(cd.c.canvas_id, cd.c.step_id, cd.c.status, cd.c.reason, cd.c.updated_at, cv.c.name, cv.c.definition)
        .join(cv, cv.c.id == cd.c.canvas_id)
        .where(cd.c.canvas_id.in_(entered), cd.c.user_id == user_id)
        .order_by(cd.c.updated_at.desc())
        .limit(limit)
    ):
        step: dict[str, Any] = next((st for st in r.definition.get("steps", []) if st.get("id") == r.step_id), {})
        channel = str(step.get("message", {}).get("channel", ""))
        found.append(
            ReceivedMessage(
                "canvas",
                str(r.canvas_id),
                str(r.name),
                str(r.step_id),
                channel,
                str(r.status),
                r.reason,
                as_utc(r.updated_at),
            )
        )
    return sorted(found, key=lambda m: m.at, reverse=True)[:limit]
