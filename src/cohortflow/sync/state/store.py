"""Reading and writing sync state: confirmed membership, failed identifiers and the cohort name.

Every write is one transaction. The delivery loop calls :meth:`StateStore.confirm` once per acknowledged
batch, so the table is, at every instant, a subset-exact record of what the destination has acknowledged.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from sqlalchemy import Connection, Engine, and_, delete, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from cohortflow.clock import Clock, utcnow
from cohortflow.sync.state.database import make_state_engine, migrate
from cohortflow.sync.state.schema import sync_failures, sync_members, sync_states
from cohortflow.sync.state.snapshot import MembershipSnapshots, default_directory, new_token

IDENTITY_SCHEMA = pa.schema([("kind", pa.string()), ("label", pa.string()), ("value", pa.string())])
Identity = tuple[str, str, str]  # (kind, label, value)


@dataclass(frozen=True)
class SyncState:
    sync_name: str
    target: str
    cohort_name: str | None


class StateStore:
    """The state database of one workspace (``settings.sync.state_url``)."""

    def __init__(self, engine: Engine, clock: Clock = utcnow, snapshot_dir: Path | None = None) -> None:
        self.engine = engine
        self.clock = clock
        # Columnar copies of confirmed membership (a cache; None disables it). See state/snapshot.py.
        self.snapshots = MembershipSnapshots(snapshot_dir) if snapshot_dir is not None else None

    @classmethod
    def open(cls, url: str, *, run_migrations: bool = True) -> StateStore:
        engine = make_state_engine(url)
        if run_migrations:
            migrate(engine)
        return cls(engine, snapshot_dir=default_directory(url))

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    # ------------------------------------------------------------ per-sync state

    def get(self, sync_name: str) -> SyncState | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(sync_states).where(sync_states.c.sync_name == sync_name)).first()
        return SyncState(row.sync_name, row.target, row.cohort_name) if row else None

    def bind_target(self, conn: Connection, sync_name: str, target: str) -> bool:
        """Record the sync's target; if it changed, forget membership (it described another cohort).

        Returns True when confirmed membership was reset.
        """
        now = self.clock()
        row = conn.execute(select(sync_states).where(sync_states.c.sync_name == sync_name)).first()
        if row is None:
            conn.execute(
                sync_states.insert().values(sync_name=sync_name, target=target, created_at=now, updated_at=now)
            )
            return False
        if row.target == target:
            return False
        conn.execute(
            update(sync_states)
            .where(sync_states.c.sync_name == sync_name)
            .values(target=target, cohort_name=None, updated_at=now)
        )
        conn.execute(delete(sync_members).where(sync_members.c.sync_name == sync_name))
        conn.execute(delete(sync_failures).where(sync_failures.c.sync_name == sync_name))
        self._new_members_token(conn, sync_name)
        return True

    def _new_members_token(self, conn: Connection, sync_name: str) -> str:
        """Mark membership as changed, in the transaction that changes it (so older snapshots are ignored)."""
        token = new_token()
        conn.execute(update(sync_states).where(sync_states.c.sync_name == sync_name).values(members_token=token))
        return token

    def members_token(self, sync_name: str) -> str | None:
        """The token of the current membership (None: unknown, so no snapshot is trusted)."""
        with self.engine.connect() as conn:
            token = conn.execute(
                select(sync_states.c.members_token).where(sync_states.c.sync_name == sync_name)
            ).scalar_one_or_none()
        return str(token) if token is not None else None

    def load_confirmed(self, con: duckdb.DuckDBPyConnection, table: str, sync_name: str) -> str | None:
        """Copy confirmed membership into the DuckDB table ``table`` (kind, label, value); return its token.

        Token and rows are read in one transaction (SQLite: BEGIN IMMEDIATE; PostgreSQL: repeatable read),
        so the token names exactly the rows copied. Rows come through the driver's cursor in chunks that
        become Arrow columns, without a SQLAlchemy row object per member.
        """
        con.execute(f"CREATE OR REPLACE TABLE {table} (kind VARCHAR, label VARCHAR, value VARCHAR)")
        query = select(sync_members.c.kind, sync_members.c.label, sync_members.c.value).where(
            sync_members.c.sync_name == sync_name
        )
        with self.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            token = conn.execute(
                select(sync_states.c.members_token).where(sync_states.c.sync_name == sync_name)
            ).scalar_one_or_none()
            compiled = query.compile(dialect=conn.dialect)
            params: Any = (
                [compiled.params[k] for k in compiled.positiontup or ()] if compiled.positional else compiled.params
            )
            dbapi: Any = conn.connection.dbapi_connection
            # PostgreSQL: a named (server-side) cursor, so the client holds one chunk at a time.
            postgres = conn.dialect.name == "postgresql"
            cursor = dbapi.cursor(name=f"cf_members_{new_token()}") if postgres else dbapi.cursor()
            try:
                cursor.execute(str(compiled), params)
                while rows := cursor.fetchmany(50_000):
                    kinds, labels, values = zip(*rows, strict=True)
                    batch = pa.RecordBatch.from_arrays(
                        [pa.array(kinds, pa.string()), pa.array(labels, pa.string()), pa.array(values, pa.string())],
                        schema=IDENTITY_SCHEMA,
                    )
                    con.register("confirmed_in", batch)
                    con.execute(f"INSERT INTO {table} SELECT * FROM confirmed_in")
                    con.unregister("confirmed_in")
            finally:
                cursor.close()
        return str(token) if token is not None else None

    def set_cohort_name(self, conn: Connection, sync_name: str, name: str) -> None:
        conn.execute(
            update(sync_states)
            .where(sync_states.c.sync_name == sync_name)
            .values(cohort_name=name, updated_at=self.clock())
        )

    # ------------------------------------------------------------ membership

    def member_count(self, sync_name: str) -> int:
        from sqlalchemy import func

        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(sync_members).where(sync_members.c.sync_name == sync_name)
                ).scalar_one()
            )

    def _stream(self, table: Any, sync_name: str, chunk: int, extra: Any = None) -> Iterator[pa.RecordBatch]:
        query = select(table.c.kind, table.c.label, table.c.value).where(table.c.sync_name == sync_name)
        if extra is not None:
            query = query.where(extra)
        with self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, max_row_buffer=chunk).execute(query)
            for rows in result.partitions(chunk):
                yield pa.RecordBatch.from_arrays(
                    [
                        pa.array([r[0] for r in rows], pa.string()),
                        pa.array([r[1] for r in rows], pa.string()),
                        pa.array([r[2] for r in rows], pa.string()),
                    ],
                    schema=IDENTITY_SCHEMA,
                )

    def confirmed(self, sync_name: str, chunk: int = 50_000) -> pa.RecordBatchReader:
        """Confirmed members as a stream of Arrow batches (kind, label, value)."""
        return pa.RecordBatchReader.from_batches(IDENTITY_SCHEMA, self._stream(sync_members, sync_name, chunk))

    def failed(self, sync_name: str, op: str, chunk: int = 50_000) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(
            IDENTITY_SCHEMA, self._stream(sync_failures, sync_name, chunk, sync_failures.c.op == op)
        )

    def confirmed_set(self, sync_name: str) -> set[Identity]:
        """All confirmed members as Python tuples: for tests and small inspections only."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(sync_members.c.kind, sync_members.c.label, sync_members.c.value).where(
                    sync_members.c.sync_name == sync_name
                )
            )
            return {(r[0], r[1], r[2]) for r in rows}

    def _insert(self, conn: Connection, table: Any, rows: list[dict[str, Any]], update_cols: Sequence[str]) -> None:
        if not rows:
            return
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(table)
        keys = [c.name for c in table.primary_key.columns]
        if update_cols:
            stmt = stmt.on_conflict_do_update(
                index_elements=keys, set_={c: getattr(stmt.excluded, c) for c in update_cols}
            )
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=keys)
        conn.execute(stmt, rows)

    def _delete(self, conn: Connection, table: Any, sync_name: str, ids: Sequence[Identity], extra: Any = None) -> None:
        # Chunked so a statement never exceeds SQLite's bound-parameter limit.
        for start in range(0, len(ids), 250):
            chunk = ids[start : start + 250]
            cond = and_(
                table.c.sync_name == sync_name,
                tuple_(table.c.kind, table.c.label, table.c.value).in_([tuple(i) for i in chunk]),
            )
            if extra is not None:
                cond = and_(cond, extra)
            conn.execute(delete(table).where(cond))

    def confirm(
        self, conn: Connection, sync_name: str, op: str, ids: Sequence[Identity], *, clear_failures: bool = True
    ) -> str:
        """Record that the destination acknowledged ``op`` ("add" or "remove") for ``ids``; return the new token.

        ``clear_failures=False`` skips forgetting earlier failures when the caller knows there are none.
        """
        now = self.clock()
        if op == "add":
            self._insert(
                conn,
                sync_members,
                [{"sync_name": sync_name, "kind": k, "label": lb, "value": v, "confirmed_at": now} for k, lb, v in ids],
                (),
            )
        else:
            self._delete(conn, sync_members, sync_name, ids)
        if clear_failures:
            self._delete(conn, sync_failures, sync_name, ids, sync_failures.c.op == op)
        return self._new_members_token(conn, sync_name)

    def record_failures(
        self, conn: Connection, sync_name: str, op: str, ids: Sequence[Identity], reason: str, run_id: str
    ) -> None:
        now = self.clock()
        self._insert(
            conn,
            sync_failures,
            [
                {
                    "sync_name": sync_name,
                    "kind": k,
                    "label": lb,
                    "value": v,
                    "op": op,
                    "reason": reason[:1000],
                    "run_id": run_id,
                    "failed_at": now,
                }
                for k, lb, v in ids
            ],
            ("reason", "run_id", "failed_at"),
        )
