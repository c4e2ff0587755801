"""Sizing an audience in DuckDB, against the same question hand-written in SQL.

Setup (in a temporary directory, or ``--workdir``): a DuckDB warehouse with ``customers`` (N people: id,
external_id, country among 5 values, ltv, signed_up_at), ``orders`` (2N rows, random customers, amounts
0-500) and ``page_views`` (E rows, random customers, moments spread over the last 90 days, not in time
order). The audience, declared in ``cohortflow.yaml`` with no SQL::

    country = 'FR'                                             -- a parent condition
    AND has an order with amount > 400                         -- a related-model condition
    AND performed page_views at least 3 times in the last 30 days   -- an event window

Measured, each in a fresh child process (the OS page cache is warm for every contender alike):

* ``audience``: ``audience_size(ws, "bench", sample=0)``: compile from the YAML definition, run the count;
* ``plan`` (reported, not compared): a dry run of a sync of the audience with empty state, i.e. the audience
  streamed through the planner (``querying``) and diffed (``planning``), as the first run of a sync does;
* three hand-written queries of the same question: ``semi`` (keys ``IN`` grouped subqueries), ``exists``
  (``EXISTS`` and a correlated count, as many people write it) and ``join`` (CTEs joined to the parent).
  The baseline is the fastest of the three.

All contenders must return the same count. Medians over ``--repeats``. Run from the repository root:

    python -m bench.bench_audiences                         # 10M people, 100M events, 3 repeats
    python -m bench.bench_audiences --events 50000000       # a smaller event table
    python -m bench.bench_audiences --short                 # CI: 100k people, 1M events, 1 repeat
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import yaml

from bench.harness import machine
from bench.sync_support import log, median, run_child

NOW = datetime(2030, 6, 15, 12, 0, 0)
SINCE = NOW - timedelta(days=30)

AUDIENCE: dict[str, Any] = {
    "parent": "people",
    "filter": {
        "type": "and",
        "filters": [
            {"type": "property", "column": "country", "operator": "equals", "value": "FR"},
            {
                "type": "related",
                "relation": "orders",
                "where": {"type": "property", "column": "amount", "operator": "greater_than", "value": 400},
            },
            {
                "type": "performed",
                "event": "page_views",
                "within_last_days": 30,
                "count": {"operator": "at_least", "value": 3},
            },
        ],
    },
}


def _window(column: str) -> str:
    return f"{column} >= TIMESTAMP '{SINCE:%Y-%m-%d %H:%M:%S}' AND {column} <= TIMESTAMP '{NOW:%Y-%m-%d %H:%M:%S}'"


HAND_WRITTEN = {
    "semi": f"""
        SELECT count(*) FROM customers AS c
        WHERE c.country = 'FR'
          AND c.id IN (SELECT customer_id FROM orders WHERE amount > 400)
          AND c.id IN (SELECT customer_id FROM page_views WHERE {_window("viewed_at")}
                       GROUP BY customer_id HAVING count(*) >= 3)
    """,
    "exists": f"""
        SELECT count(*) FROM customers AS c
        WHERE c.country = 'FR'
          AND EXISTS (SELECT 1 FROM orders AS o WHERE o.customer_id = c.id AND o.amount > 400)
          AND (SELECT count(*) FROM page_views AS v
               WHERE v.customer_id = c.id AND {_window("v.viewed_at")}) >= 3
    """,
    "join": f"""
        WITH buyers AS (SELECT DISTINCT customer_id FROM orders WHERE amount > 400),
             active AS (SELECT customer_id FROM page_views WHERE {_window("viewed_at")}
                        GROUP BY customer_id HAVING count(*) >= 3)
        SELECT count(*) FROM customers AS c
        JOIN buyers AS b ON b.customer_id = c.id
        JOIN active AS a ON a.customer_id = c.id
        WHERE c.country = 'FR'
    """,
}


def prepare(workdir: Path, people: int, events: int) -> None:
    started = time.perf_counter()
    con = duckdb.connect(str(workdir / "warehouse.duckdb"))
    now = f"TIMESTAMP '{NOW:%Y-%m-%d %H:%M:%S}'"
    try:
        # hash() rather than random(): the same warehouse for the same sizes, every time.
        con.execute(
            f"""CREATE OR REPLACE TABLE customers AS SELECT i AS id, 'u' || i AS external_id,
            ['FR', 'DE', 'US', 'GB', 'ES'][1 + (hash(i) % 5)::INTEGER] AS country,
            (hash(i * 7) % 100000)::DOUBLE / 100 AS ltv,
            {now} - to_seconds((hash(i * 13) % (3 * 365 * 86400))::BIGINT) AS signed_up_at
            FROM range({people}) AS t(i)"""
        )
        log(f"customers: {people:,} rows ({time.perf_counter() - started:.0f} s)")
        con.execute(
            f"""CREATE OR REPLACE TABLE orders AS SELECT i AS order_id, (hash(i) % {people})::BIGINT AS customer_id,
            (hash(i * 3) % 50000)::DOUBLE / 100 AS amount,
            ['paid', 'refunded', 'pending'][1 + (hash(i * 5) % 3)::INTEGER] AS status,
            {now} - to_seconds((hash(i * 11) % (365 * 86400))::BIGINT) AS ordered_at
            FROM range({2 * people}) AS t(i)"""
        )
        log(f"orders: {2 * people:,} rows ({time.perf_counter() - started:.0f} s)")
        con.execute(
            f"""CREATE OR REPLACE TABLE page_views AS SELECT i AS view_id,
            (hash(i) % {people})::BIGINT AS customer_id,
            ['home', 'pricing', 'blog', 'docs'][1 + (hash(i * 3) % 4)::INTEGER] AS url,
            {now} - to_seconds((hash(i * 7) % (90 * 86400))::BIGINT) AS viewed_at
            FROM range({events}) AS t(i)"""
        )
        log(f"page_views: {events:,} rows ({time.perf_counter() - started:.0f} s)")
    finally:
        con.close()


def write_workspace(workdir: Path) -> None:
    doc = {
        "version": 1,
        "sources": {"warehouse": {"type": "duckdb", "path": "warehouse.duckdb"}},
        "models": {
            "customers": {"source": "warehouse", "table": "customers", "primary_key": "id"},
            "orders": {"source": "warehouse", "table": "orders", "primary_key": "order_id"},
            "page_views": {"source": "warehouse", "table": "page_views", "primary_key": "view_id"},
        },
        "parents": {
            "people": {
                "model": "customers",
                "identifiers": ["external_id"],
                "columns": {"country": "text", "ltv": "number", "signed_up_at": "timestamp"},
                "related": {
                    "orders": {
                        "model": "orders",
                        "join": {"id": "customer_id"},
                        "columns": {"amount": "number", "status": "text", "ordered_at": "timestamp"},
                    }
                },
                "events": {
                    "page_views": {
                        "model": "page_views",
                        "join": {"id": "customer_id"},
                        "timestamp": "viewed_at",
                        "columns": {"url": "text"},
                    }
                },
            }
        },
        "audiences": {"bench": AUDIENCE},
        "destinations": {
            "braze": {
                "type": "braze_cohorts",
                "rest_endpoint": "http://127.0.0.1:9",  # never called: dry runs send nothing
                "partner": "hightouch",
                "partner_api_key": "unused",
                "data_import_key": "unused",
            }
        },
        "syncs": {
            "bench": {
                "audience": "bench",
                "destination": "braze",
                "identifier": {"external_id": "external_id"},
                "cohort": {"mode": "create", "name": "Benchmark audience"},
            }
        },
    }
    (workdir / "cohortflow.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


def _child_audience(workdir: Path) -> dict[str, Any]:
    from cohortflow.sync import load_workspace
    from cohortflow.sync.audiences.compiler import compile_audience
    from cohortflow.sync.audiences.service import audience_size

    with load_workspace(workdir / "cohortflow.yaml", state_url="sqlite://") as ws:
        started = time.perf_counter()
        compile_audience(ws.config, "bench", now=NOW)
        compile_ms = (time.perf_counter() - started) * 1000
        started, cpu = time.perf_counter(), time.process_time()
        size = audience_size(ws, "bench", sample=0, now=NOW)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"seconds": round(seconds, 3), "cpu_s": round(cpu, 3), "size": size.size, "compile_ms": round(compile_ms, 1)}


def _child_plan(workdir: Path) -> dict[str, Any]:
    import cohortflow.sync.audiences.compiler as compiler
    from cohortflow.sync import load_workspace, run_sync

    compiler.utcnow = lambda: NOW.replace(tzinfo=UTC)  # the data's "now", as the other contenders use
    state = Path(tempfile.mkdtemp(prefix="cf-bench-audiences-state-"))
    try:
        with load_workspace(workdir / "cohortflow.yaml", state_url=f"sqlite:///{state / 'state.db'}") as ws:
            started = time.perf_counter()
            result = run_sync(ws, "bench", dry_run=True)
            seconds = time.perf_counter() - started
    finally:
        shutil.rmtree(state, ignore_errors=True)
    assert result.status == "succeeded", result.message
    return {"seconds": round(seconds, 3), "size": result.counts["adds"], "phases": result.phases}


def _child_sql(workdir: Path, name: str) -> dict[str, Any]:
    started, cpu = time.perf_counter(), time.process_time()
    con = duckdb.connect(str(workdir / "warehouse.duckdb"), read_only=True)
    try:
        row = con.execute(HAND_WRITTEN[name]).fetchone()
    finally:
        con.close()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert row is not None
    return {"seconds": round(seconds, 3), "cpu_s": round(cpu, 3), "size": int(row[0])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=10_000_000)
    parser.add_argument("--events", type=int, default=100_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--short", action="store_true", help="100k people, 1M events, 1 repeat (for CI)")
    parser.add_argument("--workdir", type=Path, help="reuse (or keep) this directory")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child == "audience":
            figures = _child_audience(args.workdir)
        elif args.child == "plan":
            figures = _child_plan(args.workdir)
        else:
            figures = _child_sql(args.workdir, args.child)
        print(json.dumps(figures))
        return
    if args.short:
        args.people, args.events, args.repeats = 100_000, 1_000_000, 1
    info = machine()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cf-bench-audiences-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        if not (workdir / "warehouse.duckdb").exists():
            prepare(workdir, args.people, args.events)
        write_workspace(workdir)
        child = ["bench.bench_audiences", "--workdir", str(workdir), "--child"]
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in ("audience", "plan", *HAND_WRITTEN)}
        for _ in range(args.repeats):
            for name in runs:  # alternate, so that drift in the machine's load hits every contender alike
                result = run_child([*child, name])
                runs[name].append({**result.figures, "peak_rss_mb": round(result.peak_rss_mb)})
                log(f"{name}: {result.figures['seconds']} s, size {result.figures['size']:,}")
        sizes = {r["size"] for rs in runs.values() for r in rs}
        assert len(sizes) == 1, f"the contenders disagree: {sizes}"
        seconds = {name: median([r["seconds"] for r in rs]) for name, rs in runs.items()}
        baseline_name = min(HAND_WRITTEN, key=lambda n: seconds[n])
        report = {
            "bench": "audiences",
            "people": args.people,
            "orders": 2 * args.people,
            "events": args.events,
            "repeats": args.repeats,
            "machine": info,
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "audience_size": sizes.pop(),
            "seconds": seconds,
            "cpu_s": {name: median([r["cpu_s"] for r in rs]) for name, rs in runs.items() if name != "plan"},
            "plan_phases": runs["plan"][-1]["phases"],
            "peak_rss_mb": {name: max(r["peak_rss_mb"] for r in rs) for name, rs in runs.items()},
            "compile_ms": median([r["compile_ms"] for r in runs["audience"]]),
            "baseline": baseline_name,
            "ratio": round(seconds["audience"] / seconds[baseline_name], 2),
            "target_met": seconds["audience"] <= 2 * seconds[baseline_name] if not args.short else None,
        }
        print(json.dumps(report))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
