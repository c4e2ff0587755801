"""The demo's folder and the platform process serving from it.

Kept apart from :mod:`cohortflow.demo.run` (which imports the whole stack) so that ``cohortflow demo`` can start
the platform server first and import the rest while the server imports and starts, in parallel.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from cohortflow.platform.process import ServerProcess, launch_server


def reset_directory(directory: Path) -> Path:
    """The demo's folder, absolute and empty: every run starts clean, so running the demo twice works."""
    directory = directory.resolve()
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    return directory


def platform_database_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'platform.db'}"


def launch_platform(directory: Path) -> ServerProcess:
    """Start the demo's platform (a process of its own, as in production, so client and server each get a core)
    on the folder's SQLite database, without waiting for it; it creates the schema as it starts."""
    return launch_server(platform_database_url(directory))
