"""Sync test fixtures: a state database per test, and a fault-injecting Braze on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import fresh_database
from tests.sync.support import FakeBraze, Warehouse


@pytest.fixture(autouse=True)
def _snapshot_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL state keeps membership snapshots in the user's cache; keep each test's in its own folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture
def state_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A fresh sync state database of the test's backend (SQLite file or a throwaway PostgreSQL database)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    with fresh_database("postgres", tmp_path) as url:
        yield url


@pytest.fixture
def sqlite_state(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


@pytest.fixture
def fake() -> Iterator[FakeBraze]:
    with FakeBraze() as server:
        yield server


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    wh = Warehouse(tmp_path / "warehouse.duckdb")
    wh.set_rows([])
    return wh
