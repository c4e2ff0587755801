"""Sources other than DuckDB (SQLite and PostgreSQL), the CLI's source and model commands, and the state schema."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from cohortflow.cli import cli
from cohortflow.sync import load_workspace, run_sync
from cohortflow.sync.state import StateStore
from cohortflow.sync.state.schema import metadata
from tests.support import fresh_database
from tests.sync.support import FakeBraze, write_workspace

ROWS = [("1", "a", 10), ("2", "b", 20), ("3", None, 30), ("4", "d", 40)]


def _sqlalchemy_rows(url: str) -> None:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE people (pk VARCHAR(10), ext VARCHAR(20), score INTEGER)"))
        for row in ROWS:
            conn.execute(text("INSERT INTO people VALUES (:a, :b, :c)"), {"a": row[0], "b": row[1], "c": row[2]})
    engine.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_sqlite_and_postgres_sources(tmp_path: Path, fake: FakeBraze, sqlite_state: str, kind: str) -> None:
    fake.users = {"a", "b", "d"}
    with fresh_database(kind, tmp_path) as url:
        if kind == "sqlite":
            url = f"sqlite:///{tmp_path / 'wh.sqlite'}"
            sqlite3.connect(tmp_path / "wh.sqlite").close()
            source = "  wh:\n    type: sqlite\n    path: wh.sqlite\n"
        else:
            source = "  wh:\n    type: postgres\n    url: ${WAREHOUSE_URL}\n"
        _sqlalchemy_rows(url)
        path = write_workspace(
            tmp_path,
            endpoint=fake.url,
            partner=fake.partner,
            partner_api_key=fake.partner_api_key,
            data_import_key=fake.client_secret,
            identifier={"external_id": "ext"},
            model={"source": "wh", "sql": "SELECT pk, ext, score FROM people WHERE score > 15", "primary_key": "pk"},
        )
        path.write_text(path.read_text().replace("sources:\n", "sources:\n" + source, 1))
        env = {"WAREHOUSE_URL": url}
        runner = CliRunner(env=env)
        base = ["sync", "-f", str(path), "--state-url", sqlite_state]
        tested = runner.invoke(cli, [*base, "sources", "test", "wh"])
        assert tested.exit_code == 0 and "answers" in tested.stdout, tested.output
        preview = runner.invoke(cli, [*base, "models", "preview", "customers", "--json", "--limit", "2"])
        assert preview.exit_code == 0, preview.output
        assert json.loads(preview.stdout) == [
            {"pk": "2", "ext": "b", "score": "20"},
            {"pk": "3", "ext": None, "score": "30"},
        ]
        with load_workspace(path, state_url=sqlite_state, env=env) as ws:
            result = run_sync(ws, "vip")
        assert result.status == "succeeded"
        assert result.counts["rows"] == 3 and result.counts["rejected"] == {"null_identifier": 1}
        assert fake.members["cohortflow-vip"] == {"b", "d"}
        if kind == "postgres":
            assert "secret" not in tested.stdout


def test_state_migrations_match_the_schema(state_url: str) -> None:
    store = StateStore.open(state_url)
    try:
        with store.engine.connect() as conn:
            diff = [
                d
                for d in compare_metadata(MigrationContext.configure(conn), metadata)
                if not (d[0] == "remove_table" and d[1].name == "sync_alembic_version")  # alembic's own table
            ]
        assert diff == []
        StateStore.open(state_url).close()  # migrating again is a no-op
    finally:
        store.close()


def test_duckdb_sql_model_reads_schema_qualified_tables(tmp_path: Path, fake: FakeBraze, sqlite_state: str) -> None:
    """A DuckDB source's SQL resolves ``schema.table`` as it would in the warehouse (regression: ATTACH)."""
    import duckdb

    fake.users = {"a", "b"}
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        con.execute("CREATE SCHEMA analytics")
        con.execute(
            "CREATE TABLE analytics.people AS SELECT * FROM (VALUES ('1', 'a'), ('2', 'b'), ('3', 'c')) t(pk, ext)"
        )
    path = write_workspace(
        tmp_path,
        endpoint=fake.url,
        partner=fake.partner,
        partner_api_key=fake.partner_api_key,
        data_import_key=fake.client_secret,
        identifier={"external_id": "ext"},
        model={
            "source": "warehouse",
            "sql": "SELECT pk, ext FROM analytics.people WHERE pk < '3'",
            "primary_key": "pk",
        },
    )
    with load_workspace(path, state_url=sqlite_state) as ws:
        result = run_sync(ws, "vip")
    assert result.status == "succeeded", result.message
    assert result.counts["rows"] == 2
    assert fake.members["cohortflow-vip"] == {"a", "b"}
