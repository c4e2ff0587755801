"""A run's page: phases, counts, errors, and the live request debugger (polled while the run is in flight)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from cohortflow.sync import service
from cohortflow.sync.debugger import run_requests
from cohortflow.sync.runs import RunRecord
from cohortflow.sync.webapp.access import AnyRole
from cohortflow.sync.webapp.filters import num, pct, status_class

router = APIRouter()


def fields(record: RunRecord) -> dict[str, str]:
    """The numbers the page shows, by name: rendered once by the template, then refreshed by the script."""
    c = record.counts
    rejected = sum((c.get("rejected") or {}).values()) + sum((c.get("rejected_by_destination") or {}).values())
    return {
        "rows": num(c.get("rows")),
        "planned_adds": num(c.get("adds")),
        "planned_removes": num(c.get("removes")),
        "added": num(c.get("added")),
        "removed": num(c.get("removed")),
        "rejected": num(rejected),
        "failed": num((c.get("failed_adds") or 0) + (c.get("failed_removes") or 0)),
        "not_attempted": num(c.get("not_attempted")),
        "requests": num(c.get("requests")),
        "retried": num(c.get("retried_requests")),
        "matched": num(c.get("matched")),
        "unmatched": num(c.get("unmatched")),
        "match_rate": pct(service.match_rate(record)),
        "message": record.message or "",
    }


@router.get("/syncs/{name}/runs/{run_id}")
def run_page(page: AnyRole, name: str, run_id: str) -> Response:
    ws = page.workspace
    record = service.run_of(ws, name, run_id)
    requests = run_requests(ws.store, run_id)
    return page.render(
        "syncweb/run.html",
        {
            "active": "syncs",
            "name": name,
            "r": record,
            "f": fields(record),
            "requests": requests,
            "last_seq": requests[-1].seq if requests else 0,
            "phase_names": ("querying", "planning", "sending"),
        },
    )


@router.get("/syncs/{name}/runs/{run_id}/live")
def run_live(page: AnyRole, name: str, run_id: str, after: int = 0) -> JSONResponse:
    ws = page.workspace
    record = service.run_of(ws, name, run_id)
    body: dict[str, Any] = {
        "status": record.status,
        "status_class": status_class(record.status),
        "finished": record.finished,
        "fields": fields(record),
        "requests": [s.as_dict() for s in run_requests(ws.store, run_id, after_seq=after)],
    }
    return JSONResponse(body)


@router.post("/syncs/{name}/runs/{run_id}/cancel")
async def cancel(page: AnyRole, name: str, run_id: str) -> Response:
    record = await page.call(service.cancel_run, page.workspace, name, run_id)
    message = "Run cancelled." if record.finished else "Cancel requested: the run stops after the batches in flight."
    return page.redirect(f"/syncs/{name}/runs/{run_id}", message)
