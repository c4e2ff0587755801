"""Helpers every ``cohortflow platform ...`` command module shares: the unit of work, output, common options.

Its own module so that the command modules (``cli``, ``keys_cli``, ``segments_cli``, ``messaging_cli``) import
it at the top instead of importing each other.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import click
from sqlalchemy import Connection

from cohortflow.platform import workspaces
from cohortflow.platform.errors import NotFound
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.redact import redact_url
from cohortflow.settings import PlatformSettings, get_settings


def open_runtime() -> PlatformRuntime:
    return PlatformRuntime.open(get_settings().platform)


def safe_database_url() -> str:
    return redact_url(get_settings().platform.database_url)


def one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextmanager
def transaction() -> Iterator[Connection]:
    """One unit of work on a freshly opened (and migrated) runtime."""
    runtime = open_runtime()
    try:
        with runtime.transaction() as conn:
            yield conn
    finally:
        runtime.close()


def emit(as_json: bool, payload: Any, human: str) -> None:
    """Print ``payload`` as JSON for scripts or ``human`` for people."""
    click.echo(json.dumps(payload, default=_json_default, indent=2, ensure_ascii=False) if as_json else human)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "never"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of text.")
workspace_option = click.option("--workspace", "-w", "workspace_ref", required=True, help="Workspace id (or name).")
partner_option = click.option("--partner", "-p", "partner_name", required=True, help="Partner name, e.g. hightouch.")


def resolve_workspace(conn: Connection, ref: str) -> str:
    """A workspace id from an id or, when unambiguous, a name (quickstart's workspace is "default")."""
    try:
        return str(workspaces.get_workspace(conn, ref)["id"])
    except NotFound:
        named = [w for w in workspaces.list_workspaces(conn) if w["name"] == ref]
        if len(named) == 1:
            return str(named[0]["id"])
        if len(named) > 1:
            raise click.ClickException(f"{len(named)} workspaces are named {ref!r}; use the workspace id") from None
        raise


def rest_endpoint(settings: PlatformSettings, host: str | None = None, port: int | None = None) -> str:
    """The REST endpoint users give their partner: the configured public base URL.

    When the operator did not configure one but chose where to serve, the served address is the truth.
    """
    if "public_base_url" in settings.model_fields_set or (host is None and port is None):
        return settings.public_base_url.rstrip("/")
    return f"http://{host or settings.host}:{port or settings.port}"
