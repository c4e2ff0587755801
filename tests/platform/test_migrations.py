"""The Alembic migrations build exactly the schema that schema.py declares, on both databases."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.store.schema import metadata


# SQLite cannot reflect expression indexes (users by lower(email), migration 0010); PostgreSQL compares them.
@pytest.mark.filterwarnings("ignore:.*expression-based index.*")
def test_migrations_match_schema_module(runtime: PlatformRuntime) -> None:
    with runtime.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    assert differences == []
