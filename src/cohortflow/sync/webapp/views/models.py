"""Models: a SQL query or a table in a source, previewed before saving, with a primary key chosen from its columns."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from cohortflow.sync import service
from cohortflow.sync.config_writer import save_model
from cohortflow.sync.errors import InvalidInput, SyncError
from cohortflow.sync.webapp.access import AdminOnly, AnyRole, Page
from cohortflow.sync.webapp.views.forms import required, text

router = APIRouter()
PREVIEW_ROWS = 10


@router.get("/models")
def models(page: AnyRole) -> Response:
    ws = page.workspace
    rows = [(name, cfg, service.syncs_using(ws, model=name)) for name, cfg in ws.config.models.items()]
    return page.render("syncweb/models.html", {"active": "models", "rows": rows})


def _context(page: Page, values: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "active": "models",
        "sources": list(page.workspace.config.sources),
        "values": values,
        "preview": None,
        "columns": [],
        "error": None,
        **extra,
    }


@router.get("/models/new")
def new_model(page: AdminOnly) -> Response:
    first = next(iter(page.workspace.config.sources), "")
    return page.render("syncweb/model_form.html", _context(page, {"source": first, "query_type": "sql"}))


def _query(form: Any) -> tuple[str, str | None, str | None]:
    source = required(form, "source", "Source")
    if text(form, "query_type") == "table":
        return source, None, required(form, "table", "Table")
    return source, required(form, "sql", "SQL query"), None


@router.post("/models/new")
async def create_model(page: AdminOnly) -> Response:
    form = await page.request.form()
    shown = {k: v for k, v in form.items() if isinstance(v, str)}
    ws = page.workspace
    try:
        name = required(form, "name", "Name")
        source, sql, table = _query(form)
        preview = await page.call(service.preview_query, ws, source, sql, table, PREVIEW_ROWS)
        columns = list(preview.column_names)
        if form.get("action") != "save":
            context = _context(page, shown, preview=service.rows_of(preview), columns=columns)
            return page.render("syncweb/model_form.html", context)
        primary_key = required(form, "primary_key", "Primary key")
        if primary_key not in columns:
            raise InvalidInput(f"the primary key must be one of the model's columns ({', '.join(columns)})")
        values = {"source": source, **({"sql": sql} if sql else {"table": table}), "primary_key": primary_key}
        await page.call(save_model, page.live.path, name, values, create=True)
    except SyncError as exc:
        return page.render("syncweb/model_form.html", _context(page, shown, error=exc.message), status_code=400)
    return page.redirect(f"/models/{name}", f"Model {name} created in {page.live.path.name}.")


@router.get("/models/{name}")
async def model(page: AnyRole, name: str) -> Response:
    ws = page.workspace
    cfg = ws.model(name)
    preview, error = None, None
    try:
        table = await page.call(service.preview_model, ws, name, PREVIEW_ROWS)
        preview = {"columns": table.column_names, "rows": service.rows_of(table)}
    except SyncError as exc:
        error = exc.message
    return page.render(
        "syncweb/model.html",
        {
            "active": "models",
            "name": name,
            "cfg": cfg,
            "preview": preview,
            "error": error,
            "syncs": service.syncs_using(ws, model=name),
        },
    )
