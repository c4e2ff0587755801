"""A brand-new SQLite database built from its schema module in one go, stamped as Alembic would leave it.

Both databases (the platform's and the sync state) are created and upgraded by Alembic. On a new SQLite file,
replaying the whole history cost about 0.1 s of CPU each, plus 0.1 s to import Alembic, at every start of the demo
and of most tests; ``create_all`` and a stamp at the newest revision give the same schema (each side's tests
compare the two object by object, ``tests/support.py:sqlite_structure``), and Alembic takes over from there.
"""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import Column, Engine, MetaData, PrimaryKeyConstraint, String, Table

_REVISION_LINE = re.compile(r"""^(down_)?revision\s*=\s*["']([^"']+)["']""", re.MULTILINE)


def head_revision(versions: Path) -> str | None:
    """The newest revision of the migrations in the folder ``versions``, read from their files without importing
    Alembic; None when the history is not one straight line (a merge), which is then left to Alembic."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in versions.glob("*.py"):
        found = {bool(down): revision for down, revision in _REVISION_LINE.findall(path.read_text())}
        if False not in found:
            return None
        revisions.add(found[False])
        if True in found:
            parents.add(found[True])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def create_if_empty(engine: Engine, metadata: MetaData, versions: Path, version_table: str) -> bool:
    """On SQLite, create ``metadata``'s tables and stamp them with the newest revision when the database has no
    table at all; False, with nothing done, on another database, on a database with tables, or when the newest
    revision is unclear (the caller then runs Alembic).

    The check and the creation share one transaction that the engines of this project begin with ``BEGIN
    IMMEDIATE``: of two processes starting on the same new file, one creates, the other then finds the tables.
    """
    if engine.dialect.name != "sqlite":
        return False
    head = head_revision(versions)
    if head is None:
        return False
    # Alembic's own version table, as its MigrationContext declares it, so that later upgrades find the stamp.
    stamp = Table(
        version_table,
        MetaData(),
        Column("version_num", String(32), nullable=False),
        PrimaryKeyConstraint("version_num", name=f"{version_table}_pkc"),
    )
    with engine.begin() as conn:
        if conn.exec_driver_sql("SELECT 1 FROM sqlite_master LIMIT 1").first() is not None:
            return False
        metadata.create_all(conn)
        stamp.create(conn)
        conn.execute(stamp.insert().values(version_num=head))
    return True
