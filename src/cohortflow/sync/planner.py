"""The plan: which identities to add and remove, computed in DuckDB against the last confirmed state.

The model is read by an embedded DuckDB database (a DuckDB warehouse in place, other sources as streamed
Arrow batches); confirmed membership comes from its Parquet snapshot when that is current (see
``state/snapshot.py``), else from the state database. The whole diff is one full outer join, the same
work as DuckDB joining the two identifier sets. DuckDB spills to a temporary directory when the sets
outgrow memory, and delivery reads the results back one batch at a time, so no step holds one Python
object per row of the model.

- adds: identities in the model but not confirmed (every model identity with ``full_resync``);
- removes: confirmed identities no longer in the model (none when the sync keeps departed rows);
- retries: the part of adds/removes that failed in an earlier run.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa
import structlog

from cohortflow.sync.config import ModelConfig, SyncConfig
from cohortflow.sync.errors import SourceUnavailable
from cohortflow.sync.identifiers import describe, fixed_kind_and_label, reason_sql, sql_string
from cohortflow.sync.models import RejectedRows, materialize, rejected_rows
from cohortflow.sync.sources import Source
from cohortflow.sync.state import IDENTITY_SCHEMA, Identity, StateStore

log = structlog.get_logger("cohortflow.sync")

ADD = "add"
REMOVE = "remove"


@dataclass
class PlanCounts:
    rows: int = 0
    valid_rows: int = 0
    desired: int = 0
    confirmed: int = 0
    adds: int = 0
    removes: int = 0
    retried_adds: int = 0
    retried_removes: int = 0
    rejected: list[RejectedRows] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "valid_rows": self.valid_rows,
            "desired": self.desired,
            "confirmed": self.confirmed,
            "adds": self.adds,
            "removes": self.removes,
            "retried_adds": self.retried_adds,
            "retried_removes": self.retried_removes,
            "rejected": {r.reason: r.count for r in self.rejected},
        }


class Plan:
    """A computed plan, backed by a private DuckDB database; close it when done."""

    def __init__(self, con: duckdb.DuckDBPyConnection, tmp_dir: str, counts: PlanCounts) -> None:
        self._con = con
        self._tmp_dir = tmp_dir
        self.counts = counts

    def batches(self, op: str, size: int) -> Iterator[list[Identity]]:
        """The identities of ``op`` in batches of at most ``size``; one batch of Python tuples at a time."""
        table = "adds" if op == ADD else "removes"
        # A cursor of its own: delivery may query the plan again while this iterator is open.
        cursor = self._con.cursor()
        try:
            reader = cursor.sql(f"SELECT kind, label, value FROM {table} ORDER BY kind, label, value").to_arrow_reader(
                size
            )
            # DuckDB's batch size is a hint (its batches need not align with ``size``); the wire limit is not.
            # Re-cut the stream into full batches, so no request goes out half empty.
            pending: list[Identity] = []
            for whole in reader:
                kinds, labels, values = (whole.column(i).to_pylist() for i in range(3))
                pending.extend(zip(kinds, labels, values, strict=True))
                while len(pending) >= size:
                    yield pending[:size]
                    del pending[:size]
            if pending:
                yield pending
        finally:
            cursor.close()

    def sample(self, op: str, n: int = 5) -> list[str]:
        table = "adds" if op == ADD else "removes"
        rows = self._con.execute(f"SELECT kind, label, value FROM {table} ORDER BY kind, label, value LIMIT {int(n)}")
        return [describe((k, lb, v)) for k, lb, v in rows.fetchall()]

    def save_confirmed(self, store: StateStore, sync_name: str, run_id: str) -> None:
        """Snapshot the membership that delivering this plan left, once run ``run_id`` has finished.

        Valid when every batch was attempted (and with the sync's lock held, so nobody else changed
        membership meanwhile): the membership is the planned-against one minus the acknowledged removes
        plus the acknowledged adds, where acknowledged means planned and not among the identifiers this
        run recorded as failed or rejected. So runs that end partial because the destination rejected a
        few identifiers, run after run, keep planning from a snapshot too.
        """
        if store.snapshots is None:
            return
        _load_identities(self._con, "run_failed_add", store.failed(sync_name, ADD, run_id=run_id), replace=True)
        _load_identities(self._con, "run_failed_remove", store.failed(sync_name, REMOVE, run_id=run_id), replace=True)
        acked_adds = "SELECT kind, label, value FROM adds ANTI JOIN run_failed_add USING (kind, label, value)"
        acked_removes = "SELECT kind, label, value FROM removes ANTI JOIN run_failed_remove USING (kind, label, value)"
        store.snapshots.write(
            self._con,
            f"SELECT kind, label, value FROM confirmed ANTI JOIN ({acked_removes}) USING (kind, label, value) "
            f"ANTI JOIN ({acked_adds}) USING (kind, label, value) UNION ALL {acked_adds}",
            sync_name,
            store.members_token(sync_name),
        )

    def close(self) -> None:
        self._con.close()
        shutil.rmtree(self._tmp_dir, ignore_errors=True)

    def __enter__(self) -> Plan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _load_identities(con: duckdb.DuckDBPyConnection, table: str, reader: Any, replace: bool = False) -> None:
    con.register("identities_in", IDENTITY_SCHEMA.empty_table())
    con.execute(f"CREATE {'OR REPLACE ' if replace else ''}TABLE {table} AS SELECT * FROM identities_in")
    con.unregister("identities_in")
    for batch in reader:
        con.register("identities_in", batch)
        con.execute(f"INSERT INTO {table} SELECT * FROM identities_in")
        con.unregister("identities_in")


def _confirmed(con: duckdb.DuckDBPyConnection, store: StateStore, sync_name: str, stale: bool) -> None:
    """Define ``confirmed``: the sync's snapshot when it is current, else membership read from the database
    (streamed into a new snapshot when snapshots are kept)."""
    if stale:
        con.execute("CREATE TABLE confirmed (kind VARCHAR, label VARCHAR, value VARCHAR)")
        return
    snapshots = store.snapshots
    path = snapshots.find(sync_name, store.members_token(sync_name)) if snapshots is not None else None
    if path is None:
        writable = snapshots is not None and snapshots.writable()
        if snapshots is not None and not writable:
            log.warning("membership snapshots disabled: directory not writable", directory=str(snapshots.directory))
        with store.confirmed_batches(sync_name) as (token, batches):
            if snapshots is not None and writable and token is not None:
                path = snapshots.write_batches(batches, IDENTITY_SCHEMA, sync_name, token)
            else:
                reader = pa.RecordBatchReader.from_batches(IDENTITY_SCHEMA, batches)
                con.register("confirmed_in", reader)
                con.execute("CREATE TABLE confirmed AS SELECT * FROM confirmed_in")
                con.unregister("confirmed_in")
    if path is not None:
        quoted = str(path).replace("'", "''")
        con.execute(f"CREATE VIEW confirmed AS SELECT kind, label, value FROM read_parquet('{quoted}')")


def build_plan(
    *,
    sync_name: str,
    sync: SyncConfig,
    model: ModelConfig,
    source: Source,
    store: StateStore,
    full_resync: bool = False,
    confirmed_is_stale: bool = False,
    unsupported_kinds: Sequence[str] = (),
    on_rows: Callable[[int], None] | None = None,
    on_planning: Callable[[], None] | None = None,
    memory_limit: str | None = None,
) -> Plan:
    """Query the model and diff it against confirmed state. Raises ModelError / SourceUnavailable."""
    tmp_dir = tempfile.mkdtemp(prefix="cohortflow-plan-")
    config: dict[str, Any] = {"temp_directory": tmp_dir, "preserve_insertion_order": False}
    if memory_limit:
        config["memory_limit"] = memory_limit
    con = duckdb.connect(":memory:", config=config)
    try:
        model_input = materialize(
            con, source, model, sync.identifier, unsupported_kinds=unsupported_kinds, on_rows=on_rows
        )
        if on_planning is not None:
            on_planning()
        _confirmed(con, store, sync_name, confirmed_is_stale)
        _load_identities(con, "failed_add", store.failed(sync_name, ADD))
        _load_identities(con, "failed_remove", store.failed(sync_name, REMOVE))
        # One full outer join does the whole diff. A model row matching a confirmed identity is valid (that
        # identity passed every rule when it was planned), so the value-level rules run only on the rows
        # left unmatched, a few percent of the model in a steady state, which the diff keeps with their
        # reason. Rows that cannot be valid have a null key, so they never match.
        reason = reason_sql(sync.identifier, model_input.schema, "m", unsupported_kinds)
        columns = (
            f"m.in_model, m.pk, CASE WHEN m.in_model THEN {reason} END AS reason, "
            "m.kind AS m_kind, m.label AS m_label, m.value AS m_value, "
            "c.kind AS c_kind, c.label AS c_label, c.value AS c_value"
        )
        fixed = fixed_kind_and_label(sync.identifier)
        if fixed is None:
            join = "confirmed AS c ON m.kind = c.kind AND m.label = c.label AND m.key = c.value"
            others = ""
        else:
            # One identifier kind: join on the value alone (as cheap as joining two columns of strings);
            # confirmed identities of any other kind (an earlier identifier choice) have all departed.
            same = f"kind = {sql_string(fixed[0])} AND label = {sql_string(fixed[1])}"
            join = f"(SELECT * FROM confirmed WHERE {same}) AS c ON m.key = c.value"
            others = (
                "UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, NULL, kind, label, value "
                f"FROM confirmed WHERE NOT ({same})"
            )
        try:
            con.execute(
                f"""
                CREATE TABLE diff AS
                SELECT {columns}
                FROM (SELECT TRUE AS in_model, * FROM model_identities) AS m FULL OUTER JOIN {join}
                WHERE m.in_model IS NULL OR c.value IS NULL
                {others}
                """
            )
        except duckdb.Error as exc:
            raise SourceUnavailable(f"reading the model failed: {exc}") from exc
        con.execute(
            "CREATE TABLE new_identities AS SELECT DISTINCT m_kind AS kind, m_label AS label, m_value AS value "
            "FROM diff WHERE in_model AND reason IS NULL"
        )
        if full_resync:
            con.execute("CREATE TABLE adds AS SELECT DISTINCT kind, label, value FROM model_rows WHERE reason IS NULL")
        else:
            con.execute("CREATE TABLE adds AS SELECT * FROM new_identities")
        removes_filter = "" if sync.on_row_removed == "remove" else " AND FALSE"
        con.execute(
            "CREATE TABLE removes AS SELECT c_kind AS kind, c_label AS label, c_value AS value "
            f"FROM diff WHERE in_model IS NULL{removes_filter}"
        )

        def scalar(sql: str) -> int:
            row = con.execute(sql).fetchall()[0]
            assert row is not None
            return int(row[0])

        rejected = rejected_rows(con, "diff")
        confirmed = scalar("SELECT count(*) FROM confirmed")
        departed = scalar("SELECT count(*) FROM diff WHERE in_model IS NULL")
        counts = PlanCounts(
            rows=model_input.rows,
            valid_rows=model_input.rows - sum(r.count for r in rejected),
            # Every confirmed identity still in the model matched at least one valid row.
            desired=confirmed - departed + scalar("SELECT count(*) FROM new_identities"),
            confirmed=confirmed,
            adds=scalar("SELECT count(*) FROM adds"),
            removes=scalar("SELECT count(*) FROM removes"),
            retried_adds=scalar("SELECT count(*) FROM adds SEMI JOIN failed_add USING (kind, label, value)"),
            retried_removes=scalar("SELECT count(*) FROM removes SEMI JOIN failed_remove USING (kind, label, value)"),
            rejected=rejected,
        )
        return Plan(con, tmp_dir, counts)
    except BaseException:
        con.close()
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
