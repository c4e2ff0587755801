"""Alembic environment: runs on the connection handed over by :func:`cohortflow.platform.store.engine.migrate`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from cohortflow.platform.store.schema import metadata

config = context.config
connection = config.attributes.get("connection")


def _run(conn: Connection) -> None:
    context.configure(connection=conn, target_metadata=metadata, render_as_batch=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    _run(connection)
else:
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as conn:
        _run(conn)
