"""The plan: which identities to add and remove, computed in DuckDB against the last confirmed state.

The model is read by an embedded DuckDB database (a DuckDB warehouse in place, other sources as streamed
Arrow batches); confirmed membership comes from its Parquet snapshot when that is current (see
``state/snapshot.py``), else from the state database. The whole diff is one full outer join, the same
work as DuckDB joining the two identifier sets. DuckDB spills to a temporary directory when the sets
outgrow memory, and delivery reads the results back one batch at a time, so no step holds one Python
object per row of the model.

- adds: identities in the model but not confirmed (every model identity with ``full_resync``);
- removes: confirmed identities no longer in the model (none when the sync keeps departed rows);
- uncertain identities (in a batch whose answer was never recorded: a crash, a timeout, retries run out)
  count as unknown: each is sent its current desired state, an add when it is in the model, else a remove,
  whatever the warehouse did meanwhile and whatever ``sync_members`` says;
- quarantined identities (rejected by the destination in ``quarantine_after`` runs) are left out;
- retries: the part of adds/removes that was uncertain or rejected before.

With ``actual_members`` (reconcile), confirmed membership is replaced by what the destination reports it
holds, so the same diff repairs drift in both directions.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
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


# Arrow schema of a destination's membership export, one row per identity of each member (reconcile).
MEMBER_IDENTITY_SCHEMA = pa.schema(
    [("member", pa.int64()), ("kind", pa.string()), ("label", pa.string()), ("value", pa.string())]
)


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
    uncertain: int = 0
    quarantined: int = 0
    rejected: list[RejectedRows] = field(default_factory=list)
    reconcile: dict[str, int] | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rows": self.rows,
            "valid_rows": self.valid_rows,
            "desired": self.desired,
            "confirmed": self.confirmed,
            "adds": self.adds,
            "removes": self.removes,
            "retried_adds": self.retried_adds,
            "retried_removes": self.retried_removes,
            "uncertain": self.uncertain,
            "quarantined": self.quarantined,
            "rejected": {r.reason: r.count for r in self.rejected},
        }
        if self.reconcile is not None:
            out["reconcile"] = dict(self.reconcile)
        return out


class Plan:
    """A computed plan, backed by a private DuckDB database; close it when done."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        tmp_dir: str,
        counts: PlanCounts,
        uncertain_batch_ids: Sequence[str] = (),
        has_rejections: bool = False,
    ) -> None:
        self._con = con
        self._tmp_dir = tmp_dir
        self.counts = counts
        # The uncertain batches this plan resolves: once every planned batch has its own record, they are
        # redundant and can go (see engine.run_sync).
        self.uncertain_batch_ids = list(uncertain_batch_ids)
        self.has_rejections = has_rejections

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

    def stale_rejections(self, op: str) -> list[Identity]:
        """Rejected identities that this plan no longer sends (they left the model, or were removed since)."""
        table = "adds_all" if op == ADD else "removes_all"
        failed = "failed_add" if op == ADD else "failed_remove"
        sql = f"SELECT kind, label, value FROM {failed} ANTI JOIN {table} USING (kind, label, value)"
        return [(k, lb, v) for k, lb, v in self._con.execute(sql).fetchall()]

    def members_truth(self) -> Iterator[pa.RecordBatch]:
        """Reconcile: the confirmed membership read from the destination, as Arrow batches."""
        cursor = self._con.cursor()
        try:
            yield from cursor.sql("SELECT kind, label, value FROM confirmed").to_arrow_reader(100_000)
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
        _load_identities(self._con, "run_uncertain", store.uncertain(sync_name, run_id=run_id)[1], replace=True)
        unacked = "(SELECT * FROM {} UNION ALL SELECT * FROM run_uncertain)"
        acked_adds = (
            "SELECT kind, label, value FROM adds ANTI JOIN "
            f"{unacked.format('run_failed_add')} USING (kind, label, value)"
        )
        acked_removes = (
            "SELECT kind, label, value FROM removes ANTI JOIN "
            f"{unacked.format('run_failed_remove')} USING (kind, label, value)"
        )
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


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    row = con.execute(sql).fetchall()[0]
    assert row is not None
    return int(row[0])


def _load_identities(
    con: duckdb.DuckDBPyConnection, table: str, reader: Any, replace: bool = False, append: bool = False
) -> None:
    if not append:
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


def _actual_confirmed(con: duckdb.DuckDBPyConnection, members: Iterator[pa.RecordBatch]) -> dict[str, int]:
    """Define ``confirmed`` as the truth read from the destination (reconcile), in the sync's own terms.

    A member is wanted when any of its identities is a valid identity of the model; for a wanted member, the
    confirmed identities are those the model names it by. An unwanted member is confirmed under one of its
    identities (external id, else an alias, else a device id), which the diff then removes.
    """
    con.register("members_in", pa.RecordBatchReader.from_batches(MEMBER_IDENTITY_SCHEMA, members))
    con.execute("CREATE TABLE member_ids AS SELECT * FROM members_in")
    con.unregister("members_in")
    con.execute(
        "CREATE TABLE member_ids_in_model AS SELECT i.member, i.kind, i.label, i.value FROM member_ids AS i "
        "SEMI JOIN (SELECT kind, label, key FROM model_identities WHERE key IS NOT NULL) AS m "
        "ON i.kind = m.kind AND i.label = m.label AND i.value = m.key"
    )
    con.execute(
        "CREATE TABLE unwanted AS SELECT member, arg_min([kind, label, value], "
        "CASE kind WHEN 'e' THEN 0 WHEN 'a' THEN 1 ELSE 2 END) AS id FROM member_ids "
        "WHERE member NOT IN (SELECT member FROM member_ids_in_model) GROUP BY member"
    )
    con.execute(
        "CREATE TABLE confirmed AS SELECT DISTINCT kind, label, value FROM member_ids_in_model "
        "UNION SELECT id[1], id[2], id[3] FROM unwanted"
    )

    scalar = partial(_scalar, con)

    return {
        "members": scalar("SELECT count(DISTINCT member) FROM member_ids"),
        "unwanted_members": scalar("SELECT count(*) FROM unwanted"),
    }


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
    quarantine_after: int | None = None,
    actual_members: Iterator[pa.RecordBatch] | None = None,
) -> Plan:
    """Query the model and diff it against confirmed state. Raises ModelError / SourceUnavailable.

    ``quarantine_after``: leave out identities rejected in that many runs (None: send them again).
    ``actual_members``: reconcile against this membership instead of the confirmed one.
    """
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
        reconcile: dict[str, int] | None = None
        if actual_members is not None:
            reconcile = _actual_confirmed(con, actual_members)
            uncertain_ids: list[str] = []
            _load_identities(con, "uncertain_in", iter(()))
        else:
            _confirmed(con, store, sync_name, confirmed_is_stale)
            uncertain_ids, uncertain_reader = store.uncertain(sync_name)
            _load_identities(con, "uncertain_in", uncertain_reader)
            if confirmed_is_stale:
                # Confirmed at the sync's previous target: unknown at this one (see StateStore.bind_target).
                _load_identities(con, "uncertain_in", store.confirmed(sync_name), append=True)
        _load_identities(con, "failed_add", store.failed(sync_name, ADD))
        _load_identities(con, "failed_remove", store.failed(sync_name, REMOVE))
        if quarantine_after is not None:
            _load_identities(con, "quarantine_add", store.failed(sync_name, ADD, min_runs=quarantine_after))
            _load_identities(con, "quarantine_remove", store.failed(sync_name, REMOVE, min_runs=quarantine_after))
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

        scalar = partial(_scalar, con)

        con.execute("CREATE TABLE uncertain AS SELECT DISTINCT kind, label, value FROM uncertain_in")
        uncertain = scalar("SELECT count(*) FROM uncertain")
        if uncertain:
            # Only the few uncertain identities are looked up in the model: the happy path pays nothing.
            # One that matches a row passed the value rules when it was first planned, so it is valid.
            con.execute(
                "CREATE TABLE uncertain_wanted AS SELECT u.kind, u.label, u.value FROM uncertain AS u "
                "SEMI JOIN (SELECT kind, label, key FROM model_identities WHERE key IS NOT NULL) AS m "
                "ON u.kind = m.kind AND u.label = m.label AND u.value = m.key"
            )
            extra_adds = " UNION SELECT * FROM uncertain_wanted"
            extra_removes = " UNION (SELECT * FROM uncertain EXCEPT SELECT * FROM uncertain_wanted)"
        else:
            extra_adds = extra_removes = ""
        if full_resync:
            con.execute(
                "CREATE TABLE adds_all AS SELECT DISTINCT kind, label, value FROM model_rows WHERE reason IS NULL"
            )
        else:
            con.execute(f"CREATE TABLE adds_all AS SELECT * FROM new_identities{extra_adds}")
        if sync.on_row_removed == "remove":
            con.execute(
                "CREATE TABLE removes_all AS SELECT c_kind AS kind, c_label AS label, c_value AS value "
                f"FROM diff WHERE in_model IS NULL{extra_removes}"
            )
        else:
            con.execute("CREATE TABLE removes_all (kind VARCHAR, label VARCHAR, value VARCHAR)")
        quarantined = 0
        for op_table, quarantine in (("adds", "quarantine_add"), ("removes", "quarantine_remove")):
            if quarantine_after is not None and scalar(f"SELECT count(*) FROM {quarantine}"):
                # An uncertain identity is sent even when quarantined: it may have been applied since.
                con.execute(
                    f"CREATE TABLE {op_table} AS SELECT * FROM {op_table}_all ANTI JOIN "
                    f"(SELECT * FROM {quarantine} EXCEPT SELECT * FROM uncertain) USING (kind, label, value)"
                )
                quarantined += scalar(f"SELECT count(*) FROM {op_table}_all") - scalar(
                    f"SELECT count(*) FROM {op_table}"
                )
            else:
                con.execute(f"CREATE VIEW {op_table} AS SELECT * FROM {op_table}_all")

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
            retried_adds=scalar(
                "SELECT count(*) FROM adds SEMI JOIN "
                "(SELECT * FROM failed_add UNION ALL SELECT * FROM uncertain) USING (kind, label, value)"
            ),
            retried_removes=scalar(
                "SELECT count(*) FROM removes SEMI JOIN "
                "(SELECT * FROM failed_remove UNION ALL SELECT * FROM uncertain) USING (kind, label, value)"
            ),
            uncertain=uncertain,
            quarantined=quarantined,
            rejected=rejected,
        )
        if reconcile is not None:
            # to_add also holds identifiers that match no user of the destination (it cannot say which):
            # the delivery's ``added`` is what was really missing, its ``removed`` what was wrongly kept.
            reconcile["to_add"] = counts.adds
            reconcile["to_remove"] = counts.removes
            counts.reconcile = reconcile
        has_rejections = bool(scalar("SELECT (SELECT count(*) FROM failed_add) + (SELECT count(*) FROM failed_remove)"))
        return Plan(con, tmp_dir, counts, uncertain_ids, has_rejections)
    except BaseException:
        con.close()
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
