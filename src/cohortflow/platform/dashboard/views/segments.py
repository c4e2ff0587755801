"""Segments: the list, the builder (create and edit, with the exact size as filters change), the member preview.

The builder posts its whole form; the live script asks for one part of the page back (``fragment``): the
builder (after a select changed or a button was pressed) or the size panel (after typing). Without scripts the
same POST answers the whole page. Sizes and previews come from the segments service, as for the API.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from cohortflow.platform.dashboard import segment_builder as sb
from cohortflow.platform.dashboard.access import AnyRole, WorkspacePage
from cohortflow.platform.errors import AlreadyExists, InvalidRequest
from cohortflow.platform.segments import service
from cohortflow.platform.segments.filters import parse_filter

router = APIRouter(prefix="/w/{workspace_id}/segments")
PREVIEW_LIMIT = 100


async def form_fields(request: Request) -> dict[str, str]:
    """The posted form's text fields (read on the event loop; the view then runs in a worker thread)."""
    form = await request.form()
    return {name: value for name, value in form.items() if isinstance(value, str)}


FormFields = Annotated[dict[str, str], Depends(form_fields)]


def _catalogue(page: WorkspacePage) -> sb.Catalogue:
    with page.transaction() as conn:
        return sb.Catalogue.from_service(service.filter_catalogue(conn, page.workspace_id))


@router.get("", response_class=HTMLResponse)
def segment_list(page: AnyRole) -> HTMLResponse:
    with page.transaction() as conn:
        segments = service.list_segments(conn, page.workspace_id)
        catalogue = sb.Catalogue.from_service(service.filter_catalogue(conn, page.workspace_id))
    rows = [(s, sb.describe(s.filter, catalogue)) for s in reversed(segments)]
    return page.render("dashboard/segments.html", {"rows": rows})


# --- the builder -----------------------------------------------------------------------------------------


def _size(page: WorkspacePage, builder: sb.Builder, *, reach: bool) -> dict[str, Any]:
    """The size panel's content: the exact total (and, with ``reach``, the users reachable per channel) for the
    form's tree, or what keeps it from being counted.

    The live page asks for the total first (``filter_count``: the cheapest exact route, a cohort's membership
    alone when it can) and for the reachable counts right after (``filter_size``, which reads every member's
    profile), so the size follows the filters at once even when reachability takes longer on a large audience.
    """
    tree = sb.to_tree(builder)
    if tree is None:
        return {"total": None, "size": None, "size_errors": _problems(builder), "reach_pending": False}
    started = time.perf_counter()
    try:
        with page.transaction() as conn:
            node = service.validate_filter(conn, page.workspace_id, tree)
            now = page.runtime.clock()
            if reach:
                size = service.filter_size(conn, page.workspace_id, node, now=now)
                total = size.total
            else:
                size, total = None, service.filter_count(conn, page.workspace_id, node, now=now)
    except InvalidRequest as exc:
        return {"total": None, "size": None, "size_errors": [exc.message], "reach_pending": False}
    return {
        "total": total,
        "size": size,
        "size_errors": [],
        "reach_pending": not reach,
        "counted_ms": (time.perf_counter() - started) * 1000,
    }


def _problems(builder: sb.Builder) -> list[str]:
    problems = list(builder.errors)
    for g, group in enumerate(builder.groups):
        for f, row in enumerate(group.rows):
            if row.error:
                where = f"Filter {f + 1}" if len(builder.groups) == 1 else f"Group {g + 1}, filter {f + 1}"
                problems.append(f"{where}: {row.error}")
    return problems


def _builder_page(
    page: WorkspacePage,
    *,
    builder: sb.Builder,
    catalogue: sb.Catalogue,
    name: str,
    segment: service.Segment | None,
    fragment: str | None = None,
    counted: dict[str, Any] | None = None,
    name_error: str | None = None,
    save_error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """The builder page, or one of its fragments. Problems of single filters show on their rows only after a
    save was refused; while the user builds, the size panel lists them."""
    action = f"/w/{page.workspace_id}/segments/{segment.id if segment else 'new'}"
    context: dict[str, Any] = {
        "builder": builder,
        "catalogue": catalogue,
        "name": name,
        "segment": segment,
        "form_url": f"{page.kit.prefix(page.request)}{action}",
        "total": None,
        "size": None,
        "size_errors": [],
        "reach_pending": False,
        "autoload": counted is None,
        "name_error": name_error,
        "save_error": save_error,
        "show_row_errors": save_error is not None,
        "sb": sb,
        **(counted or {}),
    }
    template = {
        "builder": "dashboard/_segment_builder.html",
        "segment-size": "dashboard/_segment_size.html",
        "segment-reach": "dashboard/_segment_reach.html",
    }.get(fragment or "", "dashboard/segment.html")
    return page.render(template, context, status_code=status_code)


@router.get("/new", response_class=HTMLResponse)
def new_segment(page: AnyRole) -> HTMLResponse:
    catalogue = _catalogue(page)
    return _builder_page(page, builder=sb.default_builder(catalogue), catalogue=catalogue, name="", segment=None)


@router.get("/{segment_id}", response_class=HTMLResponse)
def edit_segment(page: AnyRole, segment_id: str) -> HTMLResponse:
    with page.transaction() as conn:
        segment = service.get_segment(conn, page.workspace_id, segment_id)
    catalogue = _catalogue(page)
    builder = sb.from_tree(segment.filter, catalogue)
    return _builder_page(page, builder=builder, catalogue=catalogue, name=segment.name, segment=segment)


@router.post("/new", response_class=HTMLResponse)
def post_new_segment(page: AnyRole, form: FormFields) -> Response:
    return _post_builder(page, form, None)


@router.post("/{segment_id}", response_class=HTMLResponse)
def post_segment(page: AnyRole, segment_id: str, form: FormFields) -> Response:
    with page.transaction() as conn:
        segment = service.get_segment(conn, page.workspace_id, segment_id)
    return _post_builder(page, form, segment)


def _post_builder(page: WorkspacePage, form: dict[str, str], segment: service.Segment | None) -> Response:
    catalogue = _catalogue(page)
    builder = sb.from_form(form, catalogue)
    name = form.get("name", "").strip()
    action = form.get("action", "refresh")
    fragment = form.get("fragment") if page.kit.is_fragment_request(page.request) else None
    if action == "save":
        return _save(page, builder, catalogue, name, segment)
    if action == "to_json":
        tree = sb.to_tree(builder)
        if tree is not None:
            builder = sb.Builder(json_text=json.dumps(tree, indent=2))
    elif action == "to_builder":
        tree = sb.to_tree(builder)
        if tree is not None:
            builder = sb.from_tree(parse_filter(tree), catalogue)
            if builder.advanced:
                builder.errors.append("This filter has NOT or groups inside groups: it can only be edited as JSON.")
    else:
        builder = sb.apply_action(builder, action, catalogue)
    # A browser without scripts gets everything at once; the live page gets the total, then asks for the rest.
    counted = _size(page, builder, reach=fragment in (None, "segment-reach"))
    return _builder_page(
        page, builder=builder, catalogue=catalogue, name=name, segment=segment, fragment=fragment, counted=counted
    )


def _save(
    page: WorkspacePage, builder: sb.Builder, catalogue: sb.Catalogue, name: str, segment: service.Segment | None
) -> Response:
    tree = sb.to_tree(builder)
    name_error = None if name else "Give the segment a name."
    if tree is None or name_error:
        return _builder_page(
            page, builder=builder, catalogue=catalogue, name=name, segment=segment, name_error=name_error,
            save_error="The segment was not saved: fix what is marked below.",
            counted=_size(page, builder, reach=True), status_code=400,
        )  # fmt: skip
    try:
        with page.transaction() as conn:
            if segment is None:
                saved = service.create_segment(conn, page.workspace_id, name, tree)
            else:
                saved = service.update_segment(conn, page.workspace_id, segment.id, name=name, filter_data=tree)
    except (InvalidRequest, AlreadyExists) as exc:
        return _builder_page(
            page, builder=builder, catalogue=catalogue, name=name, segment=segment,
            save_error=f"The segment was not saved: {exc.message}.", counted=_size(page, builder, reach=True),
            status_code=400,
        )  # fmt: skip
    return page.redirect(f"/segments/{saved.id}", f"Segment “{saved.name}” saved.")


# --- preview and delete ----------------------------------------------------------------------------------


@router.get("/{segment_id}/preview", response_class=HTMLResponse)
def preview(page: AnyRole, segment_id: str) -> HTMLResponse:
    now = page.runtime.clock()
    with page.transaction() as conn:
        segment = service.get_segment(conn, page.workspace_id, segment_id)
        members = service.preview_members(conn, page.workspace_id, segment_id, limit=PREVIEW_LIMIT, now=now)
        catalogue = sb.Catalogue.from_service(service.filter_catalogue(conn, page.workspace_id))
    return page.render(
        "dashboard/segment_preview.html",
        {
            "segment": segment,
            "members": members,
            "limit": PREVIEW_LIMIT,
            "description": sb.describe(segment.filter, catalogue),
            "evaluated_at": now,
        },
    )


@router.get("/{segment_id}/delete", response_class=HTMLResponse)
def confirm_delete(page: AnyRole, segment_id: str) -> HTMLResponse:
    with page.transaction() as conn:
        segment = service.get_segment(conn, page.workspace_id, segment_id)
    return page.render("dashboard/confirm_delete_segment.html", {"segment": segment})


@router.post("/{segment_id}/delete")
def delete(page: AnyRole, segment_id: str) -> RedirectResponse:
    try:
        with page.transaction() as conn:
            segment = service.get_segment(conn, page.workspace_id, segment_id)
            service.delete_segment(conn, page.workspace_id, segment_id)
    except InvalidRequest as exc:
        return page.redirect(f"/segments/{segment_id}", f"Not deleted: {exc.message}.", kind="error")
    return page.redirect("/segments", f"Segment “{segment.name}” deleted.")
