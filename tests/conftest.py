"""Shared fixtures. ``backend`` runs a test once on SQLite and once on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cohortflow.platform.runtime import PlatformRuntime
from tests.support import ServerProcess, Tenant, fresh_database, make_tenant, open_runtime, start_server


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture(scope="session")
def database_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with fresh_database(backend, tmp_path_factory.mktemp(f"db-{backend}")) as url:
        yield url


@pytest.fixture(scope="session")
def runtime(database_url: str) -> Iterator[PlatformRuntime]:
    rt = open_runtime(database_url)
    yield rt
    rt.close()


@pytest.fixture(scope="session")
def server(database_url: str, runtime: PlatformRuntime) -> Iterator[ServerProcess]:
    proc = start_server(database_url)
    yield proc
    proc.stop()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        yield c


@pytest.fixture
def tenant(runtime: PlatformRuntime) -> Tenant:
    return make_tenant(runtime)


@pytest.fixture
def tmp_dir(tmp_path: Path) -> Path:
    return tmp_path


# In CI (COHORTFLOW_REQUIRE_POSTGRES=1) a PostgreSQL test that skipped is a failure: it would hide a missing server.
_skipped_postgres: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and "postgres" in report.nodeid.lower():
        _skipped_postgres.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    import os

    from tests.support import REQUIRE_POSTGRES_ENV

    if os.environ.get(REQUIRE_POSTGRES_ENV) == "1" and _skipped_postgres:
        print(f"\n{len(_skipped_postgres)} PostgreSQL test(s) skipped with {REQUIRE_POSTGRES_ENV}=1:")
        for nodeid in _skipped_postgres[:20]:
            print(f"  {nodeid}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
