"""Canvas: the list, the editor (entry segment, schedule, message / delay / audience paths / exit steps) with the
journey drawn as a flow while it is built, and a Canvas's page: the flow with each step's counts, launch.

The editor posts its whole form; the live script asks for the editor back (``fragment``) after a select changed or
a button was pressed, so the flow follows every change. The worker (``cohortflow platform worker run``) lets users
enter and moves them; the page re-reads the counts while the Canvas is active.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from cohortflow.platform.dashboard import canvas_form as cf
from cohortflow.platform.dashboard import segment_builder as sb
from cohortflow.platform.dashboard.access import AnyRole, WorkspacePage
from cohortflow.platform.dashboard.flow import Flow, FlowStep, layout
from cohortflow.platform.errors import AlreadyExists, InvalidRequest
from cohortflow.platform.messaging import canvas
from cohortflow.platform.segments import service as segments
from cohortflow.settings import MessagingSettings, get_settings

router = APIRouter(prefix="/w/{workspace_id}/canvas")


async def form_fields(request: Request) -> dict[str, str]:
    form = await request.form()
    return {name: value for name, value in form.items() if isinstance(value, str)}


FormFields = Annotated[dict[str, str], Depends(form_fields)]


def messaging_settings() -> MessagingSettings:
    return get_settings().messaging


Messaging = Annotated[MessagingSettings, Depends(messaging_settings)]


def _schedule_words(form: cf.CanvasForm) -> str:
    if form.schedule == "at":
        return f"once, at {form.at.replace('T', ' ')} UTC" if form.at else "once, at a time to choose"
    if form.schedule == "recurring":
        return f"recurring: {form.cron or '(cron)'}" + (f" until {form.until.replace('T', ' ')}" if form.until else "")
    return "as soon as it is launched"


def _duration(step: cf.StepForm) -> str:
    parts = [
        f"{value} {unit if value != '1' else unit[:-1]}"
        for value, unit in (
            (step.days, "days"),
            (step.hours, "hours"),
            (step.minutes, "minutes"),
            (step.seconds, "seconds"),
        )
        if value and value != "0"
    ]
    return " ".join(parts) or "no time"


def flow_of(form: cf.CanvasForm, segment_name: str, stats: dict[str, Any] | None = None) -> Flow:
    """The journey as a flow; with ``stats`` (``canvas.canvas_stats``), each box carries its counts."""
    counts = {s["id"]: s for s in (stats or {}).get("steps", [])}
    entry_lines = [f"Enters {_schedule_words(form)}"]
    if stats is not None:
        entry_lines.append(f"entered {stats['entered']:,} · in it now {stats['active']:,}")
    entry = FlowStep("entry", "entry", f"Entry: {segment_name or 'choose a segment'}", entry_lines, [])
    steps = []
    for number, step in enumerate(form.steps, start=1):
        title = f"{number}. {step.name or cf.STEP_TYPES.get(step.type, step.type)}"
        seen = counts.get(step.id)
        successors = step.successors()
        if step.type == "message":
            detail = f"{step.channel.capitalize()}: " + (step.subject if step.channel == "email" else step.url)
            tally = f"sent {seen['sent']:,} · failed {seen['failed']:,} · skipped {seen['skipped']:,}" if seen else ""
        elif step.type == "delay":
            detail = f"Wait {_duration(step)}"
            tally = f"waiting {seen['at_step']:,} · entered {seen['entered']:,}" if seen else ""
        elif step.type == "split":
            detail = f"{len(step.paths)} path{'s' if len(step.paths) != 1 else ''} and {cf.EVERYONE_ELSE}"
            tally = f"entered {seen['entered']:,}" if seen else ""
            if seen and seen.get("paths"):
                successors = [(target, f"{label}: {seen['paths'].get(label, 0):,}") for target, label in successors]
        else:
            detail = "Users leave the Canvas"
            tally = f"exited {seen['exited']:,}" if seen else ""
        steps.append(FlowStep(step.id, step.type, title, [detail, tally] if tally else [detail], successors))
    return layout(entry, steps)


# --- list ------------------------------------------------------------------------------------------------


@router.get("", response_class=HTMLResponse)
def canvas_list(page: AnyRole) -> HTMLResponse:
    with page.transaction() as conn:
        items = canvas.list_canvases(conn, page.workspace_id)
        names = {s.id: s.name for s in segments.list_segments(conn, page.workspace_id)}
    return page.render("dashboard/canvases.html", {"items": list(reversed(items)), "segment_names": names})


# --- the editor ------------------------------------------------------------------------------------------


def _editor(
    page: WorkspacePage,
    form: cf.CanvasForm,
    catalogue: sb.Catalogue,
    existing: canvas.Canvas | None,
    *,
    fragment: str | None = None,
    save_error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    with page.transaction() as conn:
        all_segments = list(reversed(segments.list_segments(conn, page.workspace_id)))
    names = {s.id: s.name for s in all_segments}
    path = f"/w/{page.workspace_id}/canvas/{existing.id + '/edit' if existing else 'new'}"
    context = {
        "form": form,
        "catalogue": catalogue,
        "existing": existing,
        "segments": all_segments,
        "flow": flow_of(form, names.get(form.entry_segment_id, "")),
        "form_url": f"{page.kit.prefix(page.request)}{path}",
        "save_error": save_error,
        "cf": cf,
        "sb": sb,
    }
    template = "dashboard/_canvas_editor.html" if fragment == "canvas-editor" else "dashboard/canvas_form.html"
    return page.render(template, context, status_code=status_code)


def _catalogue(page: WorkspacePage) -> sb.Catalogue:
    with page.transaction() as conn:
        return sb.Catalogue.from_service(segments.filter_catalogue(conn, page.workspace_id))


@router.get("/new", response_class=HTMLResponse)
def new_canvas(page: AnyRole, segment: str = "") -> HTMLResponse:
    catalogue = _catalogue(page)
    return _editor(page, cf.default_form(catalogue, segment), catalogue, None)


@router.post("/new", response_class=HTMLResponse)
def post_new_canvas(page: AnyRole, form: FormFields, settings: Messaging) -> Response:
    return _post_editor(page, form, None, settings)


def _draft(page: WorkspacePage, canvas_id: str) -> canvas.Canvas | RedirectResponse:
    with page.transaction() as conn:
        found = canvas.get_canvas(conn, page.workspace_id, canvas_id)
    if found.status != "draft":
        return page.redirect(
            f"/canvas/{canvas_id}", f"“{found.name}” is {found.status}: only a draft can be edited.", "error"
        )
    return found


@router.get("/{canvas_id}/edit", response_class=HTMLResponse)
def edit_canvas(page: AnyRole, canvas_id: str) -> Response:
    found = _draft(page, canvas_id)
    if isinstance(found, RedirectResponse):
        return found
    catalogue = _catalogue(page)
    return _editor(page, cf.from_definition(found.definition, catalogue), catalogue, found)


@router.post("/{canvas_id}/edit", response_class=HTMLResponse)
def post_edit_canvas(page: AnyRole, canvas_id: str, form: FormFields, settings: Messaging) -> Response:
    found = _draft(page, canvas_id)
    if isinstance(found, RedirectResponse):
        return found
    return _post_editor(page, form, found, settings)


def _post_editor(
    page: WorkspacePage, fields: dict[str, str], existing: canvas.Canvas | None, settings: MessagingSettings
) -> Response:
    catalogue = _catalogue(page)
    form = cf.from_form(fields, catalogue)
    action = fields.get("action", "refresh")
    fragment = fields.get("fragment") if page.kit.is_fragment_request(page.request) else None
    if action != "save":
        return _editor(page, cf.apply_action(form, action, catalogue), catalogue, existing, fragment=fragment)
    data = cf.definition(form)
    if data is None:
        return _editor(
            page, form, catalogue, existing, save_error="The Canvas was not saved: fix what is marked below.",
            status_code=400,
        )  # fmt: skip
    try:
        with page.transaction() as conn:
            if existing is None:
                saved = canvas.create_canvas(conn, page.workspace_id, data, settings=settings)
            else:
                saved = canvas.update_canvas(conn, page.workspace_id, existing.id, data, settings=settings)
    except (InvalidRequest, AlreadyExists) as exc:
        return _editor(
            page, form, catalogue, existing, save_error=f"The Canvas was not saved: {exc.message}.", status_code=400
        )
    return page.redirect(f"/canvas/{saved.id}", f"Canvas “{saved.name}” saved as a draft.")


# --- a Canvas --------------------------------------------------------------------------------------------


def _stats_context(page: WorkspacePage, canvas_id: str) -> dict[str, Any]:
    with page.transaction() as conn:
        found = canvas.get_canvas(conn, page.workspace_id, canvas_id)
        stats = canvas.canvas_stats(conn, page.workspace_id, canvas_id)
        # The entry segment cannot be deleted while a Canvas uses it (a foreign key keeps it).
        segment_name = segments.get_segment(conn, page.workspace_id, found.definition.entry_segment_id).name
    form = cf.from_definition(found.definition, sb.Catalogue(partners=[]))
    return {
        "canvas": found,
        "stats": stats,
        "steps": list(zip(form.steps, stats["steps"], strict=True)),
        "flow": flow_of(form, segment_name, stats),
        "segment_name": segment_name,
        "schedule": _schedule_words(form),
        "poll": found.status == "active",
        "cf_types": cf.STEP_TYPES,
    }


@router.get("/{canvas_id}", response_class=HTMLResponse)
def canvas_page(page: AnyRole, canvas_id: str) -> HTMLResponse:
    return page.render("dashboard/canvas.html", _stats_context(page, canvas_id))


@router.get("/{canvas_id}/stats", response_class=HTMLResponse)
def canvas_stats(page: AnyRole, canvas_id: str) -> HTMLResponse:
    """The flow and the step counts alone: what an active Canvas's page re-reads."""
    return page.render("dashboard/_canvas_stats.html", _stats_context(page, canvas_id))


@router.post("/{canvas_id}/launch")
def launch(page: AnyRole, canvas_id: str) -> RedirectResponse:
    try:
        with page.transaction() as conn:
            started = canvas.start_canvas(conn, page.workspace_id, canvas_id, now=page.runtime.clock())
    except InvalidRequest as exc:
        return page.redirect(f"/canvas/{canvas_id}", f"Not launched: {exc.message}.", "error")
    return page.redirect(
        f"/canvas/{canvas_id}",
        f"“{started.name}” is active: users of the entry segment enter on its schedule when the messaging worker runs.",
    )


@router.post("/{canvas_id}/stop")
def stop(page: AnyRole, canvas_id: str) -> RedirectResponse:
    try:
        with page.transaction() as conn:
            stopped = canvas.stop_canvas(conn, page.workspace_id, canvas_id, now=page.runtime.clock())
    except InvalidRequest as exc:
        return page.redirect(f"/canvas/{canvas_id}", f"Not stopped: {exc.message}.", "error")
    return page.redirect(
        f"/canvas/{canvas_id}", f"“{stopped.name}” is stopped: nobody enters, moves or gets a message."
    )
