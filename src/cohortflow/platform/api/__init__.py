"""The platform's HTTP API (FastAPI). Routes parse, authenticate and call domain functions; nothing more."""

from cohortflow.platform.api.app import create_app

__all__ = ["create_app"]
