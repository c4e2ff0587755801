"""Destinations: the catalogue with search ("Braze Cohorts", "Braze Users (attribute)"), a destination's page,
Test connection (before and after saving), and creating or editing one (written back to cohortflow.yaml)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import TypeAdapter

from cohortflow.sync import service
from cohortflow.sync.config import DestinationConfig
from cohortflow.sync.config_writer import DESTINATION_FIELDS, DESTINATION_SECRET_FIELDS, save_destination
from cohortflow.sync.errors import InvalidInput, SyncError
from cohortflow.sync.webapp.access import AdminOnly, AnyRole, Page
from cohortflow.sync.webapp.views.forms import required, text, validated

router = APIRouter()
MAIN_SETTINGS = {"rest_endpoint": "REST endpoint", "partner": "Partner"}
TUNING_SETTINGS = {
    "batch_size": "Batch size (identifiers a request)",
    "concurrency": "Requests in flight",
    "rate_limit_per_hour": "Rate limit (requests an hour)",
    "timeout_seconds": "Timeout (seconds)",
}
SECRET_LABELS = {
    "partner_api_key": "Partner API key",
    "data_import_key": "Data import key",
    "rest_api_key": "REST API key",
}
_ADAPTER: TypeAdapter[DestinationConfig] = TypeAdapter(DestinationConfig)

CATALOGUE = [
    {
        "type": "braze_cohorts",
        "name": "Braze Cohorts",
        "summary": "Keep a Braze cohort equal to a model through the partner cohort import API: the REST endpoint "
        "and the data import key from Braze's Technology Partners page.",
        "keywords": "braze cohorts cohort import partner hightouch audience segment",
    },
    {
        "type": "braze_users_track",
        "name": "Braze Users (attribute)",
        "summary": "Real Braze without partner credentials: membership as a custom attribute through /users/track "
        "with a REST API key.",
        "keywords": "braze users track attribute custom rest api key",
    },
]


def _entry(kind: str) -> dict[str, str]:
    for entry in CATALOGUE:
        if entry["type"] == kind:
            return entry
    raise InvalidInput(f"no destination type {kind!r} in the catalogue")


@router.get("/destinations")
def destinations(page: AnyRole) -> Response:
    ws = page.workspace
    rows = [
        (name, cfg, service.destination_label(cfg), service.syncs_using(ws, destination=name))
        for name, cfg in ws.config.destinations.items()
    ]
    return page.render("syncweb/destinations.html", {"active": "destinations", "rows": rows})


@router.get("/destinations/new")
def catalogue(page: AdminOnly, q: str = "") -> Response:
    words = q.lower().split()
    entries = [e for e in CATALOGUE if all(w in (e["name"] + " " + e["keywords"]).lower() for w in words)]
    return page.render("syncweb/destination_catalogue.html", {"active": "destinations", "entries": entries, "q": q})


def _form_context(page: Page, kind: str, values: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "active": "destinations",
        "entry": _entry(kind),
        "kind": kind,
        "values": values,
        "secret_fields": DESTINATION_SECRET_FIELDS[kind],
        "result": None,
        "error": None,
        "editing": None,
        **extra,
    }


@router.get("/destinations/new/{kind}")
def new_destination(page: AdminOnly, kind: str) -> Response:
    defaults = {"partner": "hightouch", "name": "braze" if kind == "braze_cohorts" else "braze_attribute"}
    return page.render("syncweb/destination_form.html", _form_context(page, kind, defaults))


def _parse(form: Any, kind: str) -> tuple[dict[str, Any], dict[str, str | None]]:
    values: dict[str, Any] = {}
    for field in DESTINATION_FIELDS[kind]:
        label = {"rest_endpoint": "REST endpoint", "partner": "Partner"}[field]
        values[field] = required(form, field, label)
    endpoint = values["rest_endpoint"]
    if not endpoint.startswith(("http://", "https://")):
        raise InvalidInput(
            f"REST endpoint must be an http(s) URL such as https://rest.iad-01.braze.com, not {endpoint!r}"
        )
    secrets = {f: text(form, f) for f in DESTINATION_SECRET_FIELDS[kind]}
    return values, secrets


async def _submit(page: Page, kind: str, editing: str | None) -> Response:
    form = await page.request.form()
    name = editing or (text(form, "name") or "")
    shown = {k: v for k, v in form.items() if isinstance(v, str)}
    try:
        values, secrets = _parse(form, kind)
        if form.get("action") == "test":
            if editing is not None and not all(secrets.values()):
                # Testing an edit without retyping the keys: the saved keys are used.
                saved = page.workspace.destination(editing).model_dump()
                filled = {f: secrets[f] or saved[f].get_secret_value() for f in secrets}
            else:
                filled = {f: required(form, f, f.replace("_", " ")) for f in secrets}
            config = validated(_ADAPTER, {"type": kind, **values, **filled})
            message = await page.call(service.test_destination_config, config)
            context = _form_context(page, kind, shown, result=message, editing=editing)
            return page.render("syncweb/destination_form.html", context)
        await page.call(save_destination, page.live.path, name, kind, values, secrets, create=editing is None)
    except SyncError as exc:
        context = _form_context(page, kind, shown, error=exc.message, editing=editing)
        return page.render("syncweb/destination_form.html", context, status_code=400)
    verb = "saved" if editing else "created"
    return page.redirect(
        f"/destinations/{name.strip()}", f"Destination {name.strip()} {verb} in {page.live.path.name}."
    )


@router.post("/destinations/new/{kind}")
async def create_destination(page: AdminOnly, kind: str) -> Response:
    _entry(kind)
    return await _submit(page, kind, None)


@router.get("/destinations/{name}")
def destination(page: AnyRole, name: str) -> Response:
    ws = page.workspace
    cfg = ws.destination(name)
    settings = service.destination_settings(cfg)
    cohorts, cohorts_error = None, None
    try:
        cohorts = service.destination_cohorts(ws, name)
    except SyncError as exc:
        cohorts_error = exc.message
    return page.render(
        "syncweb/destination.html",
        {
            "active": "destinations",
            "name": name,
            "cfg": cfg,
            "label": service.destination_label(cfg),
            "main": [(label, settings[k]) for k, label in MAIN_SETTINGS.items() if k in settings],
            "tuning": [(label, settings[k]) for k, label in TUNING_SETTINGS.items() if k in settings],
            "secrets": [SECRET_LABELS[f] for f in DESTINATION_SECRET_FIELDS[cfg.type]],
            "syncs": service.syncs_using(ws, destination=name),
            "cohorts": cohorts,
            "cohorts_error": cohorts_error,
        },
    )


@router.post("/destinations/{name}/test")
async def test_destination(page: AnyRole, name: str) -> Response:
    try:
        message = await page.call(service.test_destination, page.workspace, name)
    except SyncError as exc:
        return page.redirect(f"/destinations/{name}", f"Test connection failed: {exc.message}", "error")
    return page.redirect(f"/destinations/{name}", f"Connection works: {message}")


@router.get("/destinations/{name}/edit")
def edit_destination(page: AdminOnly, name: str) -> Response:
    cfg = page.workspace.destination(name)
    values = {"name": name, **{k: str(v) for k, v in service.destination_settings(cfg).items()}}
    return page.render("syncweb/destination_form.html", _form_context(page, cfg.type, values, editing=name))


@router.post("/destinations/{name}/edit")
async def update_destination(page: AdminOnly, name: str) -> Response:
    return await _submit(page, page.workspace.destination(name).type, name)
