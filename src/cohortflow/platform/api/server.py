"""Module-level ASGI app for ``uvicorn cohortflow.platform.api.server:app`` (settings from the environment)."""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI


def _build() -> FastAPI:
    # Imported here, with the collector off (below), rather than at the top of the module.
    from cohortflow.logs import configure_logging
    from cohortflow.platform.api.app import create_app
    from cohortflow.platform.runtime import PlatformRuntime
    from cohortflow.settings import get_settings

    # Each uvicorn worker imports this module in a process of its own, so logging is set up here and not only by
    # the CLI: without it structlog's defaults print tracebacks with every local variable, request headers included.
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    return create_app(
        PlatformRuntime.open(settings.platform),
        messaging_worker=settings.messaging if settings.messaging.worker_in_process else None,
    )


# Start-up allocates hundreds of thousands of objects that all live as long as the process (modules, the app's
# routes and models) and almost no cyclic garbage: collecting while they pile up only walks them again and
# again (about a tenth of the start-up's CPU). Once built, they are moved out of the collector's generations,
# so the full collections that request garbage triggers no longer walk them either.
gc.disable()
try:
    app = _build()
finally:
    gc.freeze()
    gc.enable()
