"""The Alembic migrations build exactly the schema that schema.py declares, on both databases."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.store.engine import alembic_config, head_revision, make_engine, migrate, upgrade_with_alembic
from cohortflow.platform.store.schema import metadata

# SQLite cannot reflect expression indexes (users by lower(email), migration 0010); PostgreSQL compares them, and
# on SQLite the structure comparison below reads their CREATE INDEX statements.
pytestmark = pytest.mark.filterwarnings("ignore:.*expression-based index.*")


def test_migrations_match_schema_module(runtime: PlatformRuntime) -> None:
    with runtime.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    assert differences == []


# --- a brand-new SQLite database: the schema module in one go, the same as every migration in turn ------------


def _sqlite_structure(path: Path) -> dict[tuple[str, str], object]:
    """Every table, index and trigger of a SQLite file as SQLite itself describes it: columns (name, type, not
    null, default, primary key), foreign keys, CHECK constraints, each index's columns or expressions, uniqueness
    and origin, and the Alembic stamp. Column positions are left out: a migration that adds a column puts it last,
    and every statement of the platform names its columns."""
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
        out[("stamp", "alembic_version")] = db.execute("SELECT version_num FROM alembic_version").fetchall()
        return out
    finally:
        db.close()


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

    new, replayed = _sqlite_structure(created), _sqlite_structure(migrated)
    assert new.keys() == replayed.keys()
    assert {k: v for k, v in new.items() if replayed[k] != v} == {}
    assert new[("stamp", "alembic_version")] == [(head_revision(),)]


def test_head_revision_is_alembics() -> None:
    from alembic.script import ScriptDirectory

    cfg = alembic_config(make_engine("sqlite://"))
    assert head_revision() == ScriptDirectory.from_config(cfg).get_current_head()


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
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").all() == [(head_revision(),)]
    engine.dispose()
