"""``cohortflow sync ...``: commands parse arguments, call the engine's public API and print the result.

Exit codes: 0 success, 1 error or failed run, 3 partial run (some identifiers failed; the next run retries).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.exc import DBAPIError

from cohortflow.errors import CohortflowError
from cohortflow.settings import get_settings
from cohortflow.sync import service
from cohortflow.sync.engine import RunResult, run_sync
from cohortflow.sync.identifiers import describe
from cohortflow.sync.runs import PARTIAL, SUCCEEDED, RunOptions, RunRecord, get_run, list_runs, request_cancel
from cohortflow.sync.state.store import state_unavailable_message
from cohortflow.sync.workspace import Workspace, load_workspace

EXIT_FAILED = 1
EXIT_PARTIAL = 3


def _dump(payload: Any) -> None:
    click.echo(json.dumps(payload, default=str, indent=2))


@contextmanager
def _errors_to_exit(ctx: click.Context | None = None) -> Iterator[None]:
    try:
        yield
    except CohortflowError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(EXIT_FAILED)
    except DBAPIError as exc:  # the state database went away after it was opened
        url = str(ctx.ensure_object(dict).get("state_url") or get_settings().sync.state_url) if ctx else "?"
        click.echo(f"error: {state_unavailable_message(url, exc)}", err=True)
        sys.exit(EXIT_FAILED)


def _workspace(ctx: click.Context) -> Workspace:
    obj = ctx.ensure_object(dict)
    if "workspace" not in obj:
        obj["workspace"] = load_workspace(obj.get("file"), state_url=obj.get("state_url"))
        ctx.call_on_close(obj["workspace"].close)
    ws: Workspace = obj["workspace"]
    return ws


@click.group("sync")
@click.option(
    "-f",
    "--file",
    "file",
    type=click.Path(path_type=Path),
    default=None,
    help="Workspace file (default: settings.sync.config_path, cohortflow.yaml).",
)
@click.option("--state-url", default=None, help="Sync state database URL (default: COHORTFLOW_SYNC_STATE_URL).")
@click.pass_context
def sync_group(ctx: click.Context, file: Path | None, state_url: str | None) -> None:
    """Sync warehouse models into Braze Cohorts (the Hightouch side)."""
    ctx.ensure_object(dict).update(file=file, state_url=state_url)


@sync_group.command("validate")
@click.option("--offline", is_flag=True, help="Check the file only; do not run the models' queries.")
@click.pass_context
def validate(ctx: click.Context, offline: bool) -> None:
    """Check the workspace file (schema, unknown keys, references, environment variables), then run each model's
    query without reading rows and check its primary key and identifier columns exist."""
    obj = ctx.ensure_object(dict)
    with _errors_to_exit(ctx):
        ws = load_workspace(obj.get("file"), state_url=obj.get("state_url"), strict_env=True)
        c = ws.config
        problems = [] if offline else service.check_models(ws)
    for problem in problems:
        click.echo(f"error: {ws.path.name}: {problem}", err=True)
    if problems:
        sys.exit(EXIT_FAILED)
    checked = "" if offline else "; every model's query runs and has its columns"
    click.echo(
        f"{ws.path}: valid ({len(c.sources)} source(s), {len(c.models)} model(s), "
        f"{len(c.destinations)} destination(s), {len(c.syncs)} sync(s)){checked}"
    )


class _RichProgress:
    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._tasks: dict[str, Any] = {}

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        if phase not in self._tasks:
            label = {"querying": "rows read", "sending": "identifiers sent"}.get(phase, phase)
            self._tasks[phase] = self._progress.add_task(label, total=total)
        self._progress.update(self._tasks[phase], completed=done, total=total)


def _print_result(result: RunResult) -> None:
    c = result.counts
    title = "plan (dry run, nothing sent)" if result.dry_run else f"run {result.run_id}"
    click.echo(f"{result.sync}: {title}: {result.status}")
    click.echo(f"  target: {result.target}")
    if c:
        click.echo(
            f"  rows {c.get('rows', 0)}, valid {c.get('valid_rows', 0)}, members wanted {c.get('desired', 0)}, "
            f"confirmed before {c.get('confirmed', 0)}"
        )
        click.echo(
            f"  planned: +{c.get('adds', 0)} -{c.get('removes', 0)} "
            f"(retries +{c.get('retried_adds', 0)} -{c.get('retried_removes', 0)})"
        )
        if c.get("uncertain"):
            click.echo(
                f"  uncertain before this run: {c['uncertain']} identifier(s) whose earlier answer was lost; "
                "each was sent its desired state"
            )
        if c.get("reconcile"):
            r = c["reconcile"]
            click.echo(
                f"  reconcile: the cohort held {r['members']} member(s), {r['unwanted_members']} not in the model; "
                f"planned +{r['to_add']} -{r['to_remove']}"
            )
        if c.get("rejected"):
            click.echo("  rejected rows: " + ", ".join(f"{k} {v}" for k, v in c["rejected"].items()))
    if not result.dry_run and "added" in c:
        click.echo(
            f"  delivered: +{c['added']} -{c['removed']} in {c['requests']} request(s) "
            f"({c['retried_requests']} retried); failed {c['failed_adds'] + c['failed_removes']}, "
            f"rejected {sum(c['rejected_by_destination'].values())}"
        )
        if "matched" in c:
            click.echo(
                f"  platform: matched {c['matched']}, unmatched {c['unmatched']}, unchanged {c['unchanged']}; "
                f"members added {c.get('members_added', 0)}, removed {c.get('members_removed', 0)}"
            )
        quarantined = c.get("quarantined", 0) + c.get("newly_quarantined", 0)
        if quarantined:
            click.echo(f"  warning: {quarantined} identifier(s) quarantined (cohortflow sync rejected {result.sync})")
    if result.dry_run:
        for op in ("adds", "removes"):
            if result.samples.get(op):
                click.echo(f"  first {op}: " + ", ".join(result.samples[op]))
    for err in result.errors[:5]:
        click.echo(f"  {err['reason']}: {err['count']} (e.g. {', '.join(map(str, err['samples']))})")
    if result.phases:
        click.echo("  time: " + ", ".join(f"{k} {v:.2f}s" for k, v in result.phases.items()))
    if result.message:
        click.echo(f"  {result.message}")


@sync_group.command("run")
@click.argument("name")
@click.option("--dry-run", is_flag=True, help="Query and plan, print the plan, send nothing.")
@click.option(
    "--full-resync",
    is_flag=True,
    help="Re-send every member and remove every confirmed or uncertain one the model lacks.",
)
@click.option(
    "--reconcile",
    is_flag=True,
    help="Read the cohort's real members from the destination (a cohortflow platform) and repair drift both ways.",
)
@click.option("--retry-rejected", is_flag=True, help="Send quarantined identifiers again.")
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
@click.pass_context
def run(
    ctx: click.Context,
    name: str,
    dry_run: bool,
    full_resync: bool,
    reconcile: bool,
    retry_rejected: bool,
    as_json: bool,
    progress: bool | None,
) -> None:
    """Run sync NAME once."""
    show = sys.stderr.isatty() if progress is None else progress
    options: dict[str, Any] = {
        "dry_run": dry_run,
        "full_resync": full_resync,
        "reconcile": reconcile,
        "retry_rejected": retry_rejected,
    }
    with _errors_to_exit(ctx):
        ws = _workspace(ctx)
        if show:
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
                result = run_sync(ws, name, **options, progress=_RichProgress(bar))
        else:
            result = run_sync(ws, name, **options)
    if as_json:
        _dump(result.as_dict())
    else:
        _print_result(result)
    if result.status == PARTIAL:
        sys.exit(EXIT_PARTIAL)
    if result.status != SUCCEEDED:
        if not as_json:
            click.echo(f"error: {result.message}", err=True)
        sys.exit(EXIT_FAILED)


def _run_line(r: RunRecord) -> list[str]:
    c = r.counts
    return [
        r.id,
        r.status + (" (dry run)" if r.dry_run else ""),
        r.started_at.strftime("%Y-%m-%d %H:%M:%S"),
        f"+{c.get('added', 0)} -{c.get('removed', 0)}"
        if not r.dry_run
        else f"plan +{c.get('adds', 0)} -{c.get('removes', 0)}",
        str(c.get("matched", "")),
        r.message or "",
    ]


@sync_group.command("runs")
@click.argument("name")
@click.option("--limit", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def runs(ctx: click.Context, name: str, limit: int, as_json: bool) -> None:
    """Recent runs of sync NAME, newest first."""
    with _errors_to_exit(ctx):
        ws = _workspace(ctx)
        ws.sync(name)
        records = list_runs(ws.store, name, limit)
    if as_json:
        _dump([r.as_dict() for r in records])
        return
    for r in records:
        run_id, status, started, changes, matched, message = _run_line(r)
        matched = f" matched {matched}" if matched else ""
        click.echo(f"{run_id}  {started}  {status:<20} {changes}{matched}" + (f"  {message}" if message else ""))


@sync_group.command("run-show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def run_show(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """Everything recorded about one run."""
    with _errors_to_exit(ctx):
        record = get_run(_workspace(ctx).store, run_id)
    if as_json:
        _dump(record.as_dict())
        return
    d = record.as_dict()
    for key in ("id", "sync", "status", "dry_run", "full_resync", "started_at", "finished_at", "message"):
        click.echo(f"{key}: {d[key]}")
    click.echo("phases: " + ", ".join(f"{k} {v:.2f}s" for k, v in record.phases.items()))
    click.echo("counts:")
    for key, value in record.counts.items():
        click.echo(f"  {key}: {value}")
    for err in record.errors:
        click.echo(f"error: {err['reason']}: {err['count']} (e.g. {', '.join(map(str, err['samples']))})")


@sync_group.command("rejected")
@click.argument("name")
@click.option("--limit", default=100, show_default=True, help="At most this many identifiers.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def rejected(ctx: click.Context, name: str, limit: int, as_json: bool) -> None:
    """Identifiers the destination rejected for sync NAME; quarantined ones are no longer sent."""
    with _errors_to_exit(ctx):
        ws = _workspace(ctx)
        threshold = ws.sync(name).quarantine_after_runs
        rows = ws.store.rejections(name, limit=limit)
    entries = [
        {
            "identifier": describe((r.kind, r.label, r.value)),
            "op": r.op,
            "reason": r.reason,
            "runs": r.runs,
            "quarantined": r.runs >= threshold,
            "first_rejected_at": r.first_failed_at,
            "last_rejected_at": r.failed_at,
        }
        for r in rows
    ]
    if as_json:
        _dump(entries)
        return
    if not entries:
        click.echo(f"{name}: no rejected identifiers")
        return
    table = Table("identifier", "op", "runs", "state", "reason", "last rejected")
    for e in entries:
        state = "quarantined" if e["quarantined"] else f"retrying ({e['runs']}/{threshold})"
        table.add_row(e["identifier"], e["op"], str(e["runs"]), state, e["reason"], str(e["last_rejected_at"]))
    Console().print(table)
    click.echo(f"quarantined identifiers are sent again by: cohortflow sync run {name} --retry-rejected")


@sync_group.group("sources")
def sources_group() -> None:
    """Warehouse sources."""


@sources_group.command("test")
@click.argument("name")
@click.pass_context
def sources_test(ctx: click.Context, name: str) -> None:
    """Connect to source NAME and run a trivial query."""
    with _errors_to_exit(ctx):
        click.echo(service.test_source(_workspace(ctx), name))


@sync_group.group("models")
def models_group() -> None:
    """Models (a query or a table in a source)."""


@models_group.command("preview")
@click.argument("name")
@click.option("--limit", default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def models_preview(ctx: click.Context, name: str, limit: int, as_json: bool) -> None:
    """The first rows of model NAME."""
    with _errors_to_exit(ctx):
        rows = service.preview_model(_workspace(ctx), name, limit)
    if as_json:
        _dump(service.rows_of(rows))
        return
    table = Table(*rows.column_names)
    for row in rows.to_pylist():
        table.add_row(*("" if v is None else str(v) for v in row.values()))
    Console().print(table)


@sync_group.group("destinations")
def destinations_group() -> None:
    """Destinations (Braze Cohorts, or /users/track)."""


@destinations_group.command("test")
@click.argument("name")
@click.pass_context
def destinations_test(ctx: click.Context, name: str) -> None:
    """Prove destination NAME's keys (an empty change list changes nothing)."""
    with _errors_to_exit(ctx):
        click.echo(service.test_destination(_workspace(ctx), name))


@destinations_group.command("cohorts")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def destinations_cohorts(ctx: click.Context, name: str, as_json: bool) -> None:
    """Cohorts that destination NAME offers for ``mode: existing`` (our platform's cohort-list extension)."""

    with _errors_to_exit(ctx):
        cohorts = service.destination_cohorts(_workspace(ctx), name)
    if cohorts is None:
        click.echo("this destination does not offer a cohort list; name the cohort id in the sync", err=True)
        sys.exit(EXIT_FAILED)
    if as_json:
        _dump([c.model_dump(mode="json") for c in cohorts])
        return
    table = Table("cohort_id", "name", "size")
    for c in cohorts:
        table.add_row(c.cohort_id, c.name, str(c.size))
    Console().print(table)


@sync_group.command("trigger")
@click.argument("name")
@click.option("--dry-run", is_flag=True, help="Query and plan only.")
@click.option("--full-resync", is_flag=True, help="Re-send every member.")
@click.option("--reconcile", is_flag=True, help="Read the cohort back and repair drift both ways.")
@click.option("--retry-rejected", is_flag=True, help="Send quarantined identifiers again.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def trigger(
    ctx: click.Context,
    name: str,
    dry_run: bool,
    full_resync: bool,
    reconcile: bool,
    retry_rejected: bool,
    as_json: bool,
) -> None:
    """Queue a run of sync NAME for `cohortflow sync serve` and print its id (it runs there, not here)."""
    with _errors_to_exit(ctx):
        options = RunOptions(dry_run, full_resync, reconcile, retry_rejected)
        run_id, created = service.trigger_run(_workspace(ctx), name, options, "cli")
    if as_json:
        _dump({"id": run_id, "queued": created})
    else:
        click.echo(run_id if created else f"{run_id} (an identical run was already queued)")


@sync_group.command("cancel")
@click.argument("run_id")
@click.pass_context
def cancel(ctx: click.Context, run_id: str) -> None:
    """Cancel a run: a queued one at once; a running one stops after its batches in flight."""
    with _errors_to_exit(ctx):
        record = request_cancel(_workspace(ctx).store, run_id)
    if record.status == "cancelled":
        click.echo(f"run {run_id}: cancelled")
    else:
        click.echo(f"run {run_id}: cancel requested; it stops after the batches in flight")


@sync_group.command("serve")
@click.option("--host", default=None, help="Listen address (default: COHORTFLOW_SYNC__HOST, 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port (default: COHORTFLOW_SYNC__PORT, 8490).")
@click.option("--access-log/--no-access-log", default=False, help="One log line per HTTP request.")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, access_log: bool) -> None:
    """Schedule and run syncs, and serve the REST API and the web app."""
    import uvicorn

    from cohortflow.sync.server import create_service_app
    from cohortflow.sync.workspace import LiveWorkspace

    settings = get_settings().sync
    obj = ctx.ensure_object(dict)
    with _errors_to_exit(ctx):
        live = LiveWorkspace(obj.get("file"), state_url=obj.get("state_url"))
        live.current()  # an invalid workspace file stops the service before it starts
    app = create_service_app(live, settings)
    host = host or settings.host
    port = port or settings.port
    click.echo(f"cohortflow sync service on http://{host}:{port} (workspace {live.path})", err=True)
    uvicorn.run(app, host=host, port=port, access_log=access_log, log_level="warning")


@sync_group.group("token")
def token_group() -> None:
    """Bearer tokens of the REST API (stored hashed; shown once)."""


@token_group.command("create")
@click.argument("name")
@click.pass_context
def token_create(ctx: click.Context, name: str) -> None:
    """A new API token named NAME (what it is for); printed once."""
    from cohortflow.sync.tokens import create_token

    with _errors_to_exit(ctx):
        info, plain = create_token(_workspace(ctx).store, name)
    click.echo(plain)
    click.echo(
        f"token {info.id} ({info.name}): shown once, store it now; send it as 'Authorization: Bearer <token>'", err=True
    )


@token_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def token_list(ctx: click.Context, as_json: bool) -> None:
    """API tokens, masked, with last use and state."""
    from cohortflow.sync.tokens import list_tokens

    with _errors_to_exit(ctx):
        tokens = list_tokens(_workspace(ctx).store)
    rows = [
        {
            "id": t.id,
            "name": t.name,
            "token": t.masked,
            "created_at": t.created_at,
            "last_used_at": t.last_used_at,
            "state": "active" if t.active else "revoked",
        }
        for t in tokens
    ]
    if as_json:
        _dump(rows)
        return
    table = Table("id", "name", "token", "created", "last used", "state")
    for r in rows:
        table.add_row(*(str(r[k] or "never") for k in ("id", "name", "token", "created_at", "last_used_at", "state")))
    Console().print(table)


@token_group.command("revoke")
@click.argument("token")
@click.pass_context
def token_revoke(ctx: click.Context, token: str) -> None:
    """Revoke TOKEN (its id or its masked prefix): 401 from the next request."""
    from cohortflow.sync.tokens import revoke_token

    with _errors_to_exit(ctx):
        info = revoke_token(_workspace(ctx).store, token)
    click.echo(f"token {info.id} ({info.name}) revoked")


@sync_group.group("user")
def user_group() -> None:
    """Users of the web app (admin: configures; operator: runs and watches)."""


def _password(password_stdin: bool) -> tuple[str, bool]:
    from cohortflow.web.accounts import generate_password

    if password_stdin:
        return sys.stdin.readline().rstrip("\n"), False
    return generate_password(), True


@user_group.command("create")
@click.argument("email")
@click.option("--role", type=click.Choice(["admin", "operator"]), default="admin", show_default=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin instead of generating one.")
@click.pass_context
def user_create(ctx: click.Context, email: str, role: str, password_stdin: bool) -> None:
    """A web app user; a generated password is printed once."""
    from cohortflow.sync.web_users import create_user

    password, generated = _password(password_stdin)
    with _errors_to_exit(ctx):
        user = create_user(_workspace(ctx).store, email, role, password)
    click.echo(f"web app user {user.email} ({user.role.value}) created")
    if generated:
        click.echo(f"password (shown once): {password}")


@user_group.command("list")
@click.pass_context
def user_list(ctx: click.Context) -> None:
    """Web app users and their last sign-in."""
    from cohortflow.sync.web_users import list_users

    with _errors_to_exit(ctx):
        users = list_users(_workspace(ctx).store)
    for u in users:
        click.echo(f"{u.email}  {u.role.value}  last sign-in {u.last_login_at or 'never'}")


@user_group.command("reset-password")
@click.argument("email")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin instead of generating one.")
@click.pass_context
def user_reset_password(ctx: click.Context, email: str, password_stdin: bool) -> None:
    """A new password for EMAIL; its sessions end."""
    from cohortflow.sync.web_users import set_password

    password, generated = _password(password_stdin)
    with _errors_to_exit(ctx):
        set_password(_workspace(ctx).store, email, password)
    click.echo(f"password of {email} reset; its sessions ended")
    if generated:
        click.echo(f"password (shown once): {password}")
