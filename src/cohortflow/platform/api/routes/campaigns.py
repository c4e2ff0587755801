"""Campaigns: create, list, show, update, preview a message for a user, send now, schedule, stop a send, the
per-user send log and statistics."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from cohortflow.platform.api.deps import RestWorkspace, Runtime
from cohortflow.platform.bounds import RowId, UtcDateTime
from cohortflow.platform.messaging import campaigns
from cohortflow.platform.messaging.campaigns import CampaignDefinition
from cohortflow.platform.messaging.channels import OutgoingEmail
from cohortflow.platform.messaging.messages import MessageSpec
from cohortflow.platform.messaging.preview import preview_message
from cohortflow.settings import MessagingSettings, get_settings

router = APIRouter(prefix="/campaigns", tags=["campaigns"])


def messaging_settings() -> MessagingSettings:
    return get_settings().messaging


Messaging = Annotated[MessagingSettings, Depends(messaging_settings)]


class PreviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: MessageSpec
    user: str = Field(description="The user to render for: an external ID, or else a Braze ID.")


class ScheduleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    at: UtcDateTime


@router.post("", status_code=201, summary="Create a campaign (validated whole; nothing is saved on error)")
def create_campaign(
    body: CampaignDefinition, runtime: Runtime, workspace_id: RestWorkspace, settings: Messaging
) -> dict[str, Any]:
    with runtime.transaction() as conn:
        return campaigns.create_campaign(conn, workspace_id, body, settings=settings).to_dict()


@router.post("/preview", summary="Render a message for one user, as a send would (nothing is sent)")
def preview(body: PreviewRequest, runtime: Runtime, workspace_id: RestWorkspace) -> dict[str, Any]:
    with runtime.transaction() as conn:
        shown = preview_message(conn, workspace_id, body.message, body.user)
    outgoing = shown.outgoing
    rendered: dict[str, Any] | None = None
    if isinstance(outgoing, OutgoingEmail):
        rendered = {
            "to": outgoing.to_address,
            "subject": outgoing.subject,
            "text": outgoing.text,
            "html": outgoing.html,
        }
    elif outgoing is not None:
        rendered = {"url": outgoing.url, "body": outgoing.body, "headers": outgoing.headers}
    return {
        "user": {"external_id": shown.external_id, "braze_id": shown.braze_id},
        "skipped": shown.skipped,
        "failed": shown.failed,
        "rendered": rendered,
    }


@router.get("", summary="List campaigns")
def list_campaigns(runtime: Runtime, workspace_id: RestWorkspace) -> dict[str, Any]:
    with runtime.transaction() as conn:
        return {"campaigns": [c.to_dict() for c in campaigns.list_campaigns(conn, workspace_id)]}


@router.get("/{campaign_id}", summary="Show a campaign")
def get_campaign(campaign_id: str, runtime: Runtime, workspace_id: RestWorkspace) -> dict[str, Any]:
    with runtime.transaction() as conn:
        return campaigns.get_campaign(conn, workspace_id, campaign_id).to_dict()


@router.put("/{campaign_id}", summary="Replace a campaign's definition (validated whole; nothing changes on error)")
def update_campaign(
    campaign_id: str, body: CampaignDefinition, runtime: Runtime, workspace_id: RestWorkspace, settings: Messaging
) -> dict[str, Any]:
    with runtime.transaction() as conn:
        return campaigns.update_campaign(conn, workspace_id, campaign_id, body, settings=settings).to_dict()


@router.post("/{campaign_id}/send-now", status_code=202, summary="Start a send now; it runs in the background")
def send_now(
    campaign_id: str,
    runtime: Runtime,
    workspace_id: RestWorkspace,
    settings: Messaging,
    background: BackgroundTasks,
) -> dict[str, Any]:
    with runtime.transaction() as conn:
        send = campaigns.request_send(conn, workspace_id, campaign_id, now=runtime.clock())
    # Runs after the response; if this process dies, the worker resumes the send when its lease expires.
    background.add_task(campaigns.run_send, runtime.engine, settings, send.id, clock=runtime.clock)
    return send.to_dict()


@router.post("/{campaign_id}/schedule", status_code=201, summary="Schedule a send; the worker runs it when due")
def schedule(campaign_id: str, body: ScheduleRequest, runtime: Runtime, workspace_id: RestWorkspace) -> dict[str, Any]:
    with runtime.transaction() as conn:
        return campaigns.request_send(conn, workspace_id, campaign_id, at=body.at, now=runtime.clock()).to_dict()


@router.get("/{campaign_id}/sends", summary="A campaign's sends with their counts")
def list_sends(campaign_id: str, runtime: Runtime, workspace_id: RestWorkspace) -> dict[str, Any]:
    with runtime.transaction() as conn:
        return {"sends": [s.to_dict() for s in campaigns.list_sends(conn, workspace_id, campaign_id)]}


@router.get("/{campaign_id}/sends/{send_id}", summary="One send with its counts")
def get_send(campaign_id: str, send_id: RowId, runtime: Runtime, workspace_id: RestWorkspace) -> dict[str, Any]:
    with runtime.transaction() as conn:
        return campaigns.get_send(conn, workspace_id, campaign_id, send_id).to_dict()


@router.post("/{campaign_id}/sends/{send_id}/stop", summary="Stop a scheduled or running send: it sends nothing more")
def stop_send(campaign_id: str, send_id: RowId, runtime: Runtime, workspace_id: RestWorkspace) -> dict[str, Any]:
    with runtime.transaction() as conn:
        return campaigns.stop_send(conn, workspace_id, campaign_id, send_id, now=runtime.clock()).to_dict()


@router.get("/{campaign_id}/sends/{send_id}/log", summary="Per-user send log (sent, failed with reason, skipped)")
def send_log(
    campaign_id: str,
    send_id: RowId,
    runtime: Runtime,
    workspace_id: RestWorkspace,
    status: Literal["pending", "claimed", "sent", "failed", "skipped"] | None = None,
    limit: Annotated[int, Query(ge=1, le=campaigns.MAX_LOG_PAGE)] = 100,
    after_user_id: RowId | None = None,
) -> dict[str, Any]:
    with runtime.transaction() as conn:
        entries = campaigns.send_log(
            conn, workspace_id, campaign_id, send_id, status=status, limit=limit, after_user_id=after_user_id
        )
    return {"entries": entries, "next_after_user_id": entries[-1]["user_id"] if len(entries) == limit else None}


@router.get("/{campaign_id}/stats", summary="Counts per status, per send and in total")
def stats(campaign_id: str, runtime: Runtime, workspace_id: RestWorkspace) -> dict[str, Any]:
    with runtime.transaction() as conn:
        return campaigns.campaign_stats(conn, workspace_id, campaign_id)
