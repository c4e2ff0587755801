"""Syncs: the list, creating one from a model to a destination (identifier with a fallback order, a new cohort or
an existing one from the destination's list, departed rows, schedule, alerts), a sync's page (run history chart,
match rate, run now / dry run / full resync, enable / disable) and editing it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from zoneinfo import available_timezones

from fastapi import APIRouter
from fastapi.responses import Response

from cohortflow.sync import service
from cohortflow.sync.config import BrazeCohortsDestination, CreateCohort, SyncConfig
from cohortflow.sync.config_writer import save_sync, set_sync_enabled
from cohortflow.sync.errors import InvalidInput, SyncError
from cohortflow.sync.runs import RunOptions, list_runs
from cohortflow.sync.webapp.access import AdminOnly, AnyRole, Page
from cohortflow.sync.webapp.chart import run_chart
from cohortflow.sync.webapp.views.forms import number, required, text
from cohortflow.sync.workspace import Workspace

router = APIRouter()
FALLBACK_SLOTS = 3
KIND_LABELS = {"external_id": "External ID", "alias": "User alias", "device_id": "Device ID"}
RUN_MODES = {
    "run": (RunOptions(), "Run queued"),
    "dry": (RunOptions(dry_run=True), "Dry run queued (nothing is sent)"),
    "full": (RunOptions(full_resync=True), "Full resync queued"),
}
_ZONES = sorted(z for z in available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/")))


@dataclass(frozen=True)
class Departures:
    """Words for what leaves a sync's source: rows of a model, members of an audience; and what removing them
    does at the destination (a cohort loses them, or they lose the custom attribute)."""

    legend: str
    stat: str
    remove: str


def departures(from_audience: bool, dest_type: str | None) -> Departures:
    who = "Members" if from_audience else "Rows"
    return Departures(
        legend=f"{who} who leave the audience" if from_audience else f"{who} that leave the model",
        stat=f"Departed {who.lower()}",
        remove="Remove the attribute from them" if dest_type == "braze_users_track" else "Remove them from the cohort",
    )


@router.get("/syncs")
def syncs(page: AnyRole) -> Response:
    overviews = service.sync_overviews(page.workspace)
    return page.render("syncweb/syncs.html", {"active": "syncs", "overviews": overviews})


# ------------------------------------------------------------------------------------------------ the form


def _form_values(name: str, sync: SyncConfig) -> dict[str, Any]:
    """A saved sync as the form's fields."""
    values: dict[str, Any] = {
        "name": name,
        "model": sync.model,
        "destination": sync.destination,
        **_audience_values(sync),
        "on_row_removed": sync.on_row_removed,
        "schedule_type": sync.schedule.type,
    }
    for i, choice in enumerate(sync.identifier.choices()):
        if choice.external_id is not None:
            values |= {f"id_kind_{i}": "external_id", f"id_column_{i}": choice.external_id}
        elif choice.alias is not None:
            values |= {
                f"id_kind_{i}": "alias",
                f"id_column_{i}": choice.alias.name_column,
                f"id_label_{i}": choice.alias.label,
            }
        elif choice.device_id is not None:
            values |= {f"id_kind_{i}": "device_id", f"id_column_{i}": choice.device_id}
    if isinstance(sync.cohort, CreateCohort):
        values |= {"cohort_mode": "create", "cohort_name": sync.cohort.name}
    elif sync.cohort is not None:
        values |= {"cohort_mode": "existing", "cohort_id": sync.cohort.cohort_id}
    if sync.attribute:
        values["attribute"] = sync.attribute
    schedule = sync.schedule.model_dump()
    values |= {
        "interval_minutes": schedule.get("minutes", ""),
        "cron_expression": schedule.get("expression", ""),
        "cron_timezone": schedule.get("timezone", "UTC"),
        "after_sync": schedule.get("sync", ""),
    }
    if sync.alerts is not None:
        a = sync.alerts
        values |= {
            "alerts_mode": "custom",
            "alert_failed": "on" if a.failed is not False else "",
            "alert_rejected_percent": "" if a.rejected_rows_percent is None else f"{a.rejected_rows_percent:g}",
            "alert_no_success_hours": "" if a.no_success_hours is None else f"{a.no_success_hours:g}",
            "alert_notify": list(a.notify or []),
        }
    return values


def _audience_values(sync: SyncConfig) -> dict[str, Any]:
    if sync.audience is None:
        return {}
    ref = sync.audience
    return {"audience": ref.name, "audience_split": ref.split or "", "audience_priority_list": ref.priority_list or ""}


def _what(form: Any, ws: Workspace) -> dict[str, Any]:
    """What the sync sends: ``{"model": NAME}`` or ``{"audience": NAME or {name, split, priority_list}}``."""
    audience = text(form, "audience")
    if audience is None:
        model = required(form, "model", "Model or audience")
        ws.model(model)
        return {"model": model}
    if audience not in ws.config.audiences:
        raise InvalidInput(f"no audience named {audience!r}")
    split, priority_list = text(form, "audience_split"), text(form, "audience_priority_list")
    if split is None and priority_list is None:
        return {"audience": audience}
    ref: dict[str, Any] = {"name": audience}
    if split is not None:
        ref["split"] = split
    if priority_list is not None:
        ref["priority_list"] = priority_list
    return {"audience": ref}


def _parse(form: Any, page: Page) -> tuple[dict[str, Any], str]:
    """The form as the sync's YAML values; InvalidInput names the field that is wrong."""
    ws = page.workspace
    what = _what(form, ws)
    destination = required(form, "destination", "Destination")
    dest = ws.destination(destination)
    choices: list[dict[str, Any]] = []
    for i in range(FALLBACK_SLOTS):
        kind = text(form, f"id_kind_{i}")
        if kind is None or kind == "none":
            continue
        column = required(form, f"id_column_{i}", f"The column of identifier {i + 1}")
        if kind == "alias":
            label = required(form, f"id_label_{i}", f"The alias label of identifier {i + 1}")
            choices.append({"alias": {"name_column": column, "label": label}})
        elif kind in ("external_id", "device_id"):
            choices.append({kind: column})
        else:
            raise InvalidInput(f"unknown identifier kind {kind!r}")
    if not choices:
        raise InvalidInput("choose the identifier to match on (at least the first one)")
    values: dict[str, Any] = {
        **what,
        "destination": destination,
        "identifier": choices[0] if len(choices) == 1 else {"fallback": choices},
    }
    if isinstance(dest, BrazeCohortsDestination):
        if text(form, "cohort_mode") == "existing":
            values["cohort"] = {"mode": "existing", "cohort_id": required(form, "cohort_id", "The existing cohort")}
        else:
            values["cohort"] = {"mode": "create", "name": required(form, "cohort_name", "The new cohort's name")}
    else:
        values["attribute"] = required(form, "attribute", "The custom attribute")
    values["on_row_removed"] = "keep" if text(form, "on_row_removed") == "keep" else "remove"
    schedule_type = text(form, "schedule_type") or "manual"
    if schedule_type == "interval":
        minutes = number(form, "interval_minutes", "Every (minutes)")
        if minutes is None:
            raise InvalidInput("Every (minutes) is required for an interval schedule")
        values["schedule"] = {"type": "interval", "minutes": int(minutes) if minutes.is_integer() else minutes}
    elif schedule_type == "cron":
        values["schedule"] = {
            "type": "cron",
            "expression": required(form, "cron_expression", "The cron expression"),
            "timezone": text(form, "cron_timezone") or "UTC",
        }
    elif schedule_type == "after":
        values["schedule"] = {"type": "after", "sync": required(form, "after_sync", "The sync to run after")}
    elif schedule_type != "manual":
        raise InvalidInput(f"unknown schedule type {schedule_type!r}")
    if text(form, "alerts_mode") == "custom":
        alerts: dict[str, Any] = {"failed": form.get("alert_failed") == "on"}
        percent = number(form, "alert_rejected_percent", "Rejected rows above (%)")
        hours = number(form, "alert_no_success_hours", "No successful run for (hours)")
        alerts["rejected_rows_percent"] = percent
        alerts["no_success_hours"] = hours
        alerts["notify"] = [c for c in form.getlist("alert_notify") if isinstance(c, str)]
        values["alerts"] = alerts
    return values, schedule_type


async def _form_context(page: Page, values: dict[str, Any], **extra: Any) -> dict[str, Any]:
    ws = page.workspace
    model, destination = values.get("model"), values.get("destination")
    audience = ws.config.audiences.get(values.get("audience") or "")
    columns: list[str] = []
    cohorts = None
    problems: list[str] = []
    if audience is not None:
        # A person is named by one of the parent's declared identifier columns.
        columns = list(ws.config.parents[audience.parent].identifiers)
    elif model in ws.config.models:
        try:
            columns = await page.call(service.model_columns, ws, model)
        except SyncError as exc:
            problems.append(f"The model's columns could not be read: {exc.message}")
    dest = ws.config.destinations.get(destination or "")
    if dest is not None:
        try:
            cohorts = await page.call(service.destination_cohorts, ws, destination)
        except SyncError as exc:
            problems.append(f"The destination's cohorts could not be listed: {exc.message}")
    return {
        "active": "syncs",
        "values": values,
        "models": list(ws.config.models),
        "audiences": list(ws.config.audiences),
        "audience_splits": list(audience.splits.groups) if audience is not None and audience.splits else [],
        "audience_lists": [n for n, pl in ws.config.priority_lists.items() if values.get("audience") in pl.audiences],
        "destinations": {n: service.destination_label(c) for n, c in ws.config.destinations.items()},
        "dest_type": dest.type if dest is not None else None,
        "departures": departures(audience is not None, dest.type if dest is not None else None),
        "columns": columns,
        "cohorts": cohorts,
        "problems": problems,
        "slots": range(FALLBACK_SLOTS),
        "kind_labels": KIND_LABELS,
        "other_syncs": [n for n in ws.config.syncs if n != values.get("name")],
        "channels": list(ws.config.alerts.channels),
        "zones": _ZONES,
        "error": None,
        "editing": None,
        **extra,
    }


@router.get("/syncs/new")
async def new_sync(
    page: AdminOnly, model: str = "", destination: str = "", audience: str = "", what: str = ""
) -> Response:
    ws = page.workspace
    # The first step's one select names a model or an audience: "model:NAME" or "audience:NAME".
    kind, _, chosen = what.partition(":")
    if kind == "model":
        model = chosen
    elif kind == "audience":
        audience = chosen
    if not (model or audience):
        model = next(iter(ws.config.models), "")
        audience = "" if model else next(iter(ws.config.audiences), "")
    values: dict[str, Any] = {
        "model": "" if audience else model,
        "audience": audience,
        "destination": destination or next(iter(ws.config.destinations), ""),
        "cohort_mode": "create",
        "on_row_removed": "remove",
        "schedule_type": "manual",
        "cron_timezone": "UTC",
        "alerts_mode": "default",
        "alert_failed": "on",
        "id_kind_0": "external_id",
    }
    step = "details" if (model or audience) and destination else "choose"
    context = await _form_context(page, values, step=step)
    return page.render("syncweb/sync_form.html", context)


async def _submit(page: Page, editing: str | None) -> Response:
    form = await page.request.form()
    shown: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str)}
    shown["alert_notify"] = form.getlist("alert_notify")
    name = editing or (text(form, "name") or "")
    try:
        values, _ = _parse(form, page)
        await page.call(save_sync, page.live.path, name, values, create=editing is None)
    except SyncError as exc:
        context = await _form_context(page, shown, step="details", error=exc.message, editing=editing)
        return page.render("syncweb/sync_form.html", context, status_code=400)
    page.wake_runner()
    verb = "saved" if editing else "created"
    return page.redirect(f"/syncs/{name}", f"Sync {name} {verb} in {page.live.path.name}.")


@router.post("/syncs/new")
async def create_sync(page: AdminOnly) -> Response:
    return await _submit(page, None)


@router.get("/syncs/{name}/edit")
async def edit_sync(page: AdminOnly, name: str) -> Response:
    values = _form_values(name, page.workspace.sync(name))
    values.setdefault("alerts_mode", "default")
    values.setdefault("alert_failed", "on")
    context = await _form_context(page, values, step="details", editing=name)
    return page.render("syncweb/sync_form.html", context)


@router.post("/syncs/{name}/edit")
async def update_sync(page: AdminOnly, name: str) -> Response:
    page.workspace.sync(name)
    return await _submit(page, name)


# ------------------------------------------------------------------------------------------------ a sync's page


@router.get("/syncs/{name}")
def sync_page(page: AnyRole, name: str) -> Response:
    ws = page.workspace
    overview = service.sync_overview(ws, name)
    runs = list_runs(ws.store, name, 30)
    finished = [r for r in runs if r.finished and not r.dry_run]
    last_rate = next((service.match_rate(r) for r in finished if service.match_rate(r) is not None), None)
    return page.render(
        "syncweb/sync.html",
        {
            "active": "syncs",
            "o": overview,
            "runs": runs,
            "chart": run_chart(list(reversed(runs))),
            "match_rate": last_rate,
            "rate_of": service.match_rate,
            "dest_label": service.destination_label(ws.destination(overview.config.destination))
            if overview.config.destination in ws.config.destinations
            else "",
            "identifier": overview.config.identifier.choices(),
            "departures": departures(
                overview.config.audience is not None,
                ws.destination(overview.config.destination).type
                if overview.config.destination in ws.config.destinations
                else None,
            ),
        },
    )


@router.post("/syncs/{name}/run")
async def run_sync_now(page: AnyRole, name: str) -> Response:
    form = await page.request.form()
    mode = text(form, "mode") or "run"
    if mode not in RUN_MODES:
        raise InvalidInput(f"unknown run mode {mode!r}")
    options, message = RUN_MODES[mode]
    run_id, created = await page.call(service.trigger_run, page.workspace, name, options, "web")
    page.wake_runner()
    if not created:
        message = "An identical run was already queued"
    return page.redirect(f"/syncs/{name}/runs/{run_id}", message)


@router.post("/syncs/{name}/enabled")
async def toggle_sync(page: AdminOnly, name: str) -> Response:
    form = await page.request.form()
    enabled = form.get("enabled") == "true"
    page.workspace.sync(name)
    await page.call(set_sync_enabled, page.live.path, name, enabled)
    page.wake_runner()
    return page.redirect(f"/syncs/{name}", f"Sync {name} {'enabled' if enabled else 'disabled'}.")
