"""The demo's folder and the platform process serving from it.

Kept apart from :mod:`cohortflow.demo.run` (which imports the whole stack) so that ``cohortflow demo`` can start
the platform server before it imports what only the demo itself needs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import NoReturn

from cohortflow.platform.process import ServerProcess, free_port, launch_server, server_environment


def reset_directory(directory: Path) -> Path:
    """The demo's folder, absolute and empty: every run starts clean, so running the demo twice works.

    A previous run's folder is renamed aside at once and deleted by :func:`discard_previous` (deleting its
    hundreds of files here took 0.1-0.3 s, on the way to starting the platform).
    """
    directory = directory.resolve()
    if directory.exists():
        aside = _aside(directory)
        try:
            directory.rename(aside)
        except OSError:  # e.g. the folder is a mount point: delete it in place
            shutil.rmtree(directory)
    directory.mkdir(parents=True)
    return directory


def discard_previous(directory: Path) -> None:
    """Delete the previous run's folder that :func:`reset_directory` set aside, while the demo goes on.

    With ``rm`` at hand, a process of its own does it: a thread of this process waited for the interpreter lock
    after each of hundreds of files while the demo kept it busy (seconds under load), and the demo's exit then
    waited for the thread. Without ``rm``, a thread it is.
    """
    aside = _aside(directory)
    if not aside.exists():
        return
    rm = shutil.which("rm")
    if rm is None:
        threading.Thread(target=shutil.rmtree, args=(aside,), name="demo-previous-folder").start()
        return
    # Kept, so that the finished process is reaped rather than reported as left running.
    _deleting.append(subprocess.Popen([rm, "-rf", "--", str(aside)], stdin=subprocess.DEVNULL))


_deleting: list[subprocess.Popen[bytes]] = []


def _aside(directory: Path) -> Path:
    return directory.with_name(f".{directory.name}.previous-{os.getpid()}")


def platform_database_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'platform.db'}"


def launch_platform(directory: Path) -> ServerProcess:
    """Start the demo's platform (a process of its own, as in production, so client and server each get a core)
    on the folder's SQLite database, without waiting for it; it creates the schema as it starts.

    On Linux the server is a fork of this process once the modules both sides use are imported (SQLAlchemy,
    pydantic, the platform's domain and messaging): a server started from scratch imported them all again, about
    0.6 s of CPU on the two cores the demo shares with the server. It then builds the app from
    its environment exactly as ``uvicorn cohortflow.platform.api.server:app`` does. Elsewhere (no ``fork``, or
    macOS, where forking after some system libraries are loaded is unsafe) and when this process already runs
    threads, it is started from scratch.
    """
    database_url = platform_database_url(directory)
    if not sys.platform.startswith("linux") or threading.active_count() > 1:
        return launch_server(database_url)
    # Imported before the fork, so that both processes have them: the platform's domain and messaging, which the
    # demo calls directly too. The web app (FastAPI, the routes, the dashboard) only the server imports, while
    # this process imports the sync side.
    import cohortflow.platform.messaging.campaigns
    import cohortflow.platform.runtime  # noqa: F401

    port = free_port()
    env = server_environment(database_url, port)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _serve(env, port)
    return ServerProcess(f"http://127.0.0.1:{port}", database_url, _ForkedChild(pid), env)


def _serve(env: dict[str, str], port: int) -> NoReturn:
    """The forked server's whole life; it never returns into the demo's code (nor runs its exit handlers)."""
    code = 1
    try:
        import uvicorn

        from cohortflow.settings import get_settings

        os.environ.clear()
        os.environ.update(env)
        get_settings.cache_clear()  # the demo read its settings before the fork; the server reads its own
        from cohortflow.platform.api.server import app

        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
        uvicorn.Server(config).run()
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class _ForkedChild:
    """A forked process, with the part of :class:`subprocess.Popen`'s interface :class:`ServerProcess` uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"platform server (pid {self.pid})", timeout or 0)
            time.sleep(0.01)
        return code

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)
