"""Campaign send throughput to a local webhook receiver and a local SMTP server: messages per second.

For each database (SQLite, PostgreSQL) and channel (webhook, email), seeds a throwaway database with N users
in a partner cohort, creates a segment on the cohort and a campaign with a Liquid template, then times the
platform's own :func:`run_send` from the start of the send (audience evaluation included) to its end. Every
message goes through the full path: the per-user claim committed before delivery, rendering, the channel
call, and the committed outcome. The receivers run in their own processes so they do not share the
sender's interpreter: a threaded HTTP server answering 200, and aiosmtpd's ``Sink`` handler.

Usage::

    python bench/bench_campaigns.py                    # 2,000 users, both databases, both channels
    python bench/bench_campaigns.py --users 10000
    python bench/bench_campaigns.py --quick            # CI: 200 users, SQLite only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from sqlalchemy import insert, select

from bench.harness import DEFAULT_POSTGRES_URL, machine, throwaway_database
from cohortflow.platform.import_keys import create_import_key
from cohortflow.platform.messaging.campaigns import create_campaign, request_send, run_send
from cohortflow.platform.partners import create_partner
from cohortflow.platform.process import free_port
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.segments.service import create_segment
from cohortflow.platform.store.schema import cohort_members, cohorts, partners, users
from cohortflow.platform.workspaces import create_workspace
from cohortflow.settings import MessagingSettings, PlatformSettings


def serve_webhooks(port: int) -> None:
    """Receiver process: answers 200 to every POST after reading the body."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a production receiver would

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


@contextmanager
def receiver(kind: str) -> Iterator[int]:
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
        yield port
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
            for i in range(n_users)
        ]
        conn.execute(insert(users), rows)
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
        user_ids = conn.execute(select(users.c.id).where(users.c.workspace_id == ws.id)).scalars().all()
        conn.execute(
            insert(cohort_members), [{"cohort_pk": cohort_pk, "user_id": u, "added_at": now} for u in user_ids]
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


def run_one(backend: str, channel: str, n_users: int, postgres_url: str) -> dict[str, Any]:
    with throwaway_database(backend, postgres_url) as url, receiver(channel) as port:
        runtime = PlatformRuntime.open(PlatformSettings(database_url=url))
        try:
            workspace_id, segment_id = seed(runtime, n_users)
            settings = MessagingSettings(smtp_host="127.0.0.1", smtp_port=port)
            with runtime.transaction() as conn:
                campaign = create_campaign(
                    conn,
                    workspace_id,
                    {"name": "bench", "segment_ids": [segment_id], "message": message(channel, port)},
                    settings=settings,
                )
                send = request_send(conn, workspace_id, campaign.id)
            started = time.perf_counter()
            result = run_send(runtime.engine, settings, send.id)
            elapsed = time.perf_counter() - started
        finally:
            runtime.close()
    assert result is not None and result.completed, result
    assert result.counts["sent"] == n_users, result.counts
    return {
        "backend": backend,
        "channel": channel,
        "users": n_users,
        "sent": result.counts["sent"],
        "seconds": round(elapsed, 3),
        "messages_per_second": round(result.counts["sent"] / elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--backend", action="append", choices=["sqlite", "postgres"])
    parser.add_argument("--channel", action="append", choices=["webhook", "email"])
    parser.add_argument("--quick", action="store_true", help="200 users on SQLite (CI smoke run)")
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
    results = [run_one(b, c, n_users, args.postgres) for b in backends for c in channels]
    print(json.dumps({"machine": machine(), "results": results}, indent=2))
    print()
    print("| database | channel | users | seconds | messages/s |")
    print("|---|---|---:|---:|---:|")
    for r in results:
        print(f"| {r['backend']} | {r['channel']} | {r['users']} | {r['seconds']} | {r['messages_per_second']} |")


if __name__ == "__main__":
    main()
