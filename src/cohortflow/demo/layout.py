"""The demo's folder and the platform process serving from it.

Kept apart from :mod:`cohortflow.demo.run` (which imports the whole stack) so that ``cohortflow demo`` can start
the platform server first and import the rest while the server imports and starts, in parallel.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

from cohortflow.platform.process import ServerProcess, launch_server


def reset_directory(directory: Path) -> Path:
    """The demo's folder, absolute and empty: every run starts clean, so running the demo twice works.

    A previous run's folder is renamed aside at once and deleted in a thread while the demo goes on (deleting its
    hundreds of files took 0.1-0.3 s, on the way to starting the platform); the process exits once it is gone.
    """
    directory = directory.resolve()
    if directory.exists():
        aside = directory.with_name(f".{directory.name}.deleting-{os.getpid()}")
        try:
            directory.rename(aside)
        except OSError:  # e.g. the folder is a mount point: delete it in place
            shutil.rmtree(directory)
        else:
            threading.Thread(target=shutil.rmtree, args=(aside,), name="demo-old-folder").start()
    directory.mkdir(parents=True)
    return directory


def platform_database_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'platform.db'}"


def launch_platform(directory: Path) -> ServerProcess:
    """Start the demo's platform (a process of its own, as in production, so client and server each get a core)
    on the folder's SQLite database, without waiting for it; it creates the schema as it starts."""
    return launch_server(platform_database_url(directory))
