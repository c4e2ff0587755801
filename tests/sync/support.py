"""Helpers for sync tests: a DuckDB warehouse, workspace files, a fault-injecting Braze and platform lookups."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pyarrow as pa
import yaml
from sqlalchemy import select

from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.store.schema import cohort_members, cohorts, user_aliases, user_devices, users
from cohortflow.wire import Messages
from cohortflow.wire.cohort_import import (
    WireValidationError,
    parse_cohort_name_request,
    parse_cohort_users_request,
)

FAST_RETRY = {"max_attempts": 12, "initial_backoff_seconds": 0.01, "max_backoff_seconds": 0.2}


# ------------------------------------------------------------------ warehouse


class Warehouse:
    """A DuckDB file with one table ``customers``; each ``set_rows`` replaces its content."""

    COLUMNS = ("id", "uid", "email", "device")

    def __init__(self, path: Path) -> None:
        self.path = path

    def set_rows(self, rows: list[dict[str, Any]]) -> None:
        con = duckdb.connect(str(self.path))
        try:
            con.execute("CREATE OR REPLACE TABLE customers (id VARCHAR, uid VARCHAR, email VARCHAR, device VARCHAR)")
            if rows:
                con.executemany(
                    "INSERT INTO customers VALUES (?, ?, ?, ?)",
                    [[r.get(c) for c in self.COLUMNS] for r in rows],
                )
        finally:
            con.close()

    def set_range(self, ids: list[int] | range, prefix: str = "u") -> None:
        """Rows whose external id is ``{prefix}{i}`` for each i, a bulk shortcut for large models."""
        con = duckdb.connect(str(self.path))
        try:
            con.register("id_list", pa.table({"i": pa.array(list(ids), pa.int64())}))
            con.execute(
                "CREATE OR REPLACE TABLE customers AS SELECT CAST(i AS VARCHAR) AS id, "
                f"'{prefix}' || i AS uid, NULL::VARCHAR AS email, NULL::VARCHAR AS device FROM id_list"
            )
        finally:
            con.close()


def write_workspace(
    directory: Path,
    *,
    endpoint: str,
    partner: str,
    partner_api_key: str,
    data_import_key: str,
    identifier: dict[str, Any] | None = None,
    cohort: dict[str, Any] | None = None,
    destination: dict[str, Any] | None = None,
    sync: dict[str, Any] | None = None,
    warehouse: str = "warehouse.duckdb",
    model: dict[str, Any] | None = None,
    sync_name: str = "vip",
) -> Path:
    doc = {
        "version": 1,
        "sources": {"warehouse": {"type": "duckdb", "path": warehouse}},
        "models": {
            "customers": model or {"source": "warehouse", "table": "customers", "primary_key": "id"},
        },
        "destinations": {
            "platform": {
                "type": "braze_cohorts",
                "rest_endpoint": endpoint,
                "partner": partner,
                "partner_api_key": partner_api_key,
                "data_import_key": data_import_key,
                "timeout_seconds": 5,
                "concurrency": 4,
                "retry": FAST_RETRY,
                **(destination or {}),
            }
        },
        "syncs": {
            sync_name: {
                "model": "customers",
                "destination": "platform",
                "identifier": identifier or {"external_id": "uid"},
                "cohort": cohort or {"mode": "create", "name": "VIP customers"},
                **(sync or {}),
            }
        },
    }
    path = directory / "cohortflow.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run_cli(
    workspace: Path, state_url: str, *args: str, timeout: float = 120, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cohortflow", "sync", "-f", str(workspace), "--state-url", state_url, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
    )


# ------------------------------------------------------------------ fault-injecting Braze


@dataclass
class Request:
    at: float
    path: str
    status: int
    cohort_id: str | None = None
    identifiers: list[tuple[str, str, bool]] = field(default_factory=list)  # (kind, value, remove)
    timed_out: bool = False


class FakeBraze:
    """The partner cohort import API on loopback, with a user store and injectable faults.

    It parses requests with the shared wire parser, so a sender that breaks the contract gets Braze's 400.
    Users: ``external_ids`` (identified), ``aliases`` ((label, name) -> user), ``anonymous_devices``
    (device -> anonymous user). Membership is per cohort id, as user keys.
    """

    def __init__(self, partner: str = "hightouch", partner_api_key: str = "pak", client_secret: str = "dik") -> None:
        self.partner = partner
        self.partner_api_key = partner_api_key
        self.client_secret = client_secret
        self.users: set[str] = set()
        self.aliases: dict[tuple[str, str], str] = {}
        self.devices: dict[str, str] = {}
        self.members: dict[str, set[str]] = {}
        self.names: dict[str, str] = {}
        self.log: list[Request] = []
        self.fault_rate = 0.0
        self.faults: list[int | str] = [429, 423, 500, "timeout"]
        self.retry_after: float | None = None
        self.timeout_sleep = 1.5
        self.bad_values: set[str] = set()
        self.delay = 0.0
        self.fail_next: list[int | str] = []
        # (status, body) answered to every /cohorts/users request instead of applying it (a broken proxy).
        self.answer_override: tuple[int, Any] | None = None
        self.miscount = 0  # added to the ``received`` it reports (a receiver that did not apply what was sent)
        self.rng = random.Random(7)
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                status, payload, headers = fake.handle(self.path, raw)
                if status == 0:
                    self.close_connection = True  # no answer: the client sees the connection drop
                    return
                body = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeBraze:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -------------------------------------------------------------- behaviour

    def _fault(self, membership: bool) -> int | str | None:
        with self.lock:
            if self.fail_next and membership:  # fail_next: the next /cohorts/users requests only
                return self.fail_next.pop(0)
            if self.fault_rate and self.rng.random() < self.fault_rate:
                return self.rng.choice(self.faults)
        return None

    def _resolve(self, kind: str, value: str, label: str = "") -> str | None:
        if kind == "e":
            return value if value in self.users else None
        if kind == "a":
            return self.aliases.get((label, value))
        return self.devices.get(value)

    def handle(self, path: str, raw: bytes) -> tuple[int, Any, dict[str, str]]:
        if self.delay:
            time.sleep(self.delay)
        prefix = f"/partners/{self.partner}"
        now = time.monotonic()
        try:
            body = json.loads(raw)
        except ValueError:
            return 400, {"message": Messages.BODY_NOT_JSON_OBJECT}, {}
        if body.get("partner_api_key") != self.partner_api_key:
            return self._logged(Request(now, path, 401), 401, {"message": Messages.INVALID_PARTNER_API_KEY})
        if body.get("client_secret") != self.client_secret:
            return self._logged(Request(now, path, 401), 401, {"message": Messages.INVALID_CLIENT_SECRET})
        try:
            if path == f"{prefix}/cohorts":
                named = parse_cohort_name_request(body)
                record = Request(now, path, 201, named.cohort_id)
                fault = self._inject(record)
                if fault is not None:
                    return fault
                with self.lock:
                    self.names[named.cohort_id] = named.name
                    self.members.setdefault(named.cohort_id, set())
                return self._logged(record, 201, {"message": "success"})
            if path == f"{prefix}/cohorts/users":
                req = parse_cohort_users_request(body)
                ids = [
                    (k, v, lb, c.should_remove)
                    for c in req.cohort_changes
                    for k, v, lb in (
                        [("e", u, "") for u in c.user_ids]
                        + [("d", d, "") for d in c.device_ids]
                        + [("a", a.alias_name, a.alias_label) for a in c.aliases]
                    )
                ]
                record = Request(now, path, 201, req.cohort_id, [(k, v, rm) for k, v, _, rm in ids])
                if self.answer_override is not None:
                    record.status = self.answer_override[0]
                    return self._logged(record, *self.answer_override)
                fault = self._inject(record)
                if fault is not None:
                    return fault
                if any(v in self.bad_values for _, v, _, _ in ids):
                    record.status = 400
                    return self._logged(record, 400, {"message": Messages.COHORT_CHANGES_INVALID})
                counts = {"received": len(ids), "matched": 0, "unmatched": 0, "added": 0, "removed": 0, "unchanged": 0}
                with self.lock:
                    members = self.members.setdefault(req.cohort_id, set())
                    self.names.setdefault(req.cohort_id, req.cohort_id)
                    for kind, value, label, remove in ids:
                        user = self._resolve(kind, value, label)
                        if user is None:
                            counts["unmatched"] += 1
                            continue
                        counts["matched"] += 1
                        if remove and user in members:
                            members.discard(user)
                            counts["removed"] += 1
                        elif not remove and user not in members:
                            members.add(user)
                            counts["added"] += 1
                        else:
                            counts["unchanged"] += 1
                if record.timed_out:
                    # The change is applied but the client never hears back: a retry must be harmless.
                    if record.status != -1:
                        time.sleep(self.timeout_sleep)
                    return 0, None, {}
                counts["received"] += self.miscount
                return self._logged(record, 201, {"message": "success", **counts})
            return self._logged(Request(now, path, 404), 404, {"message": "Not found"})
        except WireValidationError as exc:
            return self._logged(Request(now, path, 400), 400, {"message": exc.message})

    def _inject(self, record: Request) -> tuple[int, Any, dict[str, str]] | None:
        """A fault answer for this request, or None. A timeout is logged and applied, then never answered."""
        fault = self._fault(record.path.endswith("/cohorts/users"))
        if fault is None:
            return None
        if fault in ("timeout", "lost"):
            # "lost": applied, then the connection drops at once (status -1 in the log); "timeout": applied,
            # then no answer before the client gives up.
            record.status = 0 if fault == "timeout" else -1
            record.timed_out = True
            self._logged(record, 0, None)
            if not record.path.endswith("/cohorts/users"):
                if fault == "timeout":
                    time.sleep(self.timeout_sleep)
                return 0, None, {}
            return None
        assert isinstance(fault, int)
        record.status = fault
        headers = {"retry-after": str(self.retry_after)} if self.retry_after is not None else {}
        msg = {429: Messages.RATE_LIMITED, 423: Messages.RESOURCE_LOCKED}.get(fault, "Internal error")
        return self._logged(record, fault, {"message": msg}, headers)

    def _logged(
        self, record: Request, status: int, payload: Any, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, dict[str, str]]:
        with self.lock:
            self.log.append(record)
        return status, payload, headers or {}

    def sent(self, status: int | None = 201) -> list[tuple[str, str, bool]]:
        """Identifiers of the membership requests answered with ``status`` (None: every request)."""
        return [i for r in self.log if status is None or r.status == status for i in r.identifiers]

    def membership_requests(self) -> list[Request]:
        return [r for r in self.log if r.path.endswith("/cohorts/users")]


# ------------------------------------------------------------------ a faulty network in front of a real server


class FaultProxy:
    """A loopback proxy to a real server that injects what a network and a busy receiver do.

    Per request, with probability ``rate``, one of ``faults``:
    ``429`` / ``423`` / ``500`` / ``503`` answered without forwarding; ``drop``: the connection closes before
    forwarding; ``lost``: forwarded (the server applies it), then the connection closes without the answer;
    ``slow``: forwarded, then the answer is held past the client's timeout. ``answer`` set to (status, body)
    answers every request itself without forwarding (a broken proxy). ``counts`` tallies what happened.
    """

    FAULTS: tuple[str, ...] = ("429", "423", "500", "503", "drop", "lost", "slow")

    def __init__(self, upstream: str, *, rate: float = 0.0, seed: int = 1, slow_seconds: float = 1.0) -> None:
        self.upstream = upstream
        self.rate = rate
        self.faults: tuple[str, ...] = self.FAULTS
        self.slow_seconds = slow_seconds
        self.answer: tuple[int, Any] | None = None
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.client = httpx.Client(base_url=upstream, timeout=60)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                fault = proxy._choose()
                if proxy.answer is not None:
                    self._reply(proxy.answer[0], json.dumps(proxy.answer[1]).encode(), {})
                    return
                if fault in ("429", "423", "500", "503"):
                    headers = {"content-type": "application/json"}
                    if fault == "429":
                        headers["retry-after"] = "0"
                    self._reply(int(fault), json.dumps({"message": f"injected {fault}"}).encode(), headers)
                    return
                if fault == "drop":
                    self.close_connection = True
                    return
                answer = proxy.client.post(self.path, content=raw, headers={"content-type": "application/json"})
                if fault == "lost":
                    self.close_connection = True
                    return
                if fault == "slow":
                    time.sleep(proxy.slow_seconds)
                    self.close_connection = True
                    return
                keep = {k: v for k, v in answer.headers.items() if k.lower() in ("content-type", "retry-after")}
                self._reply(answer.status_code, answer.content, keep)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _choose(self) -> str | None:
        with self.lock:
            fault = self.rng.choice(self.faults) if self.rate and self.rng.random() < self.rate else None
            key = fault or "forwarded"
            self.counts[key] = self.counts.get(key, 0) + 1
            return fault

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.client.close()


# ------------------------------------------------------------------ the real platform


def seed_users(base_url: str, rest_api_key: str, objects: list[dict[str, Any]]) -> None:
    """Create users through /users/track (75 objects a request)."""
    with httpx.Client(base_url=base_url, timeout=30, headers={"authorization": f"Bearer {rest_api_key}"}) as c:
        for start in range(0, len(objects), 75):
            r = c.post("/users/track", json={"attributes": objects[start : start + 75]})
            assert r.status_code == 201, r.text


def platform_members(runtime: PlatformRuntime, workspace_id: str, cohort_id: str) -> set[str]:
    """The cohort's members as the platform stores them: external id, else 'alias:<label>:<name>', else devices."""
    with runtime.engine.connect() as conn:
        pk = conn.execute(
            select(cohorts.c.id).where(cohorts.c.workspace_id == workspace_id, cohorts.c.cohort_id == cohort_id)
        ).scalar()
        if pk is None:
            return set()
        rows = conn.execute(
            select(users.c.id, users.c.external_id)
            .join(cohort_members, cohort_members.c.user_id == users.c.id)
            .where(cohort_members.c.cohort_pk == pk)
        ).all()
        out = set()
        for uid, external_id in rows:
            if external_id is not None:
                out.add(external_id)
                continue
            alias = conn.execute(
                select(user_aliases.c.alias_label, user_aliases.c.alias_name).where(user_aliases.c.user_id == uid)
            ).first()
            if alias is not None:
                out.add(f"alias:{alias[0]}:{alias[1]}")
                continue
            devices = conn.execute(select(user_devices.c.device_id).where(user_devices.c.user_id == uid)).scalars()
            out.add("device:" + ",".join(sorted(devices)))
        return out


def cohort_name(runtime: PlatformRuntime, workspace_id: str, cohort_id: str) -> str | None:
    with runtime.engine.connect() as conn:
        return conn.execute(
            select(cohorts.c.name).where(cohorts.c.workspace_id == workspace_id, cohorts.c.cohort_id == cohort_id)
        ).scalar()
