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
    case,
    delete,
    func,
    literal_column,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.sql.compiler import SQLCompiler

from cohortflow.clock import Clock, utcnow
from cohortflow.redact import redact_url
from cohortflow.sync.errors import StateUnavailable
from cohortflow.sync.state.database import make_state_engine, migrate
from cohortflow.sync.state.schema import TS, sync_batches, sync_failures, sync_members, sync_states
from cohortflow.sync.state.snapshot import MembershipSnapshots, default_directory, new_token

IDENTITY_SCHEMA = pa.schema([("kind", pa.string()), ("label", pa.string()), ("value", pa.string())])
Identity = tuple[str, str, str]  # (kind, label, value)


# Uncertainty left by more batches than this is rewritten as fewer, larger rows at plan time.
COMPACT_BATCHES_OVER = 16
CARRIED = "carried"
CARRY_CHUNK = 10_000


def state_unavailable_message(url: str, exc: BaseException) -> str:
    """One line: which state database (credentials masked) and the driver's first line."""
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"cannot use the sync state database {redact_url(url)}: {detail[0] if detail else type(exc).__name__}"


@dataclass(frozen=True)
class Rejection:
    """An identifier the destination rejected, with how many runs saw it rejected."""

    kind: str
    label: str
    value: str
    op: str
    reason: str
    runs: int
    first_failed_at: Any
    failed_at: Any


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
        """Open (and migrate) the state database; StateUnavailable when it cannot be reached."""
        try:
            engine = make_state_engine(url)
            if run_migrations:
                migrate(engine)
        except (DBAPIError, ArgumentError, OSError) as exc:
            raise StateUnavailable(state_unavailable_message(url, exc)) from exc
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

    def bind_target(self, conn: Connection, sync_name: str, target: str, run_id: str = "") -> list[str]:
        """Record the sync's target. If it changed, what was confirmed at the old target becomes *uncertain* at
        the new one (the same cohort may be behind a new URL, or the new cohort may hold some of them): the plan
        made for this run sends each its desired state, so departed members are removed wherever they are.

        Returns the ids of the uncertain batches that now carry the old membership (empty when unchanged).
        """
        now = self.clock()
        row = conn.execute(select(sync_states).where(sync_states.c.sync_name == sync_name)).first()
        if row is None:
            conn.execute(
                sync_states.insert().values(sync_name=sync_name, target=target, created_at=now, updated_at=now)
            )
            return []
        if row.target == target:
            return []
        conn.execute(
            update(sync_states)
            .where(sync_states.c.sync_name == sync_name)
            .values(target=target, cohort_name=None, updated_at=now)
        )
        carried: list[str] = []
        query = select(sync_members.c.kind, sync_members.c.label, sync_members.c.value).where(
            sync_members.c.sync_name == sync_name
        )
        for rows in conn.execution_options(stream_results=True).execute(query).partitions(CARRY_CHUNK):
            batch_id = self.open_batch(conn, sync_name, run_id, CARRIED, [(r[0], r[1], r[2]) for r in rows])
            self.fail_batch(conn, batch_id, "confirmed at the sync's previous target")
            carried.append(batch_id)
        conn.execute(delete(sync_members).where(sync_members.c.sync_name == sync_name))
        conn.execute(delete(sync_failures).where(sync_failures.c.sync_name == sync_name))
        self._new_members_token(conn, sync_name)
        return carried

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

    def failed(
        self, sync_name: str, op: str, chunk: int = 50_000, run_id: str | None = None, min_runs: int | None = None
    ) -> pa.RecordBatchReader:
        """Identifiers whose ``op`` the destination rejected (in run ``run_id`` only, when given; in at least
        ``min_runs`` runs, when given: the quarantined ones)."""
        cond = sync_failures.c.op == op
        if run_id is not None:
            cond = and_(cond, sync_failures.c.run_id == run_id)
        if min_runs is not None:
            cond = and_(cond, sync_failures.c.runs >= min_runs)
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

    # ------------------------------------------------------------ rejections (and quarantine)

    def record_rejections(
        self, conn: Connection, sync_name: str, op: str, ids: Sequence[Identity], reason: str, run_id: str
    ) -> int:
        """Record that the destination rejected ``op`` for ``ids`` in run ``run_id``; return the highest run
        count among them (a second rejection in the same run does not count twice)."""
        if not ids:
            return 0
        now = self.clock()
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(sync_failures)
        stmt = stmt.on_conflict_do_update(
            index_elements=[c.name for c in sync_failures.primary_key.columns],
            set_={
                "reason": stmt.excluded.reason,
                "run_id": stmt.excluded.run_id,
                "failed_at": stmt.excluded.failed_at,
                "runs": case(
                    (sync_failures.c.run_id == stmt.excluded.run_id, sync_failures.c.runs),
                    else_=sync_failures.c.runs + 1,
                ),
            },
        )
        rows = [
            {
                "sync_name": sync_name,
                "kind": k,
                "label": lb,
                "value": v,
                "op": op,
                "reason": reason[:1000],
                "run_id": run_id,
                "failed_at": now,
                "first_failed_at": now,
                "runs": 1,
            }
            for k, lb, v in ids
        ]
        conn.execute(stmt, rows)
        key = tuple_(sync_failures.c.kind, sync_failures.c.label, sync_failures.c.value)
        return int(
            conn.execute(
                select(func.max(sync_failures.c.runs)).where(
                    sync_failures.c.sync_name == sync_name,
                    sync_failures.c.op == op,
                    key.in_(self._identities(conn.dialect.name)),
                ),
                self._identity_params(conn.dialect.name, ids),
            ).scalar_one()
            or 0
        )

    def rejections(self, sync_name: str, limit: int | None = None) -> list[Rejection]:
        """Rejected identifiers, the most rejected first."""
        query = (
            select(sync_failures)
            .where(sync_failures.c.sync_name == sync_name)
            .order_by(sync_failures.c.runs.desc(), sync_failures.c.kind, sync_failures.c.label, sync_failures.c.value)
        )
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [
                Rejection(
                    r.kind, r.label, r.value, r.op, r.reason, int(r.runs), r.first_failed_at or r.failed_at, r.failed_at
                )
                for r in conn.execute(query)
            ]

    def forget_rejections(self, conn: Connection, sync_name: str, op: str, ids: Sequence[Identity]) -> None:
        """Drop rejections that no longer matter (their identity left the plan)."""
        self._delete(conn, sync_failures, sync_name, ids, sync_failures.c.op == op)

    # ------------------------------------------------------------ uncertain batches

    def open_batch(self, conn: Connection, sync_name: str, run_id: str, op: str, ids: Sequence[Identity]) -> str:
        """Record a batch about to be sent; it stays *uncertain* until :meth:`confirm` or :meth:`close_batch`."""
        batch_id = new_token()
        conn.execute(
            sync_batches.insert().values(
                id=batch_id,
                sync_name=sync_name,
                run_id=run_id,
                op=op,
                ids=orjson.dumps(list(ids)).decode(),
                size=len(ids),
                status="sending",
                created_at=self.clock(),
            )
        )
        return batch_id

    def close_batch(self, conn: Connection, batch_id: str) -> None:
        """The batch's outcome is known and recorded: it is no longer uncertain."""
        conn.execute(delete(sync_batches).where(sync_batches.c.id == batch_id))

    def fail_batch(self, conn: Connection, batch_id: str, reason: str) -> None:
        """No answer could be had: the batch stays uncertain, with why."""
        conn.execute(
            update(sync_batches).where(sync_batches.c.id == batch_id).values(status="failed", reason=reason[:1000])
        )

    def drop_batches(self, conn: Connection, batch_ids: Sequence[str]) -> None:
        for start in range(0, len(batch_ids), 500):
            conn.execute(delete(sync_batches).where(sync_batches.c.id.in_(batch_ids[start : start + 500])))

    def uncertain(self, sync_name: str, run_id: str | None = None) -> tuple[list[str], pa.RecordBatchReader]:
        """The batches left uncertain (of run ``run_id`` only, when given): their ids and their identities."""
        query = select(sync_batches.c.id, sync_batches.c.ids).where(sync_batches.c.sync_name == sync_name)
        if run_id is not None:
            query = query.where(sync_batches.c.run_id == run_id)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(sync_batches.c.created_at, sync_batches.c.id)).all()
        batch_ids = [r[0] for r in rows]

        def batches() -> Iterator[pa.RecordBatch]:
            for _, blob in rows:
                triples = orjson.loads(blob)
                if triples:
                    yield pa.RecordBatch.from_arrays(
                        [pa.array([t[i] for t in triples], pa.string()) for i in range(3)], schema=IDENTITY_SCHEMA
                    )

        return batch_ids, pa.RecordBatchReader.from_batches(IDENTITY_SCHEMA, batches())

    def uncertain_count(self, sync_name: str) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.coalesce(func.sum(sync_batches.c.size), 0)).where(sync_batches.c.sync_name == sync_name)
                ).scalar_one()
            )

    def compact_uncertain(self, sync_name: str, run_id: str) -> None:
        """Rewrite many uncertain batches as few (distinct identities, ``CARRY_CHUNK`` a row), in one transaction.

        Runs that keep failing each leave up to ``concurrency`` batches behind, mostly the same identities
        again; compacting keeps the uncertain set, and what reading it costs, bounded by its distinct size.
        """
        with self.transaction() as conn:
            rows = conn.execute(
                select(sync_batches.c.id, sync_batches.c.ids).where(sync_batches.c.sync_name == sync_name)
            ).all()
            if len(rows) <= COMPACT_BATCHES_OVER:
                return
            distinct = sorted({tuple(t) for _, blob in rows for t in orjson.loads(blob)})
            self.drop_batches(conn, [r[0] for r in rows])
            for start in range(0, len(distinct), CARRY_CHUNK):
                part = [cast(Identity, t) for t in distinct[start : start + CARRY_CHUNK]]
                batch_id = self.open_batch(conn, sync_name, run_id, CARRIED, part)
                self.fail_batch(conn, batch_id, "carried over from earlier runs")

    # ------------------------------------------------------------ reconcile

    def replace_members(self, conn: Connection, sync_name: str, batches: Iterator[pa.RecordBatch]) -> str:
        """Make confirmed membership exactly ``batches`` (read from the destination itself) and forget every
        uncertain batch: what the destination holds is now known. Returns the new token."""
        conn.execute(delete(sync_members).where(sync_members.c.sync_name == sync_name))
        conn.execute(delete(sync_batches).where(sync_batches.c.sync_name == sync_name))
        now = self.clock()
        for batch in batches:
            kinds, labels, values = (batch.column(i).to_pylist() for i in range(3))
            rows = [
                {"sync_name": sync_name, "kind": k, "label": lb, "value": v, "confirmed_at": now}
                for k, lb, v in zip(kinds, labels, values, strict=True)
            ]
            for start in range(0, len(rows), 10_000):
                conn.execute(sync_members.insert(), rows[start : start + 10_000])
        return self._new_members_token(conn, sync_name)
