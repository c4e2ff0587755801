"""Settings > Frequency capping: the workspace's rules (at most N messages per user per channel per period), one
per channel, set, changed and removed; and the campaigns and Canvases that ignore them.

Every role may read the rules, because they explain why a send skipped users ("frequency capped"); only admins,
who change settings, may change them. The same domain functions as ``/messaging/frequency_caps`` and
``cohortflow platform campaign frequency-caps``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from cohortflow.platform.dashboard import frequency_form as ff
from cohortflow.platform.dashboard.access import AdminOnly, AnyRole, WorkspacePage
from cohortflow.platform.messaging import campaigns, canvas, frequency

router = APIRouter(prefix="/w/{workspace_id}/settings/frequency-capping")


async def form_data(request: Request) -> FormData:
    return await request.form()


Form = Annotated[FormData, Depends(form_data)]


def _page(page: WorkspacePage, form: ff.CapForm, *, editing: bool = False, status_code: int = 200) -> HTMLResponse:
    with page.transaction() as conn:
        caps = frequency.list_caps(conn, page.workspace_id)
        ruled = {cap.channel for cap in caps}
        ignoring_campaigns = [
            c for c in campaigns.list_campaigns(conn, page.workspace_id) if c.definition.ignore_frequency_capping
        ]
        ignoring_canvases = [
            c for c in canvas.list_canvases(conn, page.workspace_id) if c.definition.ignore_frequency_capping
        ]
    return page.render(
        "dashboard/settings_frequency.html",
        {
            "caps": [(cap, ff.rule_words(cap)) for cap in caps],
            "form": form,
            "editing": editing,
            # The add form offers the channels without a rule (one rule per channel; a rule is changed by Edit),
            # and keeps the channel of a refused form so that it shows what was entered.
            "free_channels": [
                (c, ff.channel_label(c)) for c in ff.CHANNELS if c not in ruled or (form.errors and c == form.channel)
            ],
            "channel_label": ff.channel_label(form.channel),
            "ignoring_campaigns": ignoring_campaigns,
            "ignoring_canvases": ignoring_canvases,
        },
        status_code=status_code,
    )


@router.get("", response_class=HTMLResponse)
def frequency_page(page: AnyRole, channel: str = "") -> HTMLResponse:
    """``?channel=email`` opens that channel's rule in the form, to change it."""
    with page.transaction() as conn:
        current = {cap.channel: cap for cap in frequency.list_caps(conn, page.workspace_id)}
    if channel in current:
        return _page(page, ff.CapForm.from_cap(current[channel]), editing=True)
    free = [c for c in ff.CHANNELS if c not in current]
    return _page(page, ff.CapForm(channel=free[0] if free else ff.CHANNELS[0]))


@router.post("", response_class=HTMLResponse)
def save_rule(page: AdminOnly, form: Form) -> Response:
    fields = ff.CapForm.from_form(form)
    cap = fields.cap()
    if cap is None:
        return _page(page, fields, editing=form.get("editing") == "1", status_code=400)
    with page.transaction() as conn:
        frequency.set_cap(conn, page.workspace_id, cap)
    words = ff.rule_words(cap)
    return page.redirect("/settings/frequency-capping", f"Rule saved: {words[:1].lower()}{words[1:]}.")


@router.post("/{channel}/remove")
def remove_rule(page: AdminOnly, channel: str) -> RedirectResponse:
    with page.transaction() as conn:
        cap = frequency.remove_cap(conn, page.workspace_id, channel)
    label = ff.channel_label(cap.channel)
    return page.redirect(
        "/settings/frequency-capping", f"The {label.lower()} rule is removed: {label.lower()} messages are not capped."
    )
