"""Alembic environment of the sync state database; runs on the connection handed over by ``migrate``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from cohortflow.sync.state.database import VERSION_TABLE
from cohortflow.sync.state.schema import metadata

config = context.config
connection = config.attributes.get("connection")


def _run(conn: Connection) -> None:
    context.configure(
        connection=conn,
        target_metadata=metadata,
        render_as_batch=True,
        compare_type=True,
        version_table=VERSION_TABLE,
    )
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    _run(connection)
else:
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as conn:
        _run(conn)
