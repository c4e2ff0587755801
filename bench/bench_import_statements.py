"""Where one partner cohort import spends its database time, statement by statement (PostgreSQL or SQLite).

A throwaway database seeded like ``bench_platform_ingest`` (N users), then imports of 1,000 external ids (690
adds, 300 removes, 10 unknown) sent one after another through the route's own function (no HTTP), with the time
of each statement and each commit taken around the driver call. Run from the repository root:

    python -m bench.bench_import_statements                  # PostgreSQL, 1M users, 300 imports
    python -m bench.bench_import_statements --backend sqlite
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import event
from sqlalchemy.engine import Engine

from bench.bench_platform_ingest import cohort_bodies, new_credentials, seed_workspace
from bench.harness import DEFAULT_POSTGRES_URL, throwaway_database
from cohortflow.platform.api.routes.partners import _import
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.settings import PlatformSettings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--imports", type=int, default=300)
    parser.add_argument("--postgres-url", default=os.environ.get("COHORTFLOW_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    args = parser.parse_args(argv)

    times: dict[str, list[float]] = defaultdict(list)
    measuring = False

    def before(conn: Any, _cursor: Any, _statement: str, *_: Any) -> None:
        conn.info["cf_t0"] = time.perf_counter()

    def after(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if measuring:
            times[" ".join(statement.split())[:100]].append(time.perf_counter() - conn.info["cf_t0"])

    with throwaway_database(args.backend, args.postgres_url) as url:
        runtime = PlatformRuntime.open(PlatformSettings(database_url=url, rate_limit_per_hour=10**9))
        try:
            ws_id = seed_workspace(runtime, args.users)
            with runtime.transaction() as conn:
                creds = new_credentials(conn, ws_id)
            bodies = cohort_bodies(creds, "statements", args.users, args.imports, random.Random(1))
            event.listen(Engine, "before_cursor_execute", before)
            event.listen(Engine, "after_cursor_execute", after)
            dialect: Any = runtime.engine.dialect
            do_commit = dialect.do_commit

            def timed_commit(dbapi_connection: Any) -> None:
                started = time.perf_counter()
                do_commit(dbapi_connection)
                if measuring:
                    times["COMMIT"].append(time.perf_counter() - started)

            dialect.do_commit = timed_commit
            warmup = max(1, args.imports // 10)
            for n, body in enumerate(bodies):
                measuring = n >= warmup
                if n == warmup:
                    started = time.perf_counter()
                _import(runtime, creds["partner"], orjson.loads(body))
            elapsed = time.perf_counter() - started
        finally:
            event.remove(Engine, "before_cursor_execute", before)
            event.remove(Engine, "after_cursor_execute", after)
            runtime.close()
    measured = args.imports - warmup
    print(f"{args.backend}, {args.users:,} users: {elapsed / measured * 1000:.2f} ms an import over {measured} imports")
    print("| statement | calls an import | ms each |\n|---|---|---|")
    for statement, values in sorted(times.items(), key=lambda kv: -sum(kv[1])):
        print(f"| `{statement}` | {len(values) / measured:.1f} | {sum(values) / len(values) * 1000:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
