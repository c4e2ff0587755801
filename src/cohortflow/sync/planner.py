"""The plan: which identities to add and remove, computed in DuckDB against the last confirmed state.

Inputs are streamed into an embedded DuckDB database (the model's resolved rows, the confirmed members and
the identifiers that failed before); the diff is two anti-joins. DuckDB spills to a temporary directory
when the sets outgrow memory, and delivery reads the results back one batch at a time, so no step holds
one Python object per row of the model.

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

from cohortflow.sync.config import ModelConfig, SyncConfig
from cohortflow.sync.identifiers import describe
from cohortflow.sync.models import ModelStats, RejectedRows, materialize
from cohortflow.sync.sources import Source
from cohortflow.sync.state import IDENTITY_SCHEMA, Identity, StateStore

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
            for whole in reader:
                # DuckDB's batch size is a hint; the wire limit is not, so re-slice to be certain.
                for start in range(0, whole.num_rows, size):
                    batch = whole.slice(start, size)
                    kinds, labels, values = (batch.column(i).to_pylist() for i in range(3))
                    yield list(zip(kinds, labels, values, strict=True))
        finally:
            cursor.close()

    def sample(self, op: str, n: int = 5) -> list[str]:
        table = "adds" if op == ADD else "removes"
        rows = self._con.execute(f"SELECT kind, label, value FROM {table} ORDER BY kind, label, value LIMIT {int(n)}")
        return [describe((k, lb, v)) for k, lb, v in rows.fetchall()]

    def close(self) -> None:
        self._con.close()
        shutil.rmtree(self._tmp_dir, ignore_errors=True)

    def __enter__(self) -> Plan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _load_identities(con: duckdb.DuckDBPyConnection, table: str, reader: Any) -> None:
    con.register("identities_in", IDENTITY_SCHEMA.empty_table())
    con.execute(f"CREATE TABLE {table} AS SELECT * FROM identities_in")
    con.unregister("identities_in")
    for batch in reader:
        con.register("identities_in", batch)
        con.execute(f"INSERT INTO {table} SELECT * FROM identities_in")
        con.unregister("identities_in")


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
        stats: ModelStats = materialize(
            con, source, model, sync.identifier, unsupported_kinds=unsupported_kinds, on_rows=on_rows
        )
        if on_planning is not None:
            on_planning()
        if confirmed_is_stale:
            _load_identities(con, "confirmed", iter(()))
        else:
            _load_identities(con, "confirmed", store.confirmed(sync_name))
        _load_identities(con, "failed_add", store.failed(sync_name, ADD))
        _load_identities(con, "failed_remove", store.failed(sync_name, REMOVE))
        if full_resync:
            con.execute("CREATE TABLE adds AS SELECT * FROM desired")
        else:
            con.execute("CREATE TABLE adds AS SELECT * FROM desired ANTI JOIN confirmed USING (kind, label, value)")
        if sync.on_row_removed == "remove":
            con.execute("CREATE TABLE removes AS SELECT * FROM confirmed ANTI JOIN desired USING (kind, label, value)")
        else:
            con.execute("CREATE TABLE removes AS SELECT * FROM confirmed LIMIT 0")

        def scalar(sql: str) -> int:
            row = con.execute(sql).fetchall()[0]
            assert row is not None
            return int(row[0])

        counts = PlanCounts(
            rows=stats.rows,
            valid_rows=stats.valid_rows,
            desired=scalar("SELECT count(*) FROM desired"),
            confirmed=scalar("SELECT count(*) FROM confirmed"),
            adds=scalar("SELECT count(*) FROM adds"),
            removes=scalar("SELECT count(*) FROM removes"),
            retried_adds=scalar("SELECT count(*) FROM adds SEMI JOIN failed_add USING (kind, label, value)"),
            retried_removes=scalar("SELECT count(*) FROM removes SEMI JOIN failed_remove USING (kind, label, value)"),
            rejected=stats.rejected,
        )
        return Plan(con, tmp_dir, counts)
    except BaseException:
        con.close()
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
