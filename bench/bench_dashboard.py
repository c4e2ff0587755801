"""Dashboard pages' server time on PostgreSQL at scale, and the segment builder's size update.

Seeds a throwaway database (``cf_bench_dashboard_*``, dropped afterwards) with bulk SQL: one workspace of N users,
1,000 cohorts of the partner "hightouch" (sizes by tier: 1 of N/10, 9 of N/100, 90 of N/1,000, 900 of N/10,000:
0.37 N memberships), 100 segments over them (made by the segments service), 20 campaigns each with a completed
send of up to 10,000 logged deliveries, 10 Canvases (one active, its positions, step events and deliveries for
up to 50,000 users), import history, and an admin; then ``VACUUM (ANALYZE)``. It starts the platform as
``uvicorn`` in its own process (the same as ``cohortflow platform serve``), signs in over HTTP and times every
kind of dashboard page (median and worst of the repeats after a warm-up), and the builder's size update: the
``fragment=segment-size`` POST the live script sends as a filter changes, for several filters.

Times are taken by the client on loopback (one keep-alive connection), so they are the server's time plus well
under a millisecond of transport.

Usage::

    python -m bench.bench_dashboard                      # 1M users, every page, 7 repeats
    python -m bench.bench_dashboard --users 10000000 --builder-only
    python -m bench.bench_dashboard --quick              # CI: 50k users, 2 repeats
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import Engine, text

from bench.harness import DEFAULT_POSTGRES_URL, machine, throwaway_database
from cohortflow.platform.dashboard_users import create_user
from cohortflow.platform.messaging import campaigns, canvas
from cohortflow.platform.process import start_server
from cohortflow.platform.segments import service
from cohortflow.platform.store.engine import make_engine, migrate

WORKSPACE = "ws_bench"
PARTNER = "hightouch"
COHORTS = 1000
SEGMENTS = 100
CAMPAIGNS = 20
CANVASES = 10
EMAIL = "bench-admin@example.com"
PASSWORD = "a long bench password"
COUNTRIES = "ARRAY['FR','DE','US','GB','ES','IT','NL','BE','BR','JP']"


def seed(engine: Engine, n: int) -> dict[str, Any]:
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO workspaces (id, name, created_at) VALUES (:w, 'Bench', now())"), {"w": WORKSPACE}
        )
        partner_id = conn.execute(
            text("INSERT INTO partners (name, display_name, created_at) VALUES (:p, 'Hightouch', now()) RETURNING id"),
            {"p": PARTNER},
        ).scalar_one()
        conn.execute(
            text(
                f"""
                INSERT INTO users (workspace_id, braze_id, external_id, created_at, updated_at, first_name, email,
                                   country, email_subscribe, custom_attributes, random_bucket)
                SELECT :w, 'bench' || i, CASE WHEN i % 10 <> 7 THEN 'user-' || i END, now(), now(), 'Name' || i,
                       CASE WHEN i % 5 <> 3 THEN 'user' || i || '@example.com' END,
                       ({COUNTRIES})[1 + i % 10],
                       CASE i % 7 WHEN 0 THEN 'unsubscribed' WHEN 1 THEN 'opted_in' ELSE 'subscribed' END,
                       jsonb_build_object('plan', (ARRAY['free','pro','team'])[1 + i % 3], 'age', 18 + i % 60),
                       (hashint4(i) & 2147483647) % 10000
                FROM generate_series(1, :n) AS i
                """
            ),
            {"w": WORKSPACE, "n": n},
        )
        first = int(conn.execute(text("SELECT min(id) FROM users")).scalar_one())
        conn.execute(
            text(
                "INSERT INTO cohorts (workspace_id, partner_id, cohort_id, name, created_at, updated_at, "
                "last_import_at) SELECT :w, :p, 'cohort-' || k, 'Cohort ' || k, now(), now(), now() "
                "FROM generate_series(1, :c) k"
            ),
            {"w": WORKSPACE, "p": partner_id, "c": COHORTS},
        )
        # Members by stride: user first + (k * 104729 + 11 j) mod n, distinct for j < n (11 and n coprime in use); 11
        # is coprime with the 10 countries, 5 email and 7 subscription cycles too, so members mix like users do.
        conn.execute(
            text(
                """
                INSERT INTO cohort_members (cohort_pk, user_id, added_at)
                SELECT c.id, :first + ((c.k * 104729 + g.j * 11) % :n), now()
                FROM (SELECT id, row_number() OVER (ORDER BY id) AS k FROM cohorts WHERE workspace_id = :w) c,
                     LATERAL generate_series(0, GREATEST(1, CASE WHEN c.k = 1 THEN :n / 10 WHEN c.k <= 10 THEN :n / 100
                                                               WHEN c.k <= 100 THEN :n / 1000 ELSE :n / 10000 END) - 1)
                       AS g(j)
                ON CONFLICT DO NOTHING
                """
            ),
            {"w": WORKSPACE, "n": n, "first": first},
        )
        conn.execute(
            text(
                """
                INSERT INTO cohort_imports (workspace_id, partner_id, cohort_pk, at, received, matched, unmatched,
                                            added, removed, unchanged, unmatched_sample)
                SELECT c.workspace_id, c.partner_id, c.id, now() - make_interval(hours => g),
                       1000, 990, 10, 700, 290, 0,
                       '[{"user_id": "ghost-1"}, {"user_id": "ghost-2"}]'::jsonb
                FROM cohorts c, generate_series(1, 30) g WHERE c.workspace_id = :w
                """
            ),
            {"w": WORKSPACE},
        )
        user_id = first + (104729 % n)  # a member of cohort 1
    with engine.begin() as conn:
        segment_ids = []
        for i in range(SEGMENTS):
            c1, c2 = f"cohort-{i + 1}", f"cohort-{(i * 37) % COHORTS + 1}"
            cohort = {"type": "partner_cohort", "partner": PARTNER, "cohort_id": c1, "operator": "includes"}
            other = {"type": "partner_cohort", "partner": PARTNER, "cohort_id": c2, "operator": "includes"}
            trees: list[dict[str, Any]] = [
                cohort,
                {"type": "and", "filters": [cohort, {"type": "standard_attribute", "attribute": "country",
                                                     "operator": "equals", "value": "FR"}]},
                {"type": "or", "filters": [cohort, other]},
                {"type": "and", "filters": [{**cohort, "operator": "does_not_include"},
                                            {"type": "custom_attribute", "attribute": "plan", "operator": "equals",
                                             "value": "pro"}]},
                {"type": "and", "filters": [cohort, {"type": "email_subscription", "state": "subscribed"}]},
            ]  # fmt: skip
            segment_ids.append(service.create_segment(conn, WORKSPACE, f"Segment {i + 1:03}", trees[i % 5]).id)
        campaign_ids = []
        for j in range(CAMPAIGNS):
            message: dict[str, Any] = (
                {"channel": "email", "from_address": "news@acme.example", "subject": "Hi {{ first_name }}",
                 "text": "Hello {{ first_name }}, your plan: {{ plan | default: 'free' }}"}
                if j % 2 == 0
                else {"channel": "webhook", "url": "https://hooks.example/x", "body": {"id": "{{ external_id }}"}}
            )  # fmt: skip
            campaign = campaigns.create_campaign(
                conn, WORKSPACE, {"name": f"Campaign {j + 1:02}", "segment_ids": [segment_ids[j]], "message": message}
            )
            campaign_ids.append(campaign.id)
            send_id = conn.execute(
                text(
                    "INSERT INTO campaign_sends (workspace_id, campaign_id, status, scheduled_at, created_at, "
                    "started_at, finished_at, audience_size) "
                    "VALUES (:w, :c, 'completed', now(), now(), now(), now(), 0) RETURNING id"
                ),
                {"w": WORKSPACE, "c": campaign.id},
            ).scalar_one()
            conn.execute(
                text(
                    """
                    INSERT INTO campaign_deliveries (send_id, user_id, status, reason, attempts, updated_at)
                    SELECT :s, m.user_id, CASE WHEN m.user_id % 10 = 3 THEN 'skipped' WHEN m.user_id % 50 = 1
                                               THEN 'failed' ELSE 'sent' END,
                           CASE WHEN m.user_id % 10 = 3 THEN 'unreachable: no email address' END, 1, now()
                    FROM cohort_members m JOIN cohorts c ON c.id = m.cohort_pk
                    WHERE c.workspace_id = :w AND c.cohort_id = :cohort ORDER BY m.user_id LIMIT 10000
                    """
                ),
                {"s": send_id, "w": WORKSPACE, "cohort": f"cohort-{j + 1}"},
            )
            conn.execute(
                text(
                    "UPDATE campaign_sends SET audience_size = (SELECT count(*) FROM campaign_deliveries "
                    "WHERE send_id = :s) WHERE id = :s"
                ),
                {"s": send_id},
            )
        canvas_ids = []
        for k in range(CANVASES):
            created = canvas.create_canvas(
                conn,
                WORKSPACE,
                {
                    "name": f"Journey {k + 1:02}",
                    "entry_segment_id": segment_ids[k],
                    "steps": [
                        {"id": "hello", "type": "message", "next": "wait", "message": {
                            "channel": "email", "from_address": "news@acme.example", "subject": "Welcome",
                            "text": "Hello"}},
                        {"id": "wait", "type": "delay", "days": 2, "next": "split"},
                        {"id": "split", "type": "split", "paths": [
                            {"name": "Pro", "next": "offer", "filter": {"type": "custom_attribute",
                                                                      "attribute": "plan", "operator": "equals",
                                                                      "value": "pro"}}]},
                        {"id": "offer", "type": "message", "message": {
                            "channel": "webhook", "url": "https://hooks.example/offer", "body": {"id": "x"}}},
                    ],
                },
            )  # fmt: skip
            canvas_ids.append(created.id)
        active = canvas_ids[0]
        conn.execute(text("UPDATE canvases SET status = 'active', started_at = now() WHERE id = :c"), {"c": active})
        conn.execute(
            text(
                """
                INSERT INTO canvas_positions (canvas_id, user_id, step_id, state, due_at, entered_at, updated_at)
                SELECT CAST(:c AS varchar), m.user_id, 'wait', 'active', now() + interval '1 day', now(), now()
                FROM cohort_members m JOIN cohorts c ON c.id = m.cohort_pk
                WHERE c.workspace_id = :w AND c.cohort_id = 'cohort-1' ORDER BY m.user_id LIMIT 50000
                """
            ),
            {"c": active, "w": WORKSPACE},
        )
        for step, event in (("hello", "entered"), ("wait", "entered")):
            conn.execute(
                text(
                    "INSERT INTO canvas_step_events (canvas_id, user_id, step_id, event, at) "
                    "SELECT CAST(:c AS varchar), user_id, :s, :e, now() FROM canvas_positions WHERE canvas_id = :c"
                ),
                {"c": active, "s": step, "e": event},
            )
        conn.execute(
            text(
                "INSERT INTO canvas_deliveries (canvas_id, step_id, user_id, status, attempts, updated_at) "
                "SELECT CAST(:c AS varchar), 'hello', user_id, 'sent', 1, now() "
                "FROM canvas_positions WHERE canvas_id = :c"
            ),
            {"c": active},
        )
        create_user(conn, EMAIL, "admin", PASSWORD, [WORKSPACE])
        braze_id = conn.execute(text("SELECT braze_id FROM users WHERE id = :u"), {"u": user_id}).scalar_one()
        memberships = conn.execute(text("SELECT count(*) FROM cohort_members")).scalar_one()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM (ANALYZE)"))
    return {
        "seconds": time.perf_counter() - started,
        "segments": segment_ids,
        "campaigns": campaign_ids,
        "canvases": canvas_ids,
        "braze_id": braze_id,
        "memberships": int(memberships),
    }


def sign_in(base_url: str) -> httpx.Client:
    client = httpx.Client(base_url=base_url, timeout=120, follow_redirects=False)
    form = client.get("/dashboard/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token, form.text[:500]
    answer = client.post("/dashboard/login", data={"email": EMAIL, "password": PASSWORD, "csrf_token": token.group(1)})
    assert answer.status_code == 303, answer.text[:500]
    return client


def timed(call: Callable[[], httpx.Response], repeat: int) -> tuple[list[float], int]:
    first = call()  # warm-up: caches, the first query plan
    times = []
    status = first.status_code
    for _ in range(repeat):
        t0 = time.perf_counter()
        status = call().status_code
        times.append((time.perf_counter() - t0) * 1000)
    return times, status


def builder_filters() -> list[tuple[str, dict[str, str]]]:
    """The builder's form as the live script posts it, for several filters."""

    def cohort(cohort_id: str, operator: str = "includes") -> dict[str, str]:
        return {"g0.f0.kind": f"cohort:{PARTNER}", "g0.f0.operator": operator, "g0.f0.cohort": cohort_id}

    fr = {"g0.f1.kind": "standard_attribute", "g0.f1.attribute": "country", "g0.f1.operator": "equals",
          "g0.f1.value": "FR", "g0.op": "and"}  # fmt: skip
    return [
        ("Hightouch Cohorts includes the largest cohort (N/10)", cohort("cohort-1")),
        ("… AND Country equals FR", {**cohort("cohort-1"), **fr}),
        ("… does not include, AND Country equals FR", {**cohort("cohort-1", "does_not_include"), **fr}),
        (
            "two cohorts OR'd (N/10 and N/100)",
            {
                **cohort("cohort-1"),
                "g0.op": "or",
                "g0.f1.kind": f"cohort:{PARTNER}",
                "g0.f1.operator": "includes",
                "g0.f1.cohort": "cohort-2",
            },
        ),
        (
            "a cohort (N/100) AND custom attribute plan = pro",
            {
                **cohort("cohort-2"),
                "g0.op": "and",
                "g0.f1.kind": "custom_attribute",
                "g0.f1.attribute": "plan",
                "g0.f1.operator": "equals",
                "g0.f1.value": "pro",
            },
        ),
    ]


def measure(base_url: str, seeded: dict[str, Any], repeat: int, builder_only: bool) -> list[dict[str, Any]]:
    client = sign_in(base_url)
    w = f"/dashboard/w/{WORKSPACE}"
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get(f"{w}/segments/new").text)
    assert csrf
    token = csrf.group(1)
    rows: list[dict[str, Any]] = []
    if not builder_only:
        rows = measure_pages(client, seeded, repeat)
    rows += measure_builder(client, token, repeat)
    client.close()
    return rows


def measure_pages(client: httpx.Client, seeded: dict[str, Any], repeat: int) -> list[dict[str, Any]]:
    w = f"/dashboard/w/{WORKSPACE}"
    segment, campaign, journey = seeded["segments"][1], seeded["campaigns"][0], seeded["canvases"][0]
    draft = seeded["canvases"][1]
    send_id = re.findall(r"/sends/(\d+)\"", client.get(f"{w}/campaigns/{campaign}").text)[0]
    pages = [
        ("Home", f"{w}/"),
        ("Segments (100)", f"{w}/segments"),
        ("Segment builder: new (1,000 cohorts offered)", f"{w}/segments/new"),
        ("Segment builder: a saved segment", f"{w}/segments/{segment}"),
        ("Segment: preview members (100)", f"{w}/segments/{segment}/preview"),
        ("Cohorts (1,000, with sizes)", f"{w}/cohorts"),
        ("Cohort: the largest (N/10), import history", f"{w}/cohorts/{PARTNER}/cohort-1"),
        ("Campaigns (20)", f"{w}/campaigns"),
        ("Campaign: page with its sends", f"{w}/campaigns/{campaign}"),
        ("Campaign: the sends fragment it polls", f"{w}/campaigns/{campaign}/sends"),
        ("Campaign: a send's log (100)", f"{w}/campaigns/{campaign}/sends/{send_id}"),
        ("Campaign editor: new, for a segment", f"{w}/campaigns/new?segment={segment}"),
        ("Campaign editor: edit, with preview", f"{w}/campaigns/{campaign}/edit"),
        ("Canvas (10)", f"{w}/canvas"),
        ("Canvas: active, 50,000 users, flow with counts", f"{w}/canvas/{journey}"),
        ("Canvas editor: a draft", f"{w}/canvas/{draft}/edit"),
        ("Users: search", f"{w}/users"),
        ("Users: found by external ID (redirect)", f"{w}/users?by=external_id&q=user-1"),
        ("Users: found by email address", f"{w}/users?by=email&q=user2%40example.com"),
        ("User profile (cohorts, messages)", f"{w}/users/{seeded['braze_id']}"),
        ("Technology Partners", f"{w}/technology-partners"),
        ("Technology Partners > Hightouch", f"{w}/technology-partners/{PARTNER}"),
        ("Settings: APIs and Identifiers", f"{w}/settings/api-keys"),
        ("Settings: Company Users", f"{w}/settings/users"),
    ]
    rows: list[dict[str, Any]] = []
    for label, path in pages:
        times, status = timed(lambda path=path: client.get(path), repeat)  # type: ignore[misc]
        rows.append({"kind": "page", "label": label, "path": path, "status": status, "ms": times})
        print(f"  {label}: median {statistics.median(times):.0f} ms, worst {max(times):.0f} ms ({status})")
    return rows


def measure_builder(client: httpx.Client, token: str, repeat: int) -> list[dict[str, Any]]:
    w = f"/dashboard/w/{WORKSPACE}"
    rows: list[dict[str, Any]] = []
    headers = {"X-Requested-With": "cohortflow-live"}
    for label, fields in builder_filters():
        # What the live script sends as a filter changes: the size panel (the exact total), then, as soon as it is
        # in, the reachable counts it asks for.
        for fragment, kind in (("segment-size", "size update"), ("segment-reach", "reachable counts")):
            data = {"csrf_token": token, "fragment": fragment, "name": "", **fields}

            def post(data: dict[str, str] = data) -> httpx.Response:
                return client.post(f"{w}/segments/new", data=data, headers=headers)

            answer = post()
            found = re.search(r'id="(?:size-total|size-email)">([\d,]+)<', answer.text)
            times, status = timed(post, repeat)
            figure = found.group(1) if found else answer.text[:300]
            rows.append({"kind": kind, "label": label, "status": status, "ms": times, "size": figure})
            print(f"  {kind}, {label}: {figure}, median {statistics.median(times):.0f} ms")
    return rows


@contextlib.contextmanager
def _kept(url: str) -> Iterator[str]:
    yield url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="50k users, 2 repeats (CI)")
    parser.add_argument("--builder-only", action="store_true", help="only the builder's size updates")
    parser.add_argument("--postgres", default=os.environ.get("COHORTFLOW_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    parser.add_argument("--json-out", help="write every timing here")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument(
        "--reuse", metavar="URL", help="a database kept by --keep: measure the builder only, no seeding"
    )
    args = parser.parse_args()
    users = 50_000 if args.quick else args.users
    repeat = 2 if args.quick else args.repeat
    info = {**machine(), "users": users, "repeat": repeat, "started_at": datetime.now(UTC).isoformat()}
    print(f"machine: {info}")
    with throwaway_database("postgres", args.postgres, keep=args.keep) if not args.reuse else _kept(args.reuse) as url:
        engine = make_engine(url)
        migrate(engine)
        if args.reuse:
            with engine.connect() as conn:
                users = int(
                    conn.execute(
                        text("SELECT count(*) FROM users WHERE workspace_id = :w"), {"w": WORKSPACE}
                    ).scalar_one()
                )
            seeded = {"seconds": 0.0, "memberships": 0, "segments": [], "campaigns": [], "canvases": [], "braze_id": ""}
            args.builder_only = True
        else:
            seeded = seed(engine, users)
        engine.dispose()
        print(f"seeded {users:,} users, {seeded['memberships']:,} memberships in {seeded['seconds']:.0f} s")
        server = start_server(url, extra_env={"COHORTFLOW_LOG_LEVEL": "WARNING"}, startup_seconds=120)
        try:
            rows = measure(server.base_url, seeded, repeat, args.builder_only)
        finally:
            server.stop()
    info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    info["finished_at"] = datetime.now(UTC).isoformat()
    print(f"\n{users:,} users, {seeded['memberships']:,} cohort memberships, seeded in {seeded['seconds']:.0f} s; "
          f"load average {info['load_average_at_start']} at the start, "
          f"{info['load_average_at_end']} at the end\n")  # fmt: skip
    print("| what | median | worst |")
    print("|---|---:|---:|")
    for row in rows:
        extra = {
            "size update": f" ({row.get('size')} users)",
            "reachable counts": f" ({row.get('size')} by email)",
        }.get(row["kind"], "")
        ok = "" if row["status"] in (200, 303) else f" **HTTP {row['status']}**"
        median, worst = statistics.median(row["ms"]), max(row["ms"])
        print(f"| {row['kind']}: {row['label']}{extra}{ok} | {median:.0f} ms | {worst:.0f} ms |")
    if args.json_out:
        with open(args.json_out, "w") as out:
            json.dump({"machine": info, "rows": rows, "seed_seconds": seeded["seconds"]}, out, indent=2)


if __name__ == "__main__":
    main()
