"""Module-level ASGI app for ``uvicorn cohortflow.platform.api.server:app`` (settings from the environment)."""

from __future__ import annotations

from cohortflow.platform.api.app import create_app
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.settings import get_settings

app = create_app(PlatformRuntime.open(get_settings().platform))
