"""``cohortflow platform ...``: the operator CLI. Commands parse arguments and call domain functions.

Every command prints for people by default and JSON with ``--json``. Domain errors become one-line
``click.ClickException`` messages (exit code 1), never a traceback.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import click
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from cohortflow.errors import CohortflowError
from cohortflow.keys import IssuedKey
from cohortflow.platform import dashboard_users, import_keys, partners, workspaces
from cohortflow.platform.cli_common import (
    emit,
    json_option,
    one_line,
    open_runtime,
    partner_option,
    resolve_workspace,
    rest_endpoint,
    safe_database_url,
    table,
    transaction,
    when,
    workspace_option,
)
from cohortflow.platform.dashboard import MOUNT_PATH as DASHBOARD_PATH
from cohortflow.platform.dashboard_cli import user_group
from cohortflow.platform.errors import NotFound
from cohortflow.platform.import_keys import ImportKeyInfo
from cohortflow.platform.keys_cli import (
    app_key_group,
    operator_token_group,
    register_partner_key_commands,
    rest_key_group,
)
from cohortflow.platform.messaging_cli import campaign_group, canvas_group, worker_group
from cohortflow.platform.segments_cli import segment_group
from cohortflow.platform.store.statistics import autovacuum_warning
from cohortflow.redact import redact_urls
from cohortflow.settings import get_settings
from cohortflow.web.accounts import generate_password

QUICKSTART_WORKSPACE = "default"
QUICKSTART_PARTNER = "hightouch"
QUICKSTART_ADMIN = "admin@localhost"


class _PlatformGroup(click.Group):
    """Turns errors raised by domain functions and the database into one-line CLI errors."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CohortflowError as exc:
            raise click.ClickException(redact_urls(exc.message)) from exc
        except SQLAlchemyError as exc:
            raise click.ClickException(
                f"platform database {safe_database_url()} failed: {redact_urls(one_line(exc))}"
            ) from exc


@click.group("platform", cls=_PlatformGroup)
def platform_group() -> None:
    """Operate the engagement platform (the Braze side).

    The database is COHORTFLOW_PLATFORM_DATABASE_URL (default: cohortflow-platform.db in the working
    directory); every command creates or migrates the schema first.
    """
    # Alembic reports every migration context at INFO; on the CLI that chatter would bury the keys printed.
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("alembic").setLevel(logging.WARNING)


# --- serve -------------------------------------------------------------------------------------------


def _serve(host: str | None, port: int | None, workers: int, *, messaging_worker: bool = True) -> None:
    import uvicorn

    settings = get_settings().platform
    runtime = open_runtime()  # migrate once before workers start
    try:
        if warning := autovacuum_warning(runtime.engine):
            click.echo(f"warning: {warning}", err=True)
    finally:
        runtime.close()
    # Uvicorn's worker processes build the app from the environment (cohortflow.platform.api.server).
    os.environ["COHORTFLOW_MESSAGING__WORKER_IN_PROCESS"] = "true" if messaging_worker else "false"
    get_settings.cache_clear()
    uvicorn.run(
        "cohortflow.platform.api.server:app",
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        log_level="warning",
        factory=False,
    )


@platform_group.command("serve")
@click.option("--host", default=None, help="Interface to bind (default: settings, 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port (default: settings, 8480).")
@click.option("--workers", default=1, show_default=True, type=int, help="Uvicorn worker processes.")
@click.option(
    "--no-worker",
    is_flag=True,
    help="Do not run the messaging worker in the server; run `cohortflow platform worker run` apart.",
)
def serve(host: str | None, port: int | None, workers: int, no_worker: bool) -> None:
    """Serve the platform's HTTP API and dashboard, with the messaging worker in-process (unless --no-worker)."""
    _serve(host, port, workers, messaging_worker=not no_worker)


# --- workspaces --------------------------------------------------------------------------------------


@platform_group.group("workspace")
def workspace_group() -> None:
    """Workspaces, each with its REST API key and SDK app key."""


@workspace_group.command("create")
@click.argument("name")
@json_option
def workspace_create(name: str, as_json: bool) -> None:
    """Create a workspace; prints its id, REST endpoint, a REST API key and an app key (shown once)."""
    if not name.strip():
        raise click.ClickException("workspace name must be a non-empty string")
    with transaction() as conn:
        ws = workspaces.create_workspace(conn, name)
    endpoint = rest_endpoint(get_settings().platform)
    payload = {
        "id": ws.id,
        "name": ws.name,
        "rest_endpoint": endpoint,
        "rest_api_key": ws.rest_api_key.plain,
        "app_key": ws.app_key.plain,
    }
    human = "\n".join(
        [
            f"Created workspace {ws.name!r}",
            f"  workspace id   {ws.id}",
            f"  REST endpoint  {endpoint}",
            f"  REST API key   {ws.rest_api_key.plain}   (Authorization: Bearer, for /users/*)",
            f"  app key        {ws.app_key.plain}   (api_key of the SDK endpoint)",
            "Keys are stored hashed and shown only now: keep them somewhere safe.",
        ]
    )
    emit(as_json, payload, human)


@workspace_group.command("list")
@json_option
def workspace_list(as_json: bool) -> None:
    """List workspaces."""
    with transaction() as conn:
        rows = workspaces.list_workspaces(conn)
    payload = [{"id": r["id"], "name": r["name"], "created_at": r["created_at"]} for r in rows]
    human = table(["ID", "NAME", "CREATED"], [[r["id"], r["name"], when(r["created_at"])] for r in payload])  # type: ignore[arg-type]
    emit(as_json, payload, human if rows else "No workspaces yet: cohortflow platform workspace create NAME")


# --- partners ----------------------------------------------------------------------------------------


@platform_group.group("partner")
def partner_group() -> None:
    """Technology partners (hightouch, census, ...) and their partner API keys."""


@partner_group.command("create")
@click.argument("name")
@click.option("--display-name", default=None, help='Shown in the segment filter, e.g. "Hightouch" Cohorts.')
@json_option
def partner_create(name: str, display_name: str | None, as_json: bool) -> None:
    """Register a partner; prints its partner API key (shown once)."""
    with transaction() as conn:
        new = partners.create_partner(conn, name, display_name)
    payload = {
        "name": new.partner.name,
        "display_name": new.partner.display_name,
        "partner_api_key": new.api_key.plain,
    }
    human = "\n".join(
        [
            f"Created partner {new.partner.name!r} ({new.partner.display_name} Cohorts)",
            f"  path             /partners/{new.partner.name}/...",
            f"  partner API key  {new.api_key.plain}",
            "The key is stored hashed and shown only now: give it to the partner.",
        ]
    )
    emit(as_json, payload, human)


@partner_group.command("list")
@json_option
def partner_list(as_json: bool) -> None:
    """List partners."""
    with transaction() as conn:
        rows = partners.list_partners(conn)
    payload = [{"name": p.name, "display_name": p.display_name} for p in rows]
    human = table(["NAME", "DISPLAY NAME"], [[p.name, p.display_name] for p in rows])
    emit(as_json, payload, human if rows else "No partners yet: cohortflow platform partner create NAME")


# --- data import keys --------------------------------------------------------------------------------


@platform_group.group("import-key")
def import_key_group() -> None:
    """Data import keys (a partner's client_secret) per workspace and partner."""


def _key_payload(info: ImportKeyInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "workspace_id": info.workspace_id,
        "partner": info.partner,
        "masked_key": info.masked_key,
        "created_at": info.created_at,
        "last_used_at": info.last_used_at,
        "invalidated_at": info.invalidated_at,
        "state": "active" if info.active else "invalidated",
    }


@import_key_group.command("create")
@workspace_option
@partner_option
@json_option
def import_key_create(workspace_ref: str, partner_name: str, as_json: bool) -> None:
    """Generate a data import key; other keys stay active. Prints the key (shown once)."""
    with transaction() as conn:
        info, key = import_keys.create_import_key(conn, resolve_workspace(conn, workspace_ref), partner_name)
    endpoint = rest_endpoint(get_settings().platform)
    payload = {**_key_payload(info), "data_import_key": key.plain, "rest_endpoint": endpoint}
    human = "\n".join(
        [
            f"Created data import key {info.id} for partner {info.partner!r} in workspace {info.workspace_id}",
            f"  REST endpoint    {endpoint}",
            f"  data import key  {key.plain}",
            "The key is stored hashed and shown only now: enter it in the partner's destination settings.",
        ]
    )
    emit(as_json, payload, human)


@import_key_group.command("list")
@workspace_option
@partner_option
@json_option
def import_key_list(workspace_ref: str, partner_name: str, as_json: bool) -> None:
    """List data import keys (masked), with when each was created and last used, and its state."""
    with transaction() as conn:
        infos = import_keys.list_import_keys(conn, resolve_workspace(conn, workspace_ref), partner_name)
    rows = [
        [
            i.id,
            i.masked_key,
            when(i.created_at),
            when(i.last_used_at),
            "active" if i.active else f"invalidated {when(i.invalidated_at)}",
        ]
        for i in infos
    ]
    human = table(["ID", "KEY", "CREATED", "LAST USED", "STATE"], rows) if infos else "No data import keys."
    emit(as_json, [_key_payload(i) for i in infos], human)


@import_key_group.command("invalidate")
@workspace_option
@partner_option
@click.argument("key_ref")
@json_option
def import_key_invalidate(workspace_ref: str, partner_name: str, key_ref: str, as_json: bool) -> None:
    """Invalidate a key, named by its id or masked prefix; it gets 401 from the next request on."""
    with transaction() as conn:
        info = import_keys.invalidate_import_key(conn, resolve_workspace(conn, workspace_ref), partner_name, key_ref)
    emit(as_json, _key_payload(info), f"Invalidated data import key {info.id} ({info.masked_key}).")


# --- cohorts -----------------------------------------------------------------------------------------


@platform_group.group("cohort")
def cohort_group() -> None:
    """Cohorts imported by partners, their size and import history."""


def _cohort_payload(info: Any, workspace_id: str) -> dict[str, Any]:
    return {
        "workspace_id": workspace_id,
        "partner": info.partner,
        "cohort_id": info.cohort_id,
        "name": info.name,
        "size": info.size,
        "created_at": info.created_at,
        "last_import_at": info.last_import_at,
    }


@cohort_group.command("list")
@click.option("--workspace", "-w", "workspace_ref", default=None, help="Workspace id or name (default: all).")
@click.option("--partner", "-p", "partner_name", default=None, help="Only this partner's cohorts.")
@json_option
def cohort_list(workspace_ref: str | None, partner_name: str | None, as_json: bool) -> None:
    """List cohorts with their size and last import."""
    from cohortflow.platform import cohorts

    with transaction() as conn:
        if partner_name is not None:
            partners.get_partner(conn, partner_name)  # an unknown partner is an error, not an empty list
        if workspace_ref is not None:
            workspace_ids = [resolve_workspace(conn, workspace_ref)]
        else:
            workspace_ids = [str(w["id"]) for w in workspaces.list_workspaces(conn)]
        payload = [
            _cohort_payload(info, ws_id)
            for ws_id in workspace_ids
            for info in cohorts.list_cohorts(conn, ws_id, partner_name=partner_name)
        ]
    rows = [
        [p["workspace_id"], p["partner"], p["cohort_id"], p["name"], p["size"], when(p["last_import_at"])]
        for p in payload
    ]
    human = table(["WORKSPACE", "PARTNER", "COHORT ID", "NAME", "SIZE", "LAST IMPORT"], rows) if rows else "No cohorts."
    emit(as_json, payload, human)


@cohort_group.command("show")
@workspace_option
@partner_option
@click.argument("cohort_id")
@click.option("--imports", "limit", default=10, show_default=True, type=click.IntRange(0, 1000), help="Recent imports.")
@json_option
def cohort_show(workspace_ref: str, partner_name: str, cohort_id: str, limit: int, as_json: bool) -> None:
    """Show one cohort: size, last import and its recent imports with their counts."""
    from cohortflow.platform import audit, cohorts

    with transaction() as conn:
        workspace_id = resolve_workspace(conn, workspace_ref)
        info = cohorts.get_cohort(conn, workspace_id, partner_name, cohort_id)
        imports = audit.recent_imports(conn, info.pk, limit=limit)
    counts = ("received", "matched", "unmatched", "added", "removed", "unchanged")
    import_payload = [
        {"at": rec.at, **{c: getattr(rec, c) for c in counts}, "unmatched_sample": list(rec.unmatched_sample)}
        for rec in imports
    ]
    payload = {**_cohort_payload(info, workspace_id), "recent_imports": import_payload}
    lines = [
        f"Cohort {info.cohort_id!r}: {info.name}",
        f"  workspace    {workspace_id}",
        f"  partner      {info.partner}",
        f"  size         {info.size}",
        f"  created      {when(info.created_at)}",
        f"  last import  {when(info.last_import_at)}",
        "",
    ]
    if import_payload:
        lines.append(f"Recent imports (newest first, at most {limit}):")
        imports_table = table(
            ["AT", *(c.upper() for c in counts)],
            [[when(r["at"]), *(r[c] for c in counts)] for r in import_payload],
        )
        lines.extend("  " + line for line in imports_table.splitlines())
        samples = [s for r in import_payload for s in r["unmatched_sample"]]
        if samples:
            shown = ", ".join(audit.describe_identifier(s) for s in samples[:10])
            lines.append(f"  unmatched sample: {shown}{' ...' if len(samples) > 10 else ''}")
    else:
        lines.append("No imports yet.")
    emit(as_json, payload, "\n".join(lines))


# --- quickstart --------------------------------------------------------------------------------------


def _find_workspace(conn: Connection, name: str) -> str | None:
    named = [w for w in workspaces.list_workspaces(conn) if w["name"] == name]
    return str(named[0]["id"]) if named else None


@platform_group.command("quickstart")
@click.option("--host", default=None, help="Interface to bind (default: settings, 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port (default: settings, 8480).")
@json_option
def quickstart(host: str | None, port: int | None, as_json: bool) -> None:
    """Set up a ready workspace for Hightouch, print its credentials, and serve.

    The first run creates the workspace "default", the partner "hightouch" and a data import key. Keys
    are stored hashed, so a later run cannot show them again: it issues a fresh data import key instead.
    """
    settings = get_settings().platform
    endpoint = rest_endpoint(settings, host, port)
    new_workspace: workspaces.NewWorkspace | None = None
    partner_key: IssuedKey | None = None
    with transaction() as conn:
        workspace_id = _find_workspace(conn, QUICKSTART_WORKSPACE)
        if workspace_id is None:
            new_workspace = workspaces.create_workspace(conn, QUICKSTART_WORKSPACE)
            workspace_id = new_workspace.id
        try:
            partners.get_partner(conn, QUICKSTART_PARTNER)
        except NotFound:
            partner_key = partners.create_partner(conn, QUICKSTART_PARTNER, "Hightouch").api_key
        info, import_key = import_keys.create_import_key(conn, workspace_id, QUICKSTART_PARTNER)
        admin_password: str | None = None
        if not dashboard_users.any_admin(conn):
            admin_password = generate_password()
            dashboard_users.create_user(conn, QUICKSTART_ADMIN, "admin", admin_password, [workspace_id])

    payload = {
        "workspace_id": workspace_id,
        "rest_endpoint": endpoint,
        "partner": QUICKSTART_PARTNER,
        "partner_api_key": partner_key.plain if partner_key else None,
        "data_import_key": import_key.plain,
        "data_import_key_id": info.id,
        "rest_api_key": new_workspace.rest_api_key.plain if new_workspace else None,
        "app_key": new_workspace.app_key.plain if new_workspace else None,
        "dashboard_url": f"{endpoint}{DASHBOARD_PATH}/",
        "dashboard_admin": QUICKSTART_ADMIN if admin_password else None,
        "dashboard_admin_password": admin_password,
    }
    shown_later = "(created earlier: stored hashed, cannot be shown again)"
    lines = [
        "cohortflow platform: ready for Hightouch's Braze Cohorts destination",
        f"  workspace        {QUICKSTART_WORKSPACE} ({workspace_id})",
        f"  REST endpoint    {endpoint}",
        f"  partner          {QUICKSTART_PARTNER}",
        f"  partner API key  {partner_key.plain if partner_key else shown_later}",
        f"  data import key  {import_key.plain}" + ("" if new_workspace else "   (new: a fresh key for this run)"),
    ]
    if new_workspace:
        lines += [
            f"  REST API key     {new_workspace.rest_api_key.plain}   (Authorization: Bearer, for /users/*)",
            f"  app key          {new_workspace.app_key.plain}   (SDK endpoint)",
            "These keys are stored hashed and shown only now: keep them somewhere safe.",
        ]
    else:
        lines.append(
            "Existing keys cannot be shown again (they are stored hashed). Older data import keys stay active: "
            f"see `cohortflow platform import-key list -w {workspace_id} -p {QUICKSTART_PARTNER}`."
        )
    lines.append(f"  dashboard        {endpoint}{DASHBOARD_PATH}/")
    if admin_password:
        lines.append(
            f"  sign in as       {QUICKSTART_ADMIN} / {admin_password}   (shown once; stored as an Argon2 hash)"
        )
    else:
        lines.append(
            "  sign in          with an existing dashboard user "
            f"(`cohortflow platform user reset-password {QUICKSTART_ADMIN}` prints a new password)"
        )
    if partner_key:
        body = json.dumps(
            {
                "partner_api_key": partner_key.plain,
                "client_secret": import_key.plain,
                "cohort_id": "my-first-cohort",
                "cohort_changes": [],
            }
        )
        lines += [
            "Check the credentials (201 means they work):",
            f"  curl -X POST {endpoint}/partners/{QUICKSTART_PARTNER}/cohorts/users "
            f"-H 'Content-Type: application/json' -d '{body}'",
        ]
    lines.append(f"Serving on {host or settings.host}:{port or settings.port} (Ctrl-C to stop)")
    emit(as_json, payload, "\n".join(lines))
    _serve(host, port, 1)


register_partner_key_commands(partner_group)
platform_group.add_command(user_group)
platform_group.add_command(rest_key_group)
platform_group.add_command(app_key_group)
platform_group.add_command(operator_token_group)
platform_group.add_command(segment_group)
platform_group.add_command(campaign_group)
platform_group.add_command(canvas_group)
platform_group.add_command(worker_group)
