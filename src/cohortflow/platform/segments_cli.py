"""``cohortflow platform segment ...``: segments from the command line, over the same domain functions as the API.

The filter tree is JSON, inline (``--filter '{"type": ...}'``) or in a file (``--filter-file seg.json``, ``-`` for
standard input). Membership is evaluated when the command runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy import Connection

from cohortflow.clock import utcnow
from cohortflow.platform.cli_common import resolve_workspace, transaction
from cohortflow.platform.segments import service
from cohortflow.platform.segments.filters import dump_filter

F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def _workspace_transaction(workspace_ref: str) -> Iterator[tuple[Connection, str]]:
    with transaction() as conn:
        yield conn, resolve_workspace(conn, workspace_ref)


def _emit(as_json: bool, payload: Any, human: str) -> None:
    click.echo(json.dumps(payload, default=str, indent=2) if as_json else human)


def _options(func: F) -> F:
    func = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of text.")(func)
    return click.option("--workspace", "-w", "workspace_ref", required=True, help="Workspace id (or name).")(func)


def _filter_options(func: F) -> F:
    func = click.option(
        "--filter-file", type=click.File("r"), default=None, help="JSON file with the filter ('-': stdin)."
    )(func)
    return click.option("--filter", "filter_json", default=None, help="The filter tree as inline JSON.")(func)


def _read_filter(filter_json: str | None, filter_file: Any, *, required: bool) -> object | None:
    if filter_json is not None and filter_file is not None:
        raise click.UsageError("give --filter or --filter-file, not both")
    text = filter_json if filter_json is not None else filter_file.read() if filter_file is not None else None
    if text is None:
        if required:
            raise click.UsageError("a filter is required: --filter JSON or --filter-file PATH")
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        source = "--filter" if filter_json is not None else f"--filter-file {Path(filter_file.name).name}"
        raise click.UsageError(f"{source} is not valid JSON: {exc}") from None


def _describe(segment: service.Segment) -> str:
    return "\n".join(
        [
            f"Segment {segment.id}: {segment.name}",
            f"  updated  {segment.updated_at:%Y-%m-%d %H:%M:%S} UTC",
            "  filter   " + json.dumps(dump_filter(segment.filter)),
        ]
    )


@click.group("segment")
def segment_group() -> None:
    """Segments: saved filter trees (cohorts, attributes, events ...), sized and previewed live."""


@segment_group.command("create")
@_options
@click.option("--name", required=True, help="Segment name.")
@_filter_options
def create(workspace_ref: str, as_json: bool, name: str, filter_json: str | None, filter_file: Any) -> None:
    """Create a segment. Its cohorts must exist in the workspace."""
    data = _read_filter(filter_json, filter_file, required=True)
    with _workspace_transaction(workspace_ref) as (conn, workspace_id):
        segment = service.create_segment(conn, workspace_id, name, data)
    _emit(as_json, segment.to_dict(), _describe(segment))


@segment_group.command("update")
@_options
@click.argument("segment_id")
@click.option("--name", default=None, help="New name.")
@_filter_options
def update(
    workspace_ref: str, as_json: bool, segment_id: str, name: str | None, filter_json: str | None, filter_file: Any
) -> None:
    """Rename and/or redefine a segment."""
    data = _read_filter(filter_json, filter_file, required=False)
    with _workspace_transaction(workspace_ref) as (conn, workspace_id):
        segment = service.update_segment(conn, workspace_id, segment_id, name=name, filter_data=data)
    _emit(as_json, segment.to_dict(), _describe(segment))


@segment_group.command("delete")
@_options
@click.argument("segment_id")
def delete(workspace_ref: str, as_json: bool, segment_id: str) -> None:
    """Delete a segment."""
    with _workspace_transaction(workspace_ref) as (conn, workspace_id):
        service.delete_segment(conn, workspace_id, segment_id)
    _emit(as_json, {"deleted": segment_id}, f"Deleted segment {segment_id}.")


@segment_group.command("list")
@_options
def list_(workspace_ref: str, as_json: bool) -> None:
    """List the workspace's segments."""
    with _workspace_transaction(workspace_ref) as (conn, workspace_id):
        found = service.list_segments(conn, workspace_id)
    human = "\n".join(f"{s.id}  {s.name}" for s in found) or "No segments."
    _emit(as_json, [s.to_dict() for s in found], human)


@segment_group.command("show")
@_options
@click.argument("segment_id")
def show(workspace_ref: str, as_json: bool, segment_id: str) -> None:
    """Show one segment's definition."""
    with _workspace_transaction(workspace_ref) as (conn, workspace_id):
        segment = service.get_segment(conn, workspace_id, segment_id)
    _emit(as_json, segment.to_dict(), _describe(segment))


@segment_group.command("size")
@_options
@click.argument("segment_id")
def size(workspace_ref: str, as_json: bool, segment_id: str) -> None:
    """Exact size now, and how many members each channel can reach."""
    now = utcnow()
    with _workspace_transaction(workspace_ref) as (conn, workspace_id):
        counted = service.segment_size(conn, workspace_id, segment_id, now=now)
    human = (
        f"Segment {segment_id}: {counted.total} users "
        f"({counted.reachable_email} reachable by email, {counted.reachable_webhook} by webhook)"
    )
    _emit(as_json, {"segment_id": segment_id, **counted.to_dict(), "evaluated_at": now.isoformat()}, human)


@segment_group.command("preview")
@_options
@click.argument("segment_id")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, service.MAX_PREVIEW))
def preview(workspace_ref: str, as_json: bool, segment_id: str, limit: int) -> None:
    """Show some members (lowest user ids first)."""
    now = utcnow()
    with _workspace_transaction(workspace_ref) as (conn, workspace_id):
        members = service.preview_members(conn, workspace_id, segment_id, limit=limit, now=now)
    columns = ("braze_id", "external_id", "email", "country", "email_subscribe")
    rows = [[str(m.get(c) or "-") for c in columns] for m in members]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    _emit(as_json, members, "\n".join(lines) if members else "No members.")


@segment_group.command("filters")
@_options
def filters(workspace_ref: str, as_json: bool) -> None:
    """The filters available in the workspace, with each partner's cohorts."""
    with _workspace_transaction(workspace_ref) as (conn, workspace_id):
        catalogue = service.filter_catalogue(conn, workspace_id)
    lines = []
    for entry in catalogue["filters"]:
        lines.append(f"{entry['name']}  (type {entry['type']})")
        lines += [f"    {c['cohort_id']}  {c['name']}" for c in entry.get("cohorts", [])]
    _emit(as_json, catalogue, "\n".join(lines))
