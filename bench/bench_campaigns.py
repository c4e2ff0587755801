"""Campaign send throughput to a local webhook receiver and a local SMTP server: messages per second.

For each database (SQLite, PostgreSQL) and channel (webhook, email), seeds a throwaway database with N users
in a partner cohort, creates a segment on the cohort and a campaign with a Liquid template, then times the
platform's own :func:`run_send` from the start of the send (audience evaluation included) to its end, in
``--workers`` sender processes sharing the send (one on SQLite). Every message goes through the full path:
claimed in a batch, rendered, delivered, its outcome recorded in a batch. The receivers run in their own
processes: an aiohttp server answering 200 (keep-alive), and aiosmtpd's ``Sink`` handler.

Besides throughput it reports the load average and CPU per message: the senders', PostgreSQL's and the
receiver's, in microseconds (the machine is shared, so CPU per message is the steadier figure).

Usage::

    python -m bench.bench_campaigns                    # 2,000 users, both databases, both channels
    python -m bench.bench_campaigns --users 1000000 --backend postgres --workers 2
    python -m bench.bench_campaigns --quick            # CI: 200 users, SQLite only
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import insert, literal, select

from bench.harness import DEFAULT_POSTGRES_URL, CpuMeter, machine, postgres_pids, throwaway_database
from cohortflow.platform.import_keys import create_import_key
from cohortflow.platform.messaging.campaigns import create_campaign, get_send, request_send, run_send
from cohortflow.platform.partners import create_partner
from cohortflow.platform.process import free_port
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.segments.service import create_segment
from cohortflow.platform.store.schema import cohort_members, cohorts, partners, users
from cohortflow.platform.workspaces import create_workspace
from cohortflow.settings import MessagingSettings, PlatformSettings
from cohortflow.sqltypes import TS


def serve_webhooks(port: int) -> None:
    """Receiver process: answers 200 to every POST after reading the body (aiohttp, keep-alive)."""
    from aiohttp import web

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/{tail:.*}", hook)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


@contextmanager
def receiver(kind: str) -> Iterator[subprocess.Popen[bytes]]:
    port = free_port()
    if kind == "webhook":
        cmd = [sys.executable, "-m", "bench.bench_campaigns", "--serve-webhook", str(port)]
    else:
        cmd = [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}", "-c", "aiosmtpd.handlers.Sink"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if kind == "webhook":
                    httpx.post(f"http://127.0.0.1:{port}/ping", content=b"{}", timeout=1)
                else:
                    import socket

                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except (httpx.TransportError, OSError):
                time.sleep(0.1)
        proc.port = port  # type: ignore[attr-defined]
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def seed(runtime: PlatformRuntime, n_users: int) -> tuple[str, str]:
    """A workspace with ``n_users`` identified users with an address, all in one partner cohort."""
    now = datetime.now(UTC)
    partner_name = f"bench-{uuid.uuid4().hex[:8]}"
    with runtime.transaction() as conn:
        ws = create_workspace(conn, "bench")
        create_partner(conn, partner_name)
        create_import_key(conn, ws.id, partner_name)
    chunk = 50_000
    for first in range(0, n_users, chunk):
        rows = [
            {
                "workspace_id": ws.id,
                "braze_id": uuid.uuid4().hex[:24],
                "external_id": f"user-{i}",
                "email": f"user{i}@bench.example",
                "first_name": f"User{i}" if i % 3 else None,
                "country": "FR",
                "custom_attributes": {"plan": "gold" if i % 2 else "silver", "visits": i % 50},
                "random_bucket": i % 10000,
                "created_at": now,
                "updated_at": now,
            }
            for i in range(first, min(n_users, first + chunk))
        ]
        with runtime.transaction() as conn:
            conn.execute(insert(users), rows)
    with runtime.transaction() as conn:
        partner_id = conn.execute(select(partners.c.id).where(partners.c.name == partner_name)).scalar_one()
        cohort_pk = conn.execute(
            insert(cohorts)
            .values(
                workspace_id=ws.id,
                partner_id=partner_id,
                cohort_id="bench",
                name="Bench",
                created_at=now,
                updated_at=now,
            )
            .returning(cohorts.c.id)
        ).scalar_one()
        conn.execute(
            insert(cohort_members).from_select(
                ["cohort_pk", "user_id", "added_at"],
                select(literal(cohort_pk), users.c.id, literal(now, TS)).where(users.c.workspace_id == ws.id),
            )
        )
        segment = create_segment(
            conn, ws.id, "bench", {"type": "partner_cohort", "partner": partner_name, "cohort_id": "bench"}
        )
    return ws.id, segment.id


def message(channel: str, port: int) -> dict[str, Any]:
    if channel == "webhook":
        return {
            "channel": "webhook",
            "url": f"http://127.0.0.1:{port}/hook",
            "body": {"user": "{{ external_id }}", "text": 'Hello {{ first_name | default: "there" }}, {{ plan }}'},
        }
    return {
        "channel": "email",
        "from_address": "Bench <bench@acme.example>",
        "subject": 'Hello {{ first_name | default: "there" }}',
        "text": "Your plan: {{ plan }}. Visits: {{ visits }}.",
        "html": "<p>Your plan: <b>{{ plan }}</b></p>",
    }


def _sender(url: str, send_id: int, port: int, batch_size: int, ready: Any, go: Any, out: Any, done: Any) -> None:
    """One sender process: waits for the start signal, runs the send as far as it can, reports its CPU."""
    runtime = PlatformRuntime.open(PlatformSettings(database_url=url))
    settings = MessagingSettings(smtp_host="127.0.0.1", smtp_port=port, delivery_batch_size=batch_size)
    ready.set()
    go.wait()
    started = resource.getrusage(resource.RUSAGE_SELF)
    run_send(runtime.engine, settings, send_id)
    ended = resource.getrusage(resource.RUSAGE_SELF)
    out.put(ended.ru_utime + ended.ru_stime - started.ru_utime - started.ru_stime)
    done.wait()  # keep the database connections (their backends' CPU is measured) until the measure is taken
    runtime.close()


def run_one(
    backend: str, channel: str, n_users: int, postgres_url: str, workers: int, batch_size: int
) -> dict[str, Any]:
    workers = workers if backend == "postgres" else 1
    with throwaway_database(backend, postgres_url) as url, receiver(channel) as recv:
        port = recv.port  # type: ignore[attr-defined]
        runtime = PlatformRuntime.open(PlatformSettings(database_url=url))
        try:
            workspace_id, segment_id = seed(runtime, n_users)
            if backend == "postgres":
                with runtime.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    conn.exec_driver_sql("VACUUM ANALYZE")
            settings = MessagingSettings(smtp_host="127.0.0.1", smtp_port=port)
            with runtime.transaction() as conn:
                campaign = create_campaign(
                    conn,
                    workspace_id,
                    {"name": "bench", "segment_ids": [segment_id], "message": message(channel, port)},
                    settings=settings,
                )
                send = request_send(conn, workspace_id, campaign.id)
            ctx = multiprocessing.get_context("spawn")
            go, out, done = ctx.Event(), ctx.Queue(), ctx.Event()
            readies = [ctx.Event() for _ in range(workers)]
            procs = [
                ctx.Process(target=_sender, args=(url, send.id, port, batch_size, readies[i], go, out, done))
                for i in range(workers)
            ]
            for proc in procs:
                proc.start()
            for ready in readies:
                ready.wait(120)
            database = url.rsplit("/", 1)[-1]
            db_cpu = CpuMeter(lambda: postgres_pids(database) if backend == "postgres" else [])
            receiver_cpu = CpuMeter(lambda: [recv.pid])
            load_before = os.getloadavg()[0]
            db_cpu.start()
            receiver_cpu.start()
            started = time.perf_counter()
            go.set()
            sender_cpu = sum(out.get(timeout=24 * 3600) for _ in procs)
            elapsed = time.perf_counter() - started
            db_seconds, receiver_seconds = db_cpu.stop(), receiver_cpu.stop()
            done.set()
            load_after = os.getloadavg()[0]
            for proc in procs:
                proc.join()
            with runtime.engine.connect() as conn:
                final = get_send(conn, workspace_id, campaign.id, send.id)
        finally:
            runtime.close()
    assert final.status == "completed" and final.counts["sent"] == n_users, final
    sent = final.counts["sent"]
    return {
        "backend": backend,
        "channel": channel,
        "users": n_users,
        "workers": workers,
        "sent": sent,
        "seconds": round(elapsed, 3),
        "messages_per_second": round(sent / elapsed, 1),
        "sender_cpu_us_per_message": round(sender_cpu / sent * 1e6, 1),
        "postgres_cpu_us_per_message": round(db_seconds / sent * 1e6, 1),
        "receiver_cpu_us_per_message": round(receiver_seconds / sent * 1e6, 1),
        "load_average": f"{load_before:.1f} -> {load_after:.1f}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--backend", action="append", choices=["sqlite", "postgres"])
    parser.add_argument("--channel", action="append", choices=["webhook", "email"])
    parser.add_argument("--quick", action="store_true", help="200 users on SQLite (CI smoke run)")
    parser.add_argument("--workers", type=int, default=2, help="Sender processes sharing the send (PostgreSQL).")
    parser.add_argument("--batch-size", type=int, default=500, help="Messages claimed per transaction.")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("COHORTFLOW_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="Server used to create and drop a throwaway cf_bench_* database.",
    )
    parser.add_argument("--serve-webhook", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_webhook:
        serve_webhooks(args.serve_webhook)
        return
    backends = args.backend or (["sqlite"] if args.quick else ["sqlite", "postgres"])
    channels = args.channel or ["webhook", "email"]
    n_users = 200 if args.quick else args.users
    results = []
    for b in backends:
        for c in channels:
            results.append(run_one(b, c, n_users, args.postgres, args.workers, args.batch_size))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"machine": machine(), "results": results}, indent=2))
    print()
    print("| database | channel | users | workers | seconds | messages/s ", end="")
    print("| CPU µs/msg: senders, PostgreSQL, receiver | load |")
    print("|---|---|---:|---:|---:|---:|---|---|")
    for r in results:
        cpu = (
            f"{r['sender_cpu_us_per_message']}, {r['postgres_cpu_us_per_message']}, {r['receiver_cpu_us_per_message']}"
        )
        print(
            f"| {r['backend']} | {r['channel']} | {r['users']} | {r['workers']} | {r['seconds']} "
            f"| {r['messages_per_second']} | {cpu} | {r['load_average']} |"
        )


if __name__ == "__main__":
    main()
