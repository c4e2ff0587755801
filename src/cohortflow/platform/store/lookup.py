"""Reading one object of a workspace by id, the same way for every table that has ``workspace_id`` and ``id``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Row, Table, select

from cohortflow.platform.errors import NotFound


def row_in_workspace(conn: Connection, table: Table, workspace_id: str, object_id: str, what: str) -> Row[Any]:
    """The row ``object_id`` of ``table`` in ``workspace_id``; :class:`NotFound` names ``what`` otherwise.

    Another workspace's object is reported exactly like a missing one, so ids never leak across workspaces.
    """
    row = conn.execute(select(table).where(table.c.workspace_id == workspace_id, table.c.id == object_id)).first()
    if row is None:
        raise NotFound(f"{what} {object_id!r} does not exist in this workspace")
    return row
