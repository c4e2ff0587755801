"""A loaded workspace: the validated ``cohortflow.yaml`` plus the state database it records runs in."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import structlog

from cohortflow.settings import get_settings
from cohortflow.sync.audiences.compiler import compile_audience
from cohortflow.sync.config import DestinationConfig, ModelConfig, SyncConfig, WorkspaceConfig, load_workspace_config
from cohortflow.sync.errors import ConfigError, UnknownObject
from cohortflow.sync.secrets import env_files, workspace_env
from cohortflow.sync.sources import Source
from cohortflow.sync.state import StateStore

log = structlog.get_logger("cohortflow.sync")


@dataclass
class Workspace:
    path: Path
    config: WorkspaceConfig
    state_url: str
    _store: StateStore | None = field(default=None, repr=False)
    # False when the store is shared (a LiveWorkspace's snapshots): closing the snapshot leaves it open.
    owns_store: bool = True
    # ${VAR} references the environment lacks, by dotted location: an error only where the value is used.
    missing_env: dict[tuple[str, ...], str] = field(default_factory=dict)

    def require_env(self, *prefix: str) -> None:
        """Raise the missing-variable error of anything under ``prefix`` (e.g. a destination's keys)."""
        problems = [msg for loc, msg in self.missing_env.items() if loc[: len(prefix)] == prefix]
        if problems:
            raise ConfigError("\n".join(problems))

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def store(self) -> StateStore:
        """The state database, opened (and migrated) on first use."""
        if self._store is None:
            self._store = StateStore.open(self.state_url)
        return self._store

    def _get(self, kind: str, table: Mapping[str, object], name: str) -> object:
        if name not in table:
            known = ", ".join(sorted(table)) or "none"
            raise UnknownObject(f"{self.path}: no {kind} named {name!r} (declared: {known})")
        return table[name]

    def sync(self, name: str) -> SyncConfig:
        value = self._get("sync", self.config.syncs, name)
        assert isinstance(value, SyncConfig)
        return value

    def model(self, name: str) -> ModelConfig:
        value = self._get("model", self.config.models, name)
        assert isinstance(value, ModelConfig)
        return value

    def sync_model(self, name: str, *, now: datetime | None = None) -> ModelConfig:
        """What sync ``name`` sends: its model, or its audience compiled for its source (relative windows
        counted back from ``now``) and read by the planner like a model."""
        sync = self.sync(name)
        if sync.model is not None:
            return self.model(sync.model)
        assert sync.audience is not None
        return compile_audience(self.config, sync.audience, now=now).as_model()

    def destination(self, name: str) -> DestinationConfig:
        self._get("destination", self.config.destinations, name)
        self.require_env("destinations", name)
        return self.config.destinations[name]

    def source(self, name: str) -> Source:
        self._get("source", self.config.sources, name)
        self.require_env("sources", name)
        return Source(name, self.config.sources[name], self.base_dir)

    def close(self) -> None:
        if self._store is not None and self.owns_store:
            self._store.close()
            self._store = None

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_workspace(
    path: Path | str | None = None,
    *,
    state_url: str | None = None,
    env: Mapping[str, str] | None = None,
    strict_env: bool = False,
) -> Workspace:
    """Read and validate a workspace file (default: ``settings.sync.config_path``).

    ``state_url`` defaults to ``settings.sync.state_url`` (``COHORTFLOW_SYNC_STATE_URL``). A ``${VAR}`` that is
    not set fails only what uses it (reading run history needs no destination key), unless ``strict_env``.
    """
    settings = get_settings().sync
    resolved = Path(path) if path is not None else settings.config_path
    missing: dict[tuple[str, ...], str] = {}
    config = load_workspace_config(
        resolved, workspace_env(resolved.resolve(), env), deferred=None if strict_env else missing
    )
    return Workspace(
        path=resolved.resolve(), config=config, state_url=state_url or settings.state_url, missing_env=missing
    )


class LiveWorkspace:
    """The workspace file as it is now, for a long-running process (``sync serve``).

    :meth:`current` re-reads the file when it (or its ``.env`` / secrets file) changed, so an edit by hand or
    by the web app shows without a restart; every snapshot shares one state store. An edit that does not
    validate keeps the last good configuration in force and is reported in :attr:`error`.
    """

    def __init__(self, path: Path | str | None = None, *, state_url: str | None = None) -> None:
        settings = get_settings().sync
        self.path = Path(path if path is not None else settings.config_path).resolve()
        self.state_url = state_url or settings.state_url
        self.store = StateStore.open(self.state_url)
        self.error: str | None = None
        self._lock = threading.Lock()
        self._stamp: tuple[tuple[int, int], ...] | None = None
        self._current: Workspace | None = None

    def _files_stamp(self) -> tuple[tuple[int, int], ...]:
        stamps = []
        for file in (self.path, *env_files(self.path)):
            try:
                st = file.stat()
                stamps.append((st.st_mtime_ns, st.st_size))
            except OSError:
                stamps.append((0, -1))
        return tuple(stamps)

    def current(self) -> Workspace:
        with self._lock:
            stamp = self._files_stamp()
            if self._current is not None and stamp == self._stamp:
                return self._current
            missing: dict[tuple[str, ...], str] = {}
            try:
                config = load_workspace_config(self.path, workspace_env(self.path), deferred=missing)
            except ConfigError as exc:
                if self._current is None:
                    raise
                if self.error != exc.message:
                    log.error(
                        "the workspace file does not validate; the last good version stays in force", error=exc.message
                    )
                self.error, self._stamp = exc.message, stamp
                return self._current
            self.error, self._stamp = None, stamp
            self._current = Workspace(
                self.path, config, self.state_url, self.store, owns_store=False, missing_env=missing
            )
            return self._current

    def close(self) -> None:
        self.store.close()
