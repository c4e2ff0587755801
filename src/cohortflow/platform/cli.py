"""``cohortflow platform ...``: the operator CLI. Commands parse arguments and call domain functions."""

from __future__ import annotations

import json
from typing import Any

import click

from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.settings import get_settings


def open_runtime() -> PlatformRuntime:
    return PlatformRuntime.open(get_settings().platform)


def emit(as_json: bool, payload: Any, human: str) -> None:
    """Print ``payload`` as JSON for scripts or ``human`` for people."""
    click.echo(json.dumps(payload, default=str, indent=2) if as_json else human)


@click.group("platform")
def platform_group() -> None:
    """Operate the engagement platform (the Braze side)."""


@platform_group.command("serve")
@click.option("--host", default=None, help="Interface to bind (default: settings, 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port (default: settings, 8480).")
@click.option("--workers", default=1, show_default=True, type=int, help="Uvicorn worker processes.")
def serve(host: str | None, port: int | None, workers: int) -> None:
    """Serve the platform's HTTP API."""
    import uvicorn

    settings = get_settings().platform
    open_runtime().close()  # migrate once before workers start
    uvicorn.run(
        "cohortflow.platform.api.server:app",
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        log_level="warning",
        factory=False,
    )
