"""A columnar copy of a sync's confirmed membership, so planning does not read millions of rows one by one.

``sync_members`` in the state database stays the only truth. Every transaction that changes a sync's
membership also gives it a new random ``members_token`` (``sync_states``); a snapshot is a Parquet file
stamped with the token of the membership it copies, and the planner uses it only when that token is still
the current one. So a snapshot can be stale (a run killed after committing batches, a partial run, another
machine's cache) but never wrong: a stale one is ignored, membership is read from the database, and a fresh
snapshot is written from what was read. Files are replaced atomically (write, then rename), so a ``kill -9``
while writing leaves the old file, whose token no longer matches.

Where the files live: next to a SQLite state database (``state.db.members/``), else in the user's cache
directory under a name derived from the state URL. It is a cache: deleting it costs one slow plan.
"""

from __future__ import annotations

import hashlib
import os
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy.engine import make_url

TOKEN_KEY = "cohortflow.members_token"


def new_token() -> str:
    return uuid.uuid4().hex


def default_directory(state_url: str) -> Path | None:
    """Where snapshots of the state database at ``state_url`` are kept (None: no snapshots)."""
    url = make_url(state_url)
    if url.drivername.startswith("sqlite"):
        database = url.database or ""
        if database in ("", ":memory:") or database.startswith("file:"):
            return None
        path = Path(database)
        return path.with_name(path.name + ".members")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha256(url.render_as_string(hide_password=True).encode()).hexdigest()[:16]
    return cache / "cohortflow" / "sync-members" / digest


class MembershipSnapshots:
    """Parquet files ``(kind, label, value)``, one per sync, stamped with the membership token they copy."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def writable(self) -> bool:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError:
            return False
        return os.access(self.directory, os.W_OK)

    def _path(self, sync_name: str) -> Path:
        return self.directory / f"{urllib.parse.quote(sync_name, safe='')}.parquet"

    def find(self, sync_name: str, token: str | None) -> Path | None:
        """The snapshot of ``sync_name`` if it copies the membership identified by ``token``."""
        if token is None:
            return None
        path = self._path(sync_name)
        try:
            metadata = pq.read_schema(path).metadata or {}
        except (OSError, ValueError):  # missing, or a torn file from an older writer
            return None
        return path if metadata.get(TOKEN_KEY.encode()) == token.encode() else None

    def write(self, con: duckdb.DuckDBPyConnection, select_sql: str, sync_name: str, token: str | None) -> None:
        """Write the rows of ``select_sql`` (kind, label, value) as the snapshot for ``token``."""
        if token is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(sync_name)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            con.execute(
                f"COPY ({select_sql}) TO '{_sql_path(tmp)}' (FORMAT parquet, KV_METADATA {{'{TOKEN_KEY}': '{token}'}})"
            )
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def write_batches(
        self, batches: Iterator[pa.RecordBatch], schema: pa.Schema, sync_name: str, token: str | None
    ) -> Path | None:
        """Stream ``batches`` into the snapshot for ``token``; return its path (None without a token)."""
        if token is None:
            return None
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(sync_name)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with pq.ParquetWriter(tmp, schema.with_metadata({TOKEN_KEY: token})) as writer:
                for batch in batches:
                    writer.write_batch(batch)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    def forget(self, sync_name: str) -> None:
        self._path(sync_name).unlink(missing_ok=True)


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")
