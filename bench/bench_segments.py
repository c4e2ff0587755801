"""Segment size and member listing on PostgreSQL at scale (1M, 10M users).

Seeds a throwaway database with ``INSERT ... SELECT generate_series`` (one workspace, plus a small second one
so the workspace condition matters), a partner cohort holding 10% of the users, then times the platform's own
domain functions on the segment "<Partner> Cohorts includes the cohort AND country = FR":

- exact total count (``COUNT(*)`` of the compiled filter), the figure with the 1 s target at 10M users;
- ``segment_size``: total plus the users reachable by email and by webhook, in one query;
- ``preview_members`` (first 100 members);
- full member listing: every member id streamed with a server-side cursor, as a campaign send reads them;
- the same with "does not include".

Usage::

    python bench/bench_segments.py --users 1000000 --users 10000000
    python bench/bench_segments.py --quick          # CI: 100k users, a few seconds

The base URL (``--postgres``, default ``$COHORTFLOW_TEST_POSTGRES_URL`` or postgresql://postgres@127.0.0.1:5432/postgres)
is only used to create and drop ``cf_bench_segments_*`` databases; nothing else is touched.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.engine import make_url

from cohortflow.platform.segments.compiler import compile_filter
from cohortflow.platform.segments.filters import parse_filter
from cohortflow.platform.segments.service import audience_query, filter_size
from cohortflow.platform.store.engine import make_engine, migrate
from cohortflow.platform.store.schema import users

WORKSPACE = "ws_bench"
NOISE_WORKSPACE = "ws_noise"
PARTNER = "hightouch"
COHORT = "high-value"
# One user in ten is French (country codes cycle over ten values); one in ten is in the cohort, chosen by a
# hash so that cohort membership and country are independent.
COUNTRIES = "ARRAY['FR','DE','US','GB','ES','IT','NL','BE','BR','JP']"


@dataclass
class Timing:
    label: str
    seconds: list[float]
    rows: int

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


@contextmanager
def scratch_database(base_url: str, users_count: int, keep: bool) -> Iterator[str]:
    name = f"cf_bench_segments_{users_count}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(make_url(base_url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base_url).set(database=name).render_as_string(hide_password=False)
    finally:
        if not keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        else:
            print(f"kept database {name}")
        admin.dispose()


def seed(engine: Engine, n: int) -> float:
    started = time.perf_counter()
    noise = max(n // 100, 1000)
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO workspaces (id, name, created_at) VALUES (:a, 'bench', now()), (:b, 'noise', now())"),
            {"a": WORKSPACE, "b": NOISE_WORKSPACE},
        )
        partner_id = conn.execute(
            text("INSERT INTO partners (name, display_name, created_at) VALUES (:p, 'Hightouch', now()) RETURNING id"),
            {"p": PARTNER},
        ).scalar_one()
        for workspace, count in ((WORKSPACE, n), (NOISE_WORKSPACE, noise)):
            conn.execute(
                text(
                    f"""
                    INSERT INTO users (workspace_id, braze_id, external_id, created_at, updated_at, email, country,
                                       email_subscribe, custom_attributes, random_bucket)
                    SELECT CAST(:ws AS text), CAST(:ws AS text) || '-' || i,
                           CASE WHEN i % 10 <> 7 THEN 'user-' || i END,
                           now(), now(),
                           CASE WHEN i % 5 <> 3 THEN 'user' || i || '@example.com' END,
                           ({COUNTRIES})[1 + i % 10],
                           CASE i % 7 WHEN 0 THEN 'unsubscribed' WHEN 1 THEN 'opted_in' ELSE 'subscribed' END,
                           jsonb_build_object('plan', (ARRAY['free','pro','team'])[1 + i % 3], 'age', 18 + i % 60),
                           (hashint4(i) & 2147483647) % 10000
                    FROM generate_series(1, :n) AS i
                    """
                ),
                {"ws": workspace, "n": count},
            )
        for workspace in (WORKSPACE, NOISE_WORKSPACE):
            cohort_pk = conn.execute(
                text(
                    "INSERT INTO cohorts (workspace_id, partner_id, cohort_id, name, created_at, updated_at) "
                    "VALUES (:ws, :p, :c, 'High value', now(), now()) RETURNING id"
                ),
                {"ws": workspace, "p": partner_id, "c": COHORT},
            ).scalar_one()
            conn.execute(
                text(
                    "INSERT INTO cohort_members (cohort_pk, user_id, added_at) "
                    "SELECT :c, id, now() FROM users WHERE workspace_id = :ws AND hashint8(id) % 10 = 0"
                ),
                {"c": cohort_pk, "ws": workspace},
            )
    # Autovacuum would get there eventually; the benchmark measures the settled state (visibility map set,
    # statistics gathered) that a production table is in.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM (ANALYZE) users, cohort_members, cohorts"))
    return time.perf_counter() - started


def timed(label: str, fn: Callable[[], int], repeat: int) -> Timing:
    fn()  # warm the cache: we measure query work, not the first read from disk
    seconds = []
    rows = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        rows = fn()
        seconds.append(time.perf_counter() - t0)
    return Timing(label, seconds, rows)


def run(engine: Engine, repeat: int, settings: list[str]) -> tuple[list[Timing], str]:
    now = datetime.now(UTC)
    includes = parse_filter(
        {
            "type": "and",
            "filters": [
                {"type": "partner_cohort", "partner": PARTNER, "cohort_id": COHORT, "operator": "includes"},
                {"type": "standard_attribute", "attribute": "country", "operator": "equals", "value": "FR"},
            ],
        }
    )
    excludes = parse_filter(
        {
            "type": "and",
            "filters": [
                {"type": "partner_cohort", "partner": PARTNER, "cohort_id": COHORT, "operator": "does_not_include"},
                {"type": "standard_attribute", "attribute": "country", "operator": "equals", "value": "FR"},
            ],
        }
    )
    results: list[Timing] = []
    with engine.connect() as conn:
        for setting in settings:
            name, _, value = setting.partition("=")
            conn.execute(text("SELECT set_config(:n, :v, false)"), {"n": name.strip(), "v": value.strip()})

        def count(node: Any) -> Callable[[], int]:
            def go() -> int:
                clause = compile_filter(conn, WORKSPACE, node, now=now)
                q = select(func.count()).select_from(users).where(users.c.workspace_id == WORKSPACE, clause)
                return int(conn.execute(q).scalar_one())

            return go

        def size(node: Any) -> Callable[[], int]:
            return lambda: filter_size(conn, WORKSPACE, node, now=now).total

        def preview(node: Any) -> Callable[[], int]:
            def go() -> int:
                clause = compile_filter(conn, WORKSPACE, node, now=now)
                q = audience_query(WORKSPACE, [clause]).order_by(users.c.id).limit(100)
                return len(conn.execute(q).all())

            return go

        def listing(node: Any) -> Callable[[], int]:
            def go() -> int:
                clause = compile_filter(conn, WORKSPACE, node, now=now)
                q = audience_query(WORKSPACE, [clause])
                seen = 0
                result = conn.execute(q, execution_options={"stream_results": True, "yield_per": 10_000})
                for part in result.partitions():
                    seen += len(part)
                return seen

            return go

        for name, node in (("includes", includes), ("does not include", excludes)):
            results.append(timed(f"cohort {name} AND country = FR: exact count", count(node), repeat))
            results.append(timed(f"cohort {name} AND country = FR: size + reachable", size(node), repeat))
            results.append(timed(f"cohort {name} AND country = FR: preview 100", preview(node), repeat))
            results.append(timed(f"cohort {name} AND country = FR: list all member ids", listing(node), repeat))
        clause = compile_filter(conn, WORKSPACE, includes, now=now)
        q = select(func.count()).select_from(users).where(users.c.workspace_id == WORKSPACE, clause)
        compiled = q.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
        plan = "\n".join(r[0] for r in conn.execute(text(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {compiled}")))
    return results, plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, action="append", help="users in the workspace (repeatable)")
    parser.add_argument("--quick", action="store_true", help="100k users, 3 repeats (for CI)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--postgres",
        default=os.environ.get("COHORTFLOW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--plan", action="store_true", help="print the count's EXPLAIN ANALYZE")
    parser.add_argument("--set", dest="settings", action="append", default=[], help="NAME=VALUE session setting")
    parser.add_argument("--reuse", metavar="URL", help="measure a database kept by an earlier --keep run")
    args = parser.parse_args()
    sizes = [100_000] if args.quick else (args.users or [1_000_000])
    repeat = 3 if args.quick else args.repeat
    if args.reuse:
        engine = make_engine(args.reuse)
        report(engine, "kept database", repeat, args.settings, args.plan)
        engine.dispose()
        return
    for n in sizes:
        with scratch_database(args.postgres, n, args.keep) as url:
            engine = make_engine(url)
            migrate(engine)
            seconds = seed(engine, n)
            report(engine, f"{n:,} users (seeded in {seconds:.1f} s)", repeat, args.settings, args.plan)
            engine.dispose()


def report(engine: Engine, title: str, repeat: int, settings: list[str], show_plan: bool) -> None:
    print(f"\n## {title}{' with ' + ', '.join(settings) if settings else ''}\n")
    results, plan = run(engine, repeat, settings)
    print("| operation | members | median | min | max |")
    print("|---|---:|---:|---:|---:|")
    for t in results:
        rate = f" ({t.rows / t.median:,.0f} ids/s)" if "list all" in t.label else ""
        print(
            f"| {t.label} | {t.rows:,} | {t.median * 1000:.0f} ms{rate} | "
            f"{min(t.seconds) * 1000:.0f} ms | {max(t.seconds) * 1000:.0f} ms |"
        )
    if show_plan:
        print("\n```\n" + plan + "\n```")


if __name__ == "__main__":
    main()
