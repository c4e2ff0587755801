"""Campaigns: the list, the editor (email or webhook to segments, with a Liquid preview for a chosen user), a
campaign's page (send now, schedule, the sends' sent / failed / skipped counts while they run) and a send's log.

The editor posts its whole form; the live script asks for one part back (``fragment``): the audience (after the
segments changed), the editor (after the channel changed) or the preview (after typing). Sends run as the API
runs them: the send is requested, then delivered in the background by this server process (a worker resumes it
if the process dies); scheduled sends are delivered by ``cohortflow platform worker run``.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from cohortflow.platform.dashboard.access import AnyRole, WorkspacePage
from cohortflow.platform.dashboard.campaign_form import CampaignForm
from cohortflow.platform.errors import AlreadyExists, InvalidRequest, NotFound
from cohortflow.platform.messaging import campaigns
from cohortflow.platform.messaging.preview import preview_message
from cohortflow.platform.segments import service as segments
from cohortflow.settings import MessagingSettings, get_settings

router = APIRouter(prefix="/w/{workspace_id}/campaigns")
SAMPLE_USERS = 10
LOG_PAGE = 100


async def form_data(request: Request) -> FormData:
    """The posted form (read on the event loop; the view then runs in a worker thread)."""
    return await request.form()


Form = Annotated[FormData, Depends(form_data)]


def messaging_settings() -> MessagingSettings:
    return get_settings().messaging


Messaging = Annotated[MessagingSettings, Depends(messaging_settings)]


@router.get("", response_class=HTMLResponse)
def campaign_list(page: AnyRole) -> HTMLResponse:
    with page.transaction() as conn:
        items = campaigns.list_campaigns(conn, page.workspace_id)
        last = campaigns.last_sends(conn, page.workspace_id)
        names = {s.id: s.name for s in segments.list_segments(conn, page.workspace_id)}
    rows = [(c, [names.get(s, s) for s in c.definition.segment_ids], last.get(c.id)) for c in reversed(items)]
    return page.render("dashboard/campaigns.html", {"rows": rows})


# --- the editor ------------------------------------------------------------------------------------------


def _samples(page: WorkspacePage, segment_ids: list[str]) -> list[tuple[str, str]]:
    """A few members of the chosen segments to preview the message for: (external or Braze ID, description)."""
    found: dict[str, str] = {}
    now = page.runtime.clock()
    with page.transaction() as conn:
        for segment_id in segment_ids[:3]:
            try:
                members = segments.preview_members(conn, page.workspace_id, segment_id, limit=SAMPLE_USERS, now=now)
            except NotFound:
                continue
            for m in members:
                ref = m["external_id"] or m["braze_id"]
                found.setdefault(ref, m["email"] or ("anonymous" if not m["external_id"] else "no email address"))
    return list(found.items())[:SAMPLE_USERS]


def _preview(page: WorkspacePage, form: CampaignForm) -> dict[str, Any]:
    """The preview panel: the message rendered for the chosen user, or what keeps it from being rendered."""
    none: dict[str, Any] = {"preview": None, "preview_error": None, "preview_missing": None}
    if not form.preview_user:
        return none
    draft = dataclasses.replace(form, errors={})
    message = draft.message()
    if message is None:  # still being written: say what is missing, calmly
        missing = ", ".join(m.rstrip(".")[:1].lower() + m.rstrip(".")[1:] for m in draft.errors.values())
        return {**none, "preview_missing": missing}
    try:
        with page.transaction() as conn:
            return {**none, "preview": preview_message(conn, page.workspace_id, message, form.preview_user)}
    except (InvalidRequest, NotFound) as exc:
        return {**none, "preview_error": exc.message[:1].upper() + exc.message[1:] + "."}


def _editor(
    page: WorkspacePage,
    form: CampaignForm,
    campaign: campaigns.Campaign | None,
    *,
    fragment: str | None = None,
    save_error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    with page.transaction() as conn:
        all_segments = segments.list_segments(conn, page.workspace_id)
    samples = _samples(page, form.segment_ids) if fragment in (None, "campaign-audience") else []
    if fragment is None and not form.preview_user and samples:
        form.preview_user = samples[0][0]
    path = f"/w/{page.workspace_id}/campaigns/{campaign.id + '/edit' if campaign else 'new'}"
    context = {
        "form": form,
        "campaign": campaign,
        "segments": list(reversed(all_segments)),
        "samples": samples,
        "form_url": f"{page.kit.prefix(page.request)}{path}",
        "save_error": save_error,
        **(_preview(page, form) if fragment in (None, "campaign-editor", "campaign-preview") else {}),
    }
    template = {
        "campaign-audience": "dashboard/_campaign_audience.html",
        "campaign-editor": "dashboard/_campaign_editor.html",
        "campaign-preview": "dashboard/_campaign_preview.html",
    }.get(fragment or "", "dashboard/campaign_form.html")
    return page.render(template, context, status_code=status_code)


@router.get("/new", response_class=HTMLResponse)
def new_campaign(page: AnyRole, channel: str = "email", segment: str | None = None) -> HTMLResponse:
    form = CampaignForm(
        channel="webhook" if channel == "webhook" else "email", segment_ids=[segment] if segment else []
    )
    return _editor(page, form, None)


@router.post("/new", response_class=HTMLResponse)
def post_new_campaign(page: AnyRole, form: Form, settings: Messaging) -> Response:
    return _post_editor(page, CampaignForm.from_form(form), None, form.get("action"), form.get("fragment"), settings)


@router.get("/{campaign_id}/edit", response_class=HTMLResponse)
def edit_campaign(page: AnyRole, campaign_id: str) -> HTMLResponse:
    with page.transaction() as conn:
        campaign = campaigns.get_campaign(conn, page.workspace_id, campaign_id)
    return _editor(page, CampaignForm.from_campaign(campaign), campaign)


@router.post("/{campaign_id}/edit", response_class=HTMLResponse)
def post_edit_campaign(page: AnyRole, campaign_id: str, form: Form, settings: Messaging) -> Response:
    with page.transaction() as conn:
        campaign = campaigns.get_campaign(conn, page.workspace_id, campaign_id)
    return _post_editor(
        page, CampaignForm.from_form(form), campaign, form.get("action"), form.get("fragment"), settings
    )


def _post_editor(
    page: WorkspacePage,
    form: CampaignForm,
    campaign: campaigns.Campaign | None,
    action: object,
    fragment: object,
    settings: MessagingSettings,
) -> Response:
    live = str(fragment) if page.kit.is_fragment_request(page.request) and fragment else None
    if action != "save":
        return _editor(page, form, campaign, fragment=live)
    definition = form.definition()
    if definition is None:
        return _editor(
            page, form, campaign, save_error="The campaign was not saved: fix what is marked below.", status_code=400
        )
    try:
        with page.transaction() as conn:
            if campaign is None:
                saved = campaigns.create_campaign(conn, page.workspace_id, definition, settings=settings)
            else:
                saved = campaigns.update_campaign(conn, page.workspace_id, campaign.id, definition, settings=settings)
    except (InvalidRequest, AlreadyExists) as exc:
        return _editor(page, form, campaign, save_error=f"The campaign was not saved: {exc.message}.", status_code=400)
    return page.redirect(f"/campaigns/{saved.id}", f"Campaign “{saved.name}” saved.")


# --- a campaign, its sends -------------------------------------------------------------------------------


def _sends_context(page: WorkspacePage, campaign_id: str) -> dict[str, Any]:
    with page.transaction() as conn:
        sends = campaigns.list_sends(conn, page.workspace_id, campaign_id)
    now = page.runtime.clock()
    running = any(s.status == "running" or (s.status == "scheduled" and s.scheduled_at <= now) for s in sends)
    waiting = any(s.status == "scheduled" for s in sends)
    return {
        "sends": list(reversed(sends)),
        "campaign_id": campaign_id,
        # Poll fast while a send runs, slowly while one waits for its time, not at all otherwise.
        "poll_seconds": 1 if running else (10 if waiting else None),
    }


@router.get("/{campaign_id}", response_class=HTMLResponse)
def campaign_page(page: AnyRole, campaign_id: str) -> HTMLResponse:
    with page.transaction() as conn:
        campaign = campaigns.get_campaign(conn, page.workspace_id, campaign_id)
        names = {s.id: s.name for s in segments.list_segments(conn, page.workspace_id)}
    return page.render(
        "dashboard/campaign.html",
        {
            "campaign": campaign,
            "targets": [(s, names.get(s, s)) for s in campaign.definition.segment_ids],
            "schedule_value": page.request.query_params.get("at", ""),
            **_sends_context(page, campaign_id),
        },
    )


@router.get("/{campaign_id}/sends", response_class=HTMLResponse)
def campaign_sends(page: AnyRole, campaign_id: str) -> HTMLResponse:
    """The sends table alone: what the campaign page polls while a send runs."""
    with page.transaction() as conn:
        campaigns.get_campaign(conn, page.workspace_id, campaign_id)
    return page.render("dashboard/_campaign_sends.html", _sends_context(page, campaign_id))


@router.post("/{campaign_id}/send-now")
def send_now(page: AnyRole, campaign_id: str, settings: Messaging, background: BackgroundTasks) -> RedirectResponse:
    runtime = page.runtime
    try:
        with page.transaction() as conn:
            send = campaigns.request_send(conn, page.workspace_id, campaign_id, now=runtime.clock())
    except campaigns.SendInProgress as exc:
        # A double click: the first click's send is the one running.
        return page.redirect(f"/campaigns/{campaign_id}", f"Not sent again: {exc.message}.", "error")
    # As the API does: delivered after the answer; if this process dies, a worker resumes when the lease ends.
    background.add_task(campaigns.run_send, runtime.engine, settings, send.id, clock=runtime.clock)
    return page.redirect(f"/campaigns/{campaign_id}", f"Send {send.id} started: its counts update below as it runs.")


@router.post("/{campaign_id}/schedule")
def schedule(page: AnyRole, campaign_id: str, form: Form) -> RedirectResponse:
    raw = form.get("at")
    text = raw.strip() if isinstance(raw, str) else ""
    try:
        at = datetime.fromisoformat(text).replace(tzinfo=UTC) if text else None
    except ValueError:
        at = None
    if at is None:
        return page.redirect(
            f"/campaigns/{campaign_id}", "Not scheduled: enter a date and a time (UTC), e.g. 2030-01-31 09:00.", "error"
        )
    try:
        with page.transaction() as conn:
            send = campaigns.request_send(conn, page.workspace_id, campaign_id, at=at, now=page.runtime.clock())
    except InvalidRequest as exc:
        return page.redirect(f"/campaigns/{campaign_id}", f"Not scheduled: {exc.message}.", "error")
    return page.redirect(
        f"/campaigns/{campaign_id}", f"Send {send.id} scheduled for {at.strftime('%Y-%m-%d %H:%M')} UTC."
    )


@router.post("/{campaign_id}/sends/{send_id}/stop")
def stop_send(page: AnyRole, campaign_id: str, send_id: int) -> RedirectResponse:
    try:
        with page.transaction() as conn:
            send = campaigns.stop_send(conn, page.workspace_id, campaign_id, send_id, now=page.runtime.clock())
    except InvalidRequest as exc:
        return page.redirect(f"/campaigns/{campaign_id}", f"Not stopped: {exc.message}.", "error")
    return page.redirect(f"/campaigns/{campaign_id}", f"Send {send.id} stopped: it sends nothing more.")


@router.get("/{campaign_id}/sends/{send_id}", response_class=HTMLResponse)
def send_page(page: AnyRole, campaign_id: str, send_id: int, status: str | None = None) -> HTMLResponse:
    with page.transaction() as conn:
        campaign = campaigns.get_campaign(conn, page.workspace_id, campaign_id)
        send = campaigns.get_send(conn, page.workspace_id, campaign_id, send_id)
        shown = status if status in campaigns.DELIVERY_STATUSES else None
        log = campaigns.send_log(conn, page.workspace_id, campaign_id, send_id, status=shown, limit=LOG_PAGE)
    return page.render(
        "dashboard/campaign_send.html",
        {"campaign": campaign, "send": send, "log": log, "status": shown, "limit": LOG_PAGE,
         "statuses": campaigns.DELIVERY_STATUSES},
    )  # fmt: skip
