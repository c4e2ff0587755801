"""Audiences: the list, the visual builder (a parent, AND / OR / NOT groups of conditions over its columns,
traits, related models and events; the size, a sample and the compiled SQL updated as conditions change), saving
into cohortflow.yaml, deleting, and the overlap of two audiences.

The builder is a small script (``static/sync-audiences.js``) editing the definition's JSON, the same JSON as the
YAML and the REST API; it asks ``POST /audiences/preview`` for the size as the tree changes. Saving is a plain
form post of that JSON, checked by the engine as a whole: a problem comes back with its key inside the audience,
shown next to the condition it is about, and nothing is written.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from cohortflow.sync import service
from cohortflow.sync.audiences.editing import Problem, delete_audience, problems_of, save_audience
from cohortflow.sync.audiences.service import (
    AudienceSize,
    audience_definition,
    audience_overlap,
    audience_uses,
    describe_schema,
    draft_name,
    draft_size,
)
from cohortflow.sync.config_writer import check_name
from cohortflow.sync.errors import ConfigError, InvalidInput, SyncError
from cohortflow.sync.webapp.access import AdminOnly, AnyRole, Page
from cohortflow.sync.webapp.views.forms import required, text

router = APIRouter()
SAMPLE_ROWS = 10


def _size_json(result: AudienceSize) -> dict[str, Any]:
    return {
        "ok": True,
        "size": result.size,
        "parent_rows": result.parent_rows,
        "groups": result.groups,
        "columns": result.columns,
        "sample": [service.json_row(r) for r in result.sample],
        "sql": result.sql,
    }


def _definition(raw: Any) -> dict[str, Any]:
    """The builder's JSON; InvalidInput when it is not a JSON object."""
    if isinstance(raw, dict):
        return raw
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidInput("the audience's definition is empty")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise InvalidInput(f"the definition is not valid JSON: {exc.msg} ({where})") from None
    if not isinstance(data, dict):
        raise InvalidInput("the definition is a JSON object: parent, filter, splits")
    return data


@router.get("/audiences")
def audiences(page: AnyRole) -> Response:
    ws = page.workspace
    rows = [(name, cfg, audience_uses(ws, name)) for name, cfg in ws.config.audiences.items()]
    return page.render(
        "syncweb/audiences.html",
        {"active": "audiences", "rows": rows, "parents": list(ws.config.parents), "lists": ws.config.priority_lists},
    )


def _builder(
    page: Page,
    *,
    name: str | None,
    definition: dict[str, Any],
    problems: list[Problem] | None = None,
    status_code: int = 200,
    shown_name: str = "",
) -> Response:
    ws = page.workspace
    others = {n: a.parent for n, a in ws.config.audiences.items() if n != name}
    data = {
        "schema": describe_schema(ws),
        "audiences": others,
        "definition": definition,
        "name": name,
        "problems": [p.as_dict() for p in problems or []],
        "editable": page.user.is_admin,
    }
    uses = audience_uses(ws, name) if name else None
    return page.render(
        "syncweb/audience.html",
        {
            "active": "audiences",
            "name": name,
            "shown_name": shown_name,
            "data_json": json.dumps(data, default=str),
            "definition_json": json.dumps(definition, indent=2, default=str),
            "problems": problems or [],
            "uses": uses,
            "has_parents": bool(ws.config.parents),
        },
        status_code=status_code,
    )


@router.get("/audiences/new")
def new_audience(page: AnyRole, parent: str = "") -> Response:
    parents = list(page.workspace.config.parents)
    chosen = parent if parent in parents else (parents[0] if parents else "")
    return _builder(page, name=None, definition={"parent": chosen})


def _problems(problems: list[Problem]) -> JSONResponse:
    return JSONResponse({"ok": False, "problems": [p.as_dict() for p in problems]}, status_code=400)


@router.post("/audiences/preview")
async def preview(page: AnyRole) -> Response:
    """The size, a sample and the SQL of the builder's draft (JSON in, JSON out); nothing is written."""
    try:
        body = await page.request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return _problems([Problem(None, "send JSON: {definition, name}")])
    name = body.get("name") if isinstance(body.get("name"), str) and body.get("name") else None
    try:
        definition = _definition(body.get("definition"))
        result = await page.call(draft_size, page.workspace, definition, name=name, sample=SAMPLE_ROWS)
    except ConfigError as exc:
        # The draft's name as the check saw it: problems are keyed inside that audience.
        checked = name or draft_name(page.workspace)
        return _problems(problems_of(exc, checked))
    except SyncError as exc:
        return _problems([Problem(None, exc.message)])
    return JSONResponse(_size_json(result))


async def _save(page: Page, editing: str | None) -> Response:
    form = await page.request.form()
    raw = form.get("definition")
    shown_name = text(form, "name") or ""
    try:
        definition = _definition(raw)
    except InvalidInput as exc:
        problem = [Problem("", exc.message)]
        return _builder(page, name=editing, definition={}, problems=problem, status_code=400, shown_name=shown_name)
    name = editing or shown_name
    try:
        name = editing or check_name("audience", required(form, "name", "Name"))
        if editing is None and name in page.workspace.config.audiences:
            raise InvalidInput(f"audience {name!r} already exists; choose another name")
        await page.call(save_audience, page.live.path, name, definition)
    except ConfigError as exc:
        problems = problems_of(exc, name)
        return _builder(
            page, name=editing, definition=definition, problems=problems, status_code=400, shown_name=shown_name
        )
    except SyncError as exc:
        return _builder(
            page,
            name=editing,
            definition=definition,
            problems=[Problem(None, exc.message)],
            status_code=400,
            shown_name=shown_name,
        )
    verb = "saved" if editing else "created"
    return page.redirect(f"/audiences/{name}", f"Audience {name} {verb} in {page.live.path.name}.")


@router.post("/audiences/new")
async def create_audience(page: AdminOnly) -> Response:
    return await _save(page, None)


@router.get("/audiences/overlap")
async def overlap(page: AnyRole, a: str = "", b: str = "") -> Response:
    ws = page.workspace
    names = list(ws.config.audiences)
    result, error = None, None
    if a and b:
        try:
            result = (await page.call(audience_overlap, ws, a, b)).as_dict()
        except SyncError as exc:
            error = exc.message
    return page.render(
        "syncweb/audience_overlap.html",
        {"active": "audiences", "names": names, "a": a, "b": b, "result": result, "error": error},
    )


@router.get("/audiences/{name}")
async def audience(page: AnyRole, name: str) -> Response:
    return _builder(page, name=name, definition=audience_definition(page.workspace, name))


@router.post("/audiences/{name}")
async def update_audience(page: AdminOnly, name: str) -> Response:
    audience_definition(page.workspace, name)
    return await _save(page, name)


@router.post("/audiences/{name}/delete")
async def remove_audience(page: AdminOnly, name: str) -> Response:
    audience_definition(page.workspace, name)
    try:
        await page.call(delete_audience, page.live.path, name)
    except ConfigError as exc:
        return _builder(
            page,
            name=name,
            definition=audience_definition(page.workspace, name),
            problems=[Problem(None, p.message) for p in problems_of(exc, name)],
            status_code=400,
        )
    return page.redirect("/audiences", f"Audience {name} deleted from {page.live.path.name}.")
