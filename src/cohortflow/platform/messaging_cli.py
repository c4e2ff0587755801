"""``cohortflow platform campaign|canvas|worker ...``: campaigns, Canvases and the messaging worker.

Commands parse arguments and call the domain functions in :mod:`cohortflow.platform.messaging`; every
command prints for people by default and JSON with ``--json``. Definitions are read from a JSON or YAML
file (``-`` for standard input) with the same fields as the HTTP API's request bodies.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import click
import yaml
from sqlalchemy import Connection

from cohortflow.clock import utcnow
from cohortflow.platform.cli_common import resolve_workspace
from cohortflow.platform.errors import InvalidRequest
from cohortflow.platform.messaging import campaigns, canvas, frequency, worker
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.settings import MessagingSettings, get_settings

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of text.")
workspace_option = click.option("--workspace", "-w", "workspace_ref", required=True, help="Workspace id (or name).")


def _runtime() -> PlatformRuntime:
    return PlatformRuntime.open(get_settings().platform)


def _messaging() -> MessagingSettings:
    return get_settings().messaging


@contextmanager
def _transaction() -> Iterator[Connection]:
    runtime = _runtime()
    try:
        with runtime.transaction() as conn:
            yield conn
    finally:
        runtime.close()


def _workspace(conn: Connection, ref: str) -> str:
    return resolve_workspace(conn, ref)


def _emit(as_json: bool, payload: Any, human: str) -> None:
    click.echo(json.dumps(payload, default=str, indent=2, ensure_ascii=False) if as_json else human)


def _read_definition(path: str) -> Any:
    stream = click.open_file(path, "r", encoding="utf-8")
    with stream:
        text = stream.read()
    try:
        return yaml.safe_load(text)  # YAML is a superset of JSON, so this reads both
    except yaml.YAMLError as exc:
        raise InvalidRequest(f"{path}: not valid JSON or YAML: {exc}") from exc


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in counts.items())


# --- campaigns ---------------------------------------------------------------------------------------


@click.group("campaign")
def campaign_group() -> None:
    """Campaigns: one message on one channel to target segments."""


@campaign_group.command("create")
@workspace_option
@click.option("--file", "-f", "path", required=True, help="Campaign definition (JSON or YAML; - for stdin).")
@json_option
def campaign_create(workspace_ref: str, path: str, as_json: bool) -> None:
    """Create a campaign; every problem is reported and nothing is saved."""
    data = _read_definition(path)
    with _transaction() as conn:
        created = campaigns.create_campaign(conn, _workspace(conn, workspace_ref), data, settings=_messaging())
    _emit(as_json, created.to_dict(), f"Created campaign {created.name!r} ({created.id}), channel {created.channel}")


@campaign_group.command("list")
@workspace_option
@json_option
def campaign_list(workspace_ref: str, as_json: bool) -> None:
    """List campaigns."""
    with _transaction() as conn:
        items = campaigns.list_campaigns(conn, _workspace(conn, workspace_ref))
    human = "\n".join(f"{c.id}  {c.channel:8}  {c.name}" for c in items) or "No campaigns."
    _emit(as_json, [c.to_dict() for c in items], human)


@campaign_group.command("show")
@workspace_option
@click.argument("campaign_id")
@json_option
def campaign_show(workspace_ref: str, campaign_id: str, as_json: bool) -> None:
    """Show a campaign's definition."""
    with _transaction() as conn:
        item = campaigns.get_campaign(conn, _workspace(conn, workspace_ref), campaign_id)
    _emit(as_json, item.to_dict(), json.dumps(item.to_dict(), indent=2))


def _run_to_end(send_id: int, wait_seconds: float) -> campaigns.SendRun:
    """Run a send here; while another process holds its lease, wait (up to ``wait_seconds``) for it to lapse."""
    runtime = _runtime()
    try:
        deadline = time.monotonic() + wait_seconds
        while True:
            result = campaigns.run_send(runtime.engine, _messaging(), send_id, clock=runtime.clock)
            if result is not None and (result.completed or time.monotonic() >= deadline):
                return result
            if result is None and time.monotonic() >= deadline:
                raise click.ClickException(
                    f"send {send_id} is held by another process (or finished, or not due); try again later"
                )
            time.sleep(min(1.0, max(0.05, _messaging().send_lease_seconds / 10)))
    finally:
        runtime.close()


@campaign_group.command("send-now")
@workspace_option
@click.argument("campaign_id")
@click.option("--queue", is_flag=True, help="Only create the send; a worker delivers it.")
@json_option
def campaign_send_now(workspace_ref: str, campaign_id: str, queue: bool, as_json: bool) -> None:
    """Send now: evaluate the audience and deliver in this process (or just queue it with --queue)."""
    with _transaction() as conn:
        workspace_id = _workspace(conn, workspace_ref)
        send = campaigns.request_send(conn, workspace_id, campaign_id)
    if not queue:
        _run_to_end(send.id, 0)
        with _transaction() as conn:
            send = campaigns.get_send(conn, workspace_id, campaign_id, send.id)
    _emit(as_json, send.to_dict(), f"Send {send.id}: {send.status} ({_counts(send.counts)})")


@campaign_group.command("schedule")
@workspace_option
@click.argument("campaign_id")
@click.option(
    "--at",
    "at",
    required=True,
    type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"]),
    help="When, ISO 8601 (UTC unless an offset is given).",
)
@json_option
def campaign_schedule(workspace_ref: str, campaign_id: str, at: datetime, as_json: bool) -> None:
    """Schedule a send; the worker delivers it when due."""
    with _transaction() as conn:
        send = campaigns.request_send(conn, _workspace(conn, workspace_ref), campaign_id, at=at)
    _emit(as_json, send.to_dict(), f"Send {send.id} scheduled for {send.scheduled_at.isoformat()}")


@campaign_group.command("resume")
@click.argument("send_id", type=int)
@click.option(
    "--wait",
    "wait_seconds",
    default=None,
    type=float,
    help="Seconds to wait for a crashed sender's lease to lapse (default: the lease time plus a bit).",
)
@json_option
def campaign_resume(send_id: int, wait_seconds: float | None, as_json: bool) -> None:
    """Finish a send that a crashed process left running; users already sent to are not sent again.

    A completed send is only reported; a send still held by a live process is waited for (up to --wait).
    """
    with _transaction() as conn:
        workspace_id, campaign_id = campaigns.find_send(conn, send_id)
        status = campaigns.get_send(conn, workspace_id, campaign_id, send_id).status
    if status == "scheduled":
        raise click.ClickException(f"send {send_id} has not started; the worker runs it when it is due")
    if status == "running":
        _run_to_end(send_id, wait_seconds if wait_seconds is not None else _messaging().send_lease_seconds * 1.5)
    with _transaction() as conn:
        send = campaigns.get_send(conn, workspace_id, campaign_id, send_id)
    _emit(as_json, send.to_dict(), f"Send {send.id}: {send.status} ({_counts(send.counts)})")


@campaign_group.command("stop")
@workspace_option
@click.argument("campaign_id")
@click.argument("send_id", type=int)
@json_option
def campaign_stop(workspace_ref: str, campaign_id: str, send_id: int, as_json: bool) -> None:
    """Stop a scheduled or running send: it sends nothing more (unsent messages are logged skipped)."""
    with _transaction() as conn:
        send = campaigns.stop_send(conn, _workspace(conn, workspace_ref), campaign_id, send_id, now=utcnow())
    _emit(as_json, send.to_dict(), f"Send {send.id}: {send.status} ({_counts(send.counts)})")


@campaign_group.command("frequency-caps")
@workspace_option
@click.option(
    "--set",
    "caps",
    multiple=True,
    metavar="CHANNEL:N:SECONDS",
    help="At most N messages per user on CHANNEL (email, webhook) in any SECONDS; repeat per channel.",
)
@click.option("--clear", is_flag=True, help="Remove every cap.")
@json_option
def campaign_frequency_caps(workspace_ref: str, caps: tuple[str, ...], clear: bool, as_json: bool) -> None:
    """Show or replace the workspace's global frequency caps (campaigns and Canvases may ignore them)."""
    parsed = []
    for cap in caps:
        parts = cap.split(":")
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
            raise click.BadParameter(f"{cap!r} is not CHANNEL:N:SECONDS (e.g. email:2:86400)", param_hint="--set")
        parsed.append({"channel": parts[0], "max_messages": int(parts[1]), "period_seconds": int(parts[2])})
    with _transaction() as conn:
        workspace_id = _workspace(conn, workspace_ref)
        shown = (
            frequency.set_caps(conn, workspace_id, parsed)
            if parsed or clear
            else frequency.list_caps(conn, workspace_id)
        )
    payload = {"caps": [c.model_dump() for c in shown]}
    human = "\n".join(f"{c.channel}: at most {c.max_messages} per {c.period_seconds} s" for c in shown) or "No caps."
    _emit(as_json, payload, human)


@campaign_group.command("log")
@workspace_option
@click.argument("campaign_id")
@click.argument("send_id", type=int)
@click.option("--status", type=click.Choice(campaigns.DELIVERY_STATUSES), default=None)
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, campaigns.MAX_LOG_PAGE))
@click.option("--after-user-id", default=None, type=int, help="Page on: the last user_id of the previous page.")
@json_option
def campaign_log(
    workspace_ref: str,
    campaign_id: str,
    send_id: int,
    status: str | None,
    limit: int,
    after_user_id: int | None,
    as_json: bool,
) -> None:
    """The per-user send log."""
    with _transaction() as conn:
        entries = campaigns.send_log(
            conn,
            _workspace(conn, workspace_ref),
            campaign_id,
            send_id,
            status=status,
            limit=limit,
            after_user_id=after_user_id,
        )
    human = "\n".join(
        f"{e['user_id']:>8}  {e['external_id'] or '-':20}  {e['status']:8}  {e['reason'] or ''}" for e in entries
    )
    _emit(as_json, entries, human or "No entries.")


@campaign_group.command("stats")
@workspace_option
@click.argument("campaign_id")
@json_option
def campaign_stats(workspace_ref: str, campaign_id: str, as_json: bool) -> None:
    """Counts per status, per send and in total."""
    with _transaction() as conn:
        stats = campaigns.campaign_stats(conn, _workspace(conn, workspace_ref), campaign_id)
    lines = [f"Total: {_counts(stats['totals'])}"]
    lines += [f"Send {s['id']} ({s['status']}): {_counts(s['counts'])}" for s in stats["sends"]]
    _emit(as_json, stats, "\n".join(lines))


# --- canvases ----------------------------------------------------------------------------------------


@click.group("canvas")
def canvas_group() -> None:
    """Canvases: multi-step journeys (message, delay, audience split, exit)."""


@canvas_group.command("create")
@workspace_option
@click.option("--file", "-f", "path", required=True, help="Canvas definition (JSON or YAML; - for stdin).")
@json_option
def canvas_create(workspace_ref: str, path: str, as_json: bool) -> None:
    """Create a Canvas as a draft; every problem is reported and nothing is saved."""
    data = _read_definition(path)
    with _transaction() as conn:
        created = canvas.create_canvas(conn, _workspace(conn, workspace_ref), data, settings=_messaging())
    _emit(as_json, created.to_dict(), f"Created Canvas {created.name!r} ({created.id}) as a draft")


@canvas_group.command("list")
@workspace_option
@json_option
def canvas_list(workspace_ref: str, as_json: bool) -> None:
    """List Canvases."""
    with _transaction() as conn:
        items = canvas.list_canvases(conn, _workspace(conn, workspace_ref))
    human = "\n".join(f"{c.id}  {c.status:8}  {c.name}" for c in items) or "No Canvases."
    _emit(as_json, [c.to_dict() for c in items], human)


@canvas_group.command("show")
@workspace_option
@click.argument("canvas_id")
@json_option
def canvas_show(workspace_ref: str, canvas_id: str, as_json: bool) -> None:
    """Show a Canvas's definition and state."""
    with _transaction() as conn:
        item = canvas.get_canvas(conn, _workspace(conn, workspace_ref), canvas_id)
    _emit(as_json, item.to_dict(), json.dumps(item.to_dict(), indent=2))


@canvas_group.command("start")
@workspace_option
@click.argument("canvas_id")
@json_option
def canvas_start(workspace_ref: str, canvas_id: str, as_json: bool) -> None:
    """Activate a draft Canvas; users enter on its schedule when a worker runs."""
    with _transaction() as conn:
        item = canvas.start_canvas(conn, _workspace(conn, workspace_ref), canvas_id)
    when = item.next_entry_at.isoformat() if item.next_entry_at else "never"
    _emit(as_json, item.to_dict(), f"Started Canvas {item.name!r}; next entry {when}")


@canvas_group.command("stop")
@workspace_option
@click.argument("canvas_id")
@json_option
def canvas_stop(workspace_ref: str, canvas_id: str, as_json: bool) -> None:
    """Stop an active Canvas: no more entries, moves or messages."""
    with _transaction() as conn:
        item = canvas.stop_canvas(conn, _workspace(conn, workspace_ref), canvas_id)
    _emit(as_json, item.to_dict(), f"Stopped Canvas {item.name!r}")


@canvas_group.command("stats")
@workspace_option
@click.argument("canvas_id")
@json_option
def canvas_stats(workspace_ref: str, canvas_id: str, as_json: bool) -> None:
    """Per step: entered, at the step, sent, failed, skipped, on each path, exited."""
    with _transaction() as conn:
        stats = canvas.canvas_stats(conn, _workspace(conn, workspace_ref), canvas_id)
    lines = [f"Canvas {canvas_id} ({stats['status']}): entered {stats['entered']}, exited {stats['exited']}"]
    for step in stats["steps"]:
        extra = {k: v for k, v in step.items() if k not in ("id", "type", "name")}
        lines.append(f"  {step['id']} [{step['type']}]: " + ", ".join(f"{k} {v}" for k, v in extra.items()))
    _emit(as_json, stats, "\n".join(lines))


# --- worker ------------------------------------------------------------------------------------------


@click.group("worker")
def worker_group() -> None:
    """The messaging worker: due campaign sends and Canvas steps."""


@worker_group.command("run")
@click.option("--once", is_flag=True, help="One pass, then exit.")
@click.option("--poll-seconds", default=None, type=click.FloatRange(min=0.1), help="Pause between passes.")
@json_option
def worker_run(once: bool, poll_seconds: float | None, as_json: bool) -> None:
    """Run due sends (resuming crashed ones) and advance Canvases; Ctrl-C stops after the current pass."""
    runtime = _runtime()
    try:
        if once:
            summary = worker.run_once(runtime.engine, _messaging(), clock=runtime.clock)
            _emit(
                as_json,
                summary.to_dict(),
                f"Ran {len(summary.sends_run)} sends ({len(summary.sends_completed)} completed); advanced "
                f"{len(summary.canvases_advanced)} Canvases ({summary.users_entered} entered, "
                f"{summary.users_moved} moved)",
            )
            return
        stop = threading.Event()
        try:
            worker.run_forever(runtime.engine, _messaging(), clock=runtime.clock, stop=stop, poll_seconds=poll_seconds)
        except KeyboardInterrupt:
            stop.set()
    finally:
        runtime.close()
