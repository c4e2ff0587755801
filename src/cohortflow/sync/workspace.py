"""A loaded workspace: the validated ``cohortflow.yaml`` plus the state database it records runs in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cohortflow.settings import get_settings
from cohortflow.sync.audiences.compiler import compile_audience
from cohortflow.sync.config import DestinationConfig, ModelConfig, SyncConfig, WorkspaceConfig, load_workspace_config
from cohortflow.sync.errors import UnknownObject
from cohortflow.sync.sources import Source
from cohortflow.sync.state import StateStore


@dataclass
class Workspace:
    path: Path
    config: WorkspaceConfig
    state_url: str
    _store: StateStore | None = field(default=None, repr=False)

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
        return self.config.destinations[name]

    def source(self, name: str) -> Source:
        self._get("source", self.config.sources, name)
        return Source(name, self.config.sources[name], self.base_dir)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_workspace(
    path: Path | str | None = None, *, state_url: str | None = None, env: Mapping[str, str] | None = None
) -> Workspace:
    """Read and validate a workspace file (default: ``settings.sync.config_path``).

    ``state_url`` defaults to ``settings.sync.state_url`` (``COHORTFLOW_SYNC_STATE_URL``).
    """
    settings = get_settings().sync
    resolved = Path(path) if path is not None else settings.config_path
    config = load_workspace_config(resolved, env)
    return Workspace(path=resolved.resolve(), config=config, state_url=state_url or settings.state_url)
