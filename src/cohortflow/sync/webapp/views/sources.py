"""Sources: the warehouses models read (create, test)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import TypeAdapter

from cohortflow.sync import service
from cohortflow.sync.config import SourceConfig
from cohortflow.sync.config_writer import save_source
from cohortflow.sync.errors import InvalidInput, SyncError
from cohortflow.sync.sources import Source
from cohortflow.sync.webapp.access import AdminOnly, AnyRole
from cohortflow.sync.webapp.views.forms import required, validated

router = APIRouter()
_ADAPTER: TypeAdapter[SourceConfig] = TypeAdapter(SourceConfig)
KINDS = {
    "duckdb": "DuckDB file",
    "sqlite": "SQLite file",
    "postgres": "PostgreSQL",
    "sqlalchemy": "Other (SQLAlchemy URL)",
}


@router.get("/sources")
def sources(page: AnyRole) -> Response:
    ws = page.workspace
    rows = [
        (
            name,
            KINDS.get(cfg.type, cfg.type),
            service.source_location(ws, name),
            [m for m, c in ws.config.models.items() if c.source == name],
        )
        for name, cfg in ws.config.sources.items()
    ]
    return page.render("syncweb/sources.html", {"active": "sources", "rows": rows})


def _context(values: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"active": "sources", "kinds": KINDS, "values": values, "result": None, "error": None, **extra}


@router.get("/sources/new")
def new_source(page: AdminOnly) -> Response:
    return page.render("syncweb/source_form.html", _context({"type": "duckdb", "name": "warehouse"}))


def _parse(form: Any) -> tuple[str, str, dict[str, str], dict[str, str | None]]:
    name = required(form, "name", "Name")
    kind = required(form, "type", "Type")
    if kind not in KINDS:
        raise InvalidInput(f"unknown source type {kind!r}")
    if kind in ("duckdb", "sqlite"):
        return name, kind, {"path": required(form, "path", "File path")}, {}
    return name, kind, {}, {"url": required(form, "url", "Connection URL")}


@router.post("/sources/new")
async def create_source(page: AdminOnly) -> Response:
    form = await page.request.form()
    shown = {k: v for k, v in form.items() if isinstance(v, str)}
    try:
        name, kind, values, secrets = _parse(form)
        if form.get("action") == "test":
            config = validated(_ADAPTER, {"type": kind, **values, **secrets})
            source = Source(name, config, page.live.path.parent)
            message = await page.call(source.test)
            return page.render("syncweb/source_form.html", _context(shown, result=message))
        await page.call(save_source, page.live.path, name, kind, values, secrets, create=True)
    except SyncError as exc:
        return page.render("syncweb/source_form.html", _context(shown, error=exc.message), status_code=400)
    return page.redirect(f"/sources/{name}", f"Source {name} created in {page.live.path.name}.")


@router.get("/sources/{name}")
def source(page: AnyRole, name: str) -> Response:
    ws = page.workspace
    src = ws.source(name)
    return page.render(
        "syncweb/source.html",
        {
            "active": "sources",
            "name": name,
            "kind": KINDS.get(src.config.type, src.config.type),
            "location": src.describe(),
            "models": [m for m, c in ws.config.models.items() if c.source == name],
        },
    )


@router.post("/sources/{name}/test")
async def test_source(page: AnyRole, name: str) -> Response:
    try:
        message = await page.call(service.test_source, page.workspace, name)
    except SyncError as exc:
        return page.redirect(f"/sources/{name}", f"Test failed: {exc.message}", "error")
    return page.redirect(f"/sources/{name}", f"Connection works: {message}")
