"""The Alembic migrations build exactly the schema that schema.py declares, on both databases."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from cohortflow.fresh_schema import head_revision
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.store.engine import MIGRATIONS_DIR, alembic_config, make_engine, migrate, upgrade_with_alembic
from cohortflow.platform.store.schema import metadata
from tests.support import fresh_database, open_runtime, sqlite_structure

# SQLite cannot reflect expression indexes (users by lower(email), migration 0010); PostgreSQL compares them, and
# on SQLite the structure comparison below reads their CREATE INDEX statements.
pytestmark = pytest.mark.filterwarnings("ignore:.*expression-based index.*")


def test_migrations_match_schema_module(runtime: PlatformRuntime) -> None:
    with runtime.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    assert differences == []


def test_migrations_give_postgres_tables_the_storage_parameters_of_the_schema_module(tmp_path: Path) -> None:
    # compare_metadata does not look at WITH (fillfactor = ...), which decides whether updates are HOT.
    declared = {
        name: sorted(f"{k}={v}" for k, v in (table.dialect_options["postgresql"]["with"] or {}).items())
        for name, table in metadata.tables.items()
    }
    with fresh_database("postgres", tmp_path) as url:
        runtime = open_runtime(url)  # every migration in turn
        try:
            with runtime.engine.connect() as conn:
                rows = conn.exec_driver_sql(
                    "SELECT relname, coalesce(reloptions, '{}') FROM pg_class "
                    "WHERE relkind = 'r' AND relname = ANY(%s)",
                    (list(declared),),
                ).all()
        finally:
            runtime.close()
    assert {name: sorted(options) for name, options in rows} == declared
    assert declared["campaign_deliveries"] == ["fillfactor=50"]


# --- a brand-new SQLite database: the schema module in one go, the same as every migration in turn ------------


def test_a_new_sqlite_database_gets_the_schema_every_migration_builds(tmp_path: Path) -> None:
    created, migrated = tmp_path / "created.db", tmp_path / "migrated.db"
    engine = make_engine(f"sqlite:///{created}")
    migrate(engine)  # brand-new: the schema module, stamped
    engine.dispose()
    engine = make_engine(f"sqlite:///{migrated}")
    upgrade_with_alembic(engine)  # every migration in turn
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    engine.dispose()

    new, replayed = sqlite_structure(created), sqlite_structure(migrated)
    assert new.keys() == replayed.keys()
    assert {k: v for k, v in new.items() if replayed[k] != v} == {}
    assert new[("stamp", "alembic_version")] == [(head_revision(MIGRATIONS_DIR / "versions"),)]


def test_head_revision_is_alembics() -> None:
    from alembic.script import ScriptDirectory

    cfg = alembic_config(make_engine("sqlite://"))
    assert head_revision(MIGRATIONS_DIR / "versions") == ScriptDirectory.from_config(cfg).get_current_head()


def test_a_created_database_upgrades_and_downgrades_like_a_migrated_one(tmp_path: Path) -> None:
    """Alembic takes over a created database: the last migration goes down and up again, and a database that
    already has tables is never created over."""
    engine = make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    migrate(engine)
    cfg = alembic_config(engine)
    with engine.connect() as conn:
        conn.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "-1")
        command.upgrade(cfg, "head")
        conn.commit()
    migrate(engine)  # not empty: Alembic, with nothing to do
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").all() == [
            (head_revision(MIGRATIONS_DIR / "versions"),)
        ]
    engine.dispose()
