"""The sync state's migrations build exactly the schema that ``sync/state/schema.py`` declares, and a brand-new
SQLite state database built from that module in one go is the same database."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from cohortflow.fresh_schema import head_revision
from cohortflow.sync.state.database import (
    MIGRATIONS_DIR,
    VERSION_TABLE,
    make_state_engine,
    migrate,
    upgrade_with_alembic,
)
from cohortflow.sync.state.schema import metadata
from tests.support import sqlite_structure


def test_a_new_sqlite_state_database_gets_the_schema_every_migration_builds(tmp_path: Path) -> None:
    created, migrated = tmp_path / "created.db", tmp_path / "migrated.db"
    engine = make_state_engine(f"sqlite:///{created}")
    migrate(engine)  # brand-new: the schema module, stamped
    engine.dispose()
    engine = make_state_engine(f"sqlite:///{migrated}")
    upgrade_with_alembic(engine)  # every migration in turn
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        assert compare_metadata(context, metadata) == []
    engine.dispose()

    new, replayed = sqlite_structure(created, VERSION_TABLE), sqlite_structure(migrated, VERSION_TABLE)
    assert new.keys() == replayed.keys()
    assert {k: v for k, v in new.items() if replayed[k] != v} == {}
    assert new[("stamp", VERSION_TABLE)] == [(head_revision(MIGRATIONS_DIR / "versions"),)]


def test_head_revision_is_alembics() -> None:
    script = ScriptDirectory(str(MIGRATIONS_DIR))
    assert head_revision(MIGRATIONS_DIR / "versions") == script.get_current_head()


def test_a_created_state_database_is_left_to_alembic_afterwards(tmp_path: Path) -> None:
    engine = make_state_engine(f"sqlite:///{tmp_path / 's.db'}")
    migrate(engine)
    migrate(engine)  # not empty: Alembic, with nothing to do
    with engine.connect() as conn:
        versions = conn.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").all()
    assert versions == [(head_revision(MIGRATIONS_DIR / "versions"),)]
    engine.dispose()
