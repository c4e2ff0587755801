"""Where PostgreSQL's autovacuum is off, the messaging worker gives the planner fresh statistics, so that a lookup
of a request's users probes the unique index instead of reading the whole workspace."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, select

from cohortflow.platform import matching
from cohortflow.platform.messaging.worker import BackgroundWorker
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.store import statistics
from cohortflow.platform.store.schema import users
from cohortflow.settings import MessagingSettings
from tests.support import fresh_database, make_tenant, open_runtime

USERS = 30_000


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[PlatformRuntime]:
    with fresh_database("postgres", tmp_path) as url:
        runtime = open_runtime(url)
        yield runtime
        runtime.close()


def _lookup_plan(conn: Connection, workspace_id: str) -> str:
    """The plan of the lookup ``/users/track`` and cohort imports make (``matching.probe``)."""
    query = matching.probe(
        conn, select(users.c.id), users.c.workspace_id == workspace_id, users.c.external_id, ["u-5", "u-77", "u-900"]
    )
    compiled = query.compile(dialect=conn.dialect)
    rows = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {compiled}", compiled.params).scalar_one()
    return json.dumps(rows)


# A backend reports its writes to the cumulative statistics within a second or so of its commit.
_CHANGED = "SELECT n_mod_since_analyze FROM pg_stat_user_tables WHERE relname = 'users'"


def _wait_for(condition: Callable[[Connection], bool], what: str, runtime: PlatformRuntime) -> None:
    deadline = time.monotonic() + 30
    while True:
        with runtime.engine.connect() as conn:
            if condition(conn):
                return
        assert time.monotonic() < deadline, f"waited 30 s for {what}"
        time.sleep(0.1)


def _last_analyze(conn: Connection) -> object:
    return conn.exec_driver_sql("SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'users'").scalar()


def test_the_worker_analyzes_tables_that_grew_when_autovacuum_is_off(pg: PlatformRuntime) -> None:
    tenant = make_tenant(pg)
    with pg.transaction() as conn:
        conn.exec_driver_sql(
            "INSERT INTO users (workspace_id, braze_id, external_id, created_at, updated_at, custom_attributes, "
            "random_bucket) "
            "SELECT %s, md5(g::text), 'u-' || g, now(), now(), '{}', mod(g, 10000) FROM generate_series(1, %s) AS g",
            (tenant.workspace_id, USERS),
        )
    with pg.engine.connect() as conn:
        autovacuum_off = conn.exec_driver_sql("SHOW autovacuum").scalar() == "off"
        before = _lookup_plan(conn, tenant.workspace_id)
    if not autovacuum_off:
        # Autovacuum does it: the worker leaves the tables alone.
        assert statistics.analyze_stale_tables(pg.engine) == []
        return
    # Never analyzed: the planner believes the workspace holds a few rows and reads all of them.
    assert "uq_users_workspace_external_id" not in before, before

    _wait_for(lambda conn: (conn.exec_driver_sql(_CHANGED).scalar() or 0) >= USERS, "the writes to be counted", pg)
    worker = BackgroundWorker(pg.engine, MessagingSettings())
    worker.start()
    try:
        # Its first pass looks: the check runs when a worker starts, then once a minute.
        _wait_for(lambda conn: _last_analyze(conn) is not None, "the worker to analyze users", pg)
    finally:
        worker.stop()
    with pg.engine.connect() as conn:
        after = _lookup_plan(conn, tenant.workspace_id)
    assert "uq_users_workspace_external_id" in after, after
    # Nothing changed since: nothing to analyze.
    assert statistics.analyze_stale_tables(pg.engine) == []
