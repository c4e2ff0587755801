"""Reading and writing sync state: confirmed membership, failed identifiers and the cohort name.

Every write is one transaction. The delivery loop calls :meth:`StateStore.confirm` once per acknowledged
batch, so the table is, at every instant, a subset-exact record of what the destination has acknowledged.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import orjson
import pyarrow as pa
from sqlalchemy import (
    Connection,
    Engine,
    Select,
    String,
    and_,
    bindparam,
    delete,
    func,
    literal_column,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.compiler import SQLCompiler

from cohortflow.clock import Clock, utcnow
from cohortflow.sync.state.database import make_state_engine, migrate
from cohortflow.sync.state.schema import TS, sync_failures, sync_members, sync_states
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
        self._compiled: dict[tuple[str, str], SQLCompiler] = {}
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

    @contextmanager
    def confirmed_batches(
        self, sync_name: str, chunk: int = 100_000
    ) -> Iterator[tuple[str | None, Iterator[pa.RecordBatch]]]:
        """Confirmed membership as Arrow batches (kind, label, value), with the token naming it.

        Token and rows are read in one transaction (SQLite: BEGIN IMMEDIATE; PostgreSQL: repeatable read),
        so the token names exactly the rows read; consume the batches inside the ``with`` block. Rows come
        through the driver's cursor in chunks that become Arrow columns, without a SQLAlchemy row object
        per member.
        """
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

            def batches() -> Iterator[pa.RecordBatch]:
                while rows := cursor.fetchmany(chunk):
                    kinds, labels, values = zip(*rows, strict=True)
                    yield pa.RecordBatch.from_arrays(
                        [pa.array(kinds, pa.string()), pa.array(labels, pa.string()), pa.array(values, pa.string())],
                        schema=IDENTITY_SCHEMA,
                    )

            try:
                cursor.execute(str(compiled), params)
                yield (str(token) if token is not None else None), batches()
            finally:
                cursor.close()

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

    def failed(self, sync_name: str, op: str, chunk: int = 50_000, run_id: str | None = None) -> pa.RecordBatchReader:
        """Identifiers whose ``op`` failed or was rejected (in run ``run_id`` only, when given)."""
        cond = sync_failures.c.op == op
        if run_id is not None:
            cond = and_(cond, sync_failures.c.run_id == run_id)
        return pa.RecordBatchReader.from_batches(IDENTITY_SCHEMA, self._stream(sync_failures, sync_name, chunk, cond))

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

    @staticmethod
    def _identities(dialect: str) -> Select[Any]:
        """A SELECT of (kind, label, value) over a batch passed as one or three parameters, not one per value.

        A batch of 1,000 identities then costs one statement whose rows the database unpacks itself (SQLite:
        a JSON array ``cf_ids`` through ``json_each``; PostgreSQL: arrays ``cf_kinds``, ``cf_labels``,
        ``cf_values`` through ``unnest``), instead of 1,000 parameter sets processed one by one in Python.
        """
        if dialect == "postgresql":
            rows = (
                func.unnest(
                    bindparam("cf_kinds", type_=postgresql.ARRAY(String)),
                    bindparam("cf_labels", type_=postgresql.ARRAY(String)),
                    bindparam("cf_values", type_=postgresql.ARRAY(String)),
                )
                .table_valued("kind", "label", "value")
                .render_derived()
            )
            return select(rows.c.kind, rows.c.label, rows.c.value)
        each = func.json_each(bindparam("cf_ids", type_=String)).table_valued("value")
        # WHERE: SQLite needs one between INSERT ... SELECT and ON CONFLICT to parse the upsert.
        return select(*[func.json_extract(each.c.value, literal_column(f"'$[{i}]'")) for i in range(3)]).where(true())

    @staticmethod
    def _identity_params(dialect: str, ids: Sequence[Identity]) -> dict[str, Any]:
        if dialect == "postgresql":
            kinds, labels, values = (list(c) for c in zip(*ids, strict=True)) if ids else ([], [], [])
            return {"cf_kinds": kinds, "cf_labels": labels, "cf_values": values}
        return {"cf_ids": orjson.dumps(list(ids)).decode()}

    def _membership_statement(self, conn: Connection, op: str) -> SQLCompiler:
        """The statement adding (or removing) a batch of members, compiled once per dialect.

        Delivery runs it once per acknowledged batch, dozens of times a second for hours; compiled once,
        it skips SQLAlchemy's per-call statement building and cache lookup (a third of a commit's CPU).
        """
        key = (conn.dialect.name, op)
        compiled = self._compiled.get(key)
        if compiled is None:
            identities = self._identities(conn.dialect.name)
            sync_name = bindparam("cf_sync", type_=String)
            stmt: Any
            if op == "add":
                rows = identities.add_columns(sync_name, bindparam("cf_now", type_=TS))
                dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
                stmt = (
                    dialect.insert(sync_members)
                    .from_select(["kind", "label", "value", "sync_name", "confirmed_at"], rows)
                    .on_conflict_do_nothing(index_elements=["sync_name", "kind", "label", "value"])
                )
            else:
                members = tuple_(sync_members.c.kind, sync_members.c.label, sync_members.c.value)
                stmt = delete(sync_members).where(sync_members.c.sync_name == sync_name, members.in_(identities))
            compiled = self._compiled[key] = cast(SQLCompiler, stmt.compile(dialect=conn.dialect))
        return compiled

    def _delete(self, conn: Connection, table: Any, sync_name: str, ids: Sequence[Identity], extra: Any = None) -> None:
        if not ids:
            return
        identities = self._identities(conn.dialect.name)
        cond = and_(table.c.sync_name == sync_name, tuple_(table.c.kind, table.c.label, table.c.value).in_(identities))
        if extra is not None:
            cond = and_(cond, extra)
        conn.execute(delete(table).where(cond), self._identity_params(conn.dialect.name, ids))

    def confirm(
        self, conn: Connection, sync_name: str, op: str, ids: Sequence[Identity], *, clear_failures: bool = True
    ) -> str:
        """Record that the destination acknowledged ``op`` ("add" or "remove") for ``ids``; return the new token.

        ``clear_failures=False`` skips forgetting earlier failures when the caller knows there are none.
        """
        if ids:
            compiled = self._membership_statement(conn, op)
            params = {**self._identity_params(conn.dialect.name, ids), "cf_sync": sync_name}
            if op == "add":
                now_processor = TS.dialect_impl(conn.dialect).bind_processor(conn.dialect)
                now = self.clock()
                params["cf_now"] = now_processor(now) if now_processor is not None else now
            args: Any = tuple(params[k] for k in compiled.positiontup or ()) if compiled.positional else params
            conn.exec_driver_sql(compiled.string, args)
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
