"""Test helpers: throwaway databases, a real platform server process on loopback, and setup shortcuts."""

from __future__ import annotations

import os
import re
import sqlite3
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.engine import make_url

from cohortflow.clock import utcnow
from cohortflow.platform.import_keys import create_import_key
from cohortflow.platform.partners import create_partner
from cohortflow.platform.process import ServerProcess, free_port, start_server
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.store.schema import cohort_members, cohorts, partners
from cohortflow.platform.workspaces import create_workspace
from cohortflow.settings import PlatformSettings

__all__ = [
    "ServerProcess",
    "Tenant",
    "chunked",
    "free_port",
    "fresh_database",
    "make_tenant",
    "open_runtime",
    "start_server",
]

POSTGRES_ENV = "COHORTFLOW_TEST_POSTGRES_URL"
REQUIRE_POSTGRES_ENV = "COHORTFLOW_REQUIRE_POSTGRES"


def postgres_url_or_skip() -> str:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        if os.environ.get(REQUIRE_POSTGRES_ENV) == "1":
            pytest.fail(f"{POSTGRES_ENV} is not set but {REQUIRE_POSTGRES_ENV}=1")
        pytest.skip(f"{POSTGRES_ENV} not set")
    return url


@contextmanager
def fresh_database(kind: str, tmp_dir: Path) -> Iterator[str]:
    """A new, empty database of ``kind`` ("sqlite" or "postgres"); dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_dir / f'platform-{uuid.uuid4().hex[:8]}.db'}"
        return
    base = postgres_url_or_skip()
    name = f"cf_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(make_url(base).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # a missing server is a failure in CI, a skip elsewhere
        if os.environ.get(REQUIRE_POSTGRES_ENV) == "1":
            raise
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@dataclass(frozen=True)
class Tenant:
    """A workspace with a partner enabled: everything a partner needs to import cohorts."""

    workspace_id: str
    rest_api_key: str
    app_key: str
    partner: str
    partner_api_key: str
    client_secret: str

    def creds(self) -> dict[str, str]:
        return {"partner_api_key": self.partner_api_key, "client_secret": self.client_secret}


def make_tenant(runtime: PlatformRuntime, partner: str | None = None) -> Tenant:
    """A new workspace, a new partner (unique name unless given) and a data import key for it."""
    partner_name = partner or f"partner-{uuid.uuid4().hex[:10]}"
    with runtime.transaction() as conn:
        ws = create_workspace(conn, f"ws-{uuid.uuid4().hex[:6]}")
        new_partner = create_partner(conn, partner_name)
        _info, key = create_import_key(conn, ws.id, partner_name)
    return Tenant(
        workspace_id=ws.id,
        rest_api_key=ws.rest_api_key.plain,
        app_key=ws.app_key.plain,
        partner=partner_name,
        partner_api_key=new_partner.api_key.plain,
        client_secret=key.plain,
    )


def open_runtime(database_url: str) -> PlatformRuntime:
    return PlatformRuntime.open(PlatformSettings(database_url=database_url))


def add_cohort_rows(
    runtime: PlatformRuntime, tenant: Tenant, cohort_id: str, name: str, user_ids: Iterable[int]
) -> int:
    """A cohort of ``tenant``'s partner and its members, written directly (for tests whose subject is not the
    import path); returns the cohort's pk."""
    now = utcnow()
    with runtime.transaction() as conn:
        partner_id = conn.execute(select(partners.c.id).where(partners.c.name == tenant.partner)).scalar_one()
        pk = conn.execute(
            insert(cohorts)
            .values(
                workspace_id=tenant.workspace_id,
                partner_id=partner_id,
                cohort_id=cohort_id,
                name=name,
                created_at=now,
                updated_at=now,
            )
            .returning(cohorts.c.id)
        ).scalar_one()
        rows = [{"cohort_pk": pk, "user_id": uid, "added_at": now} for uid in user_ids]
        if rows:
            conn.execute(insert(cohort_members), rows)
    return int(pk)


def sqlite_structure(path: Path, version_table: str = "alembic_version") -> dict[tuple[str, str], object]:
    """Every table, index and trigger of a SQLite file as SQLite itself describes it: columns (name, type, not
    null, default, primary key), foreign keys, CHECK constraints, each index's columns or expressions, uniqueness
    and origin, and the Alembic stamp (in ``version_table``). Column positions are left out: a migration that
    adds a column puts it last, and every statement of the project names its columns."""
    db = sqlite3.connect(path)
    try:
        out: dict[tuple[str, str], object] = {}
        for kind, name, table, sql in db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"):
            if kind == "table":
                columns = sorted(r[1:] for r in db.execute(f"PRAGMA table_xinfo('{name}')"))
                foreign_keys = sorted(r[2:] for r in db.execute(f"PRAGMA foreign_key_list('{name}')"))
                checks = sorted(" ".join(c.split()) for c in re.findall(r"CHECK \((?:[^()]|\([^()]*\))*\)", sql))
                out[(kind, name)] = (columns, foreign_keys, checks)
            elif kind == "index":
                keys = [(r[2], r[3], r[4], r[5]) for r in db.execute(f"PRAGMA index_xinfo('{name}')")]
                listed = [r[2:] for r in db.execute(f"PRAGMA index_list('{table}')") if r[1] == name]
                # An expression's text is only in the CREATE INDEX statement.
                expressions = " ".join(sql.split()) if sql and any(k[0] is None and k[3] for k in keys) else None
                out[(kind, name)] = (table, keys, listed, expressions)
            else:
                out[(kind, name)] = " ".join((sql or "").split())
        out[("stamp", version_table)] = db.execute(f"SELECT version_num FROM {version_table}").fetchall()
        return out
    finally:
        db.close()


def chunked(raw: bytes) -> Iterator[bytes]:
    """``raw`` as a request body without ``Content-Length``: the lanes hand such a request on to its route."""
    yield raw
