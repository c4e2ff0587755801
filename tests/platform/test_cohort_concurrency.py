"""Concurrent imports into one cohort are serializable, bounded lock waits end in 423, and a killed server
leaves no partial batch.

How the checks stay meaningful: every request carries a unique unknown identifier (its *tag*) first, so the
audit row's unmatched sample names the request it records. Replaying the requests serially in audit order (the
order the cohort lock granted) must then reproduce every audit row's counts, every acknowledged response's
counts, and the final membership exactly. Lost updates, interleaved batches or a half-applied request would each
break that equality.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.store.locking import lock_workspace_memberships
from cohortflow.platform.store.schema import cohorts
from cohortflow.wire.cohort_import import Messages
from tests.platform.test_cohort_import import (
    COHORTS,
    COHORTS_USERS,
    add_users,
    audit_rows,
    cohort_pk,
    members,
    name_body,
    snapshot,
    users_body,
)
from tests.support import ServerProcess, Tenant, make_tenant, start_server


@dataclass
class SentRequest:
    tag: str
    changes: list[dict[str, Any]]
    response: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class Replay:
    """The cohort as a serial execution of the requests gives it."""

    ids: dict[str, int]
    state: set[int] = field(default_factory=set)

    def apply(self, changes: list[dict[str, Any]]) -> tuple[int, int, int, int, int, int]:
        received = matched = added = removed = unchanged = 0
        for change in changes:
            for ext in change["user_ids"]:
                received += 1
                user = self.ids.get(ext)
                if user is None:
                    continue
                matched += 1
                if change.get("should_remove"):
                    if user in self.state:
                        self.state.discard(user)
                        removed += 1
                    else:
                        unchanged += 1
                elif user not in self.state:
                    self.state.add(user)
                    added += 1
                else:
                    unchanged += 1
        return received, matched, received - matched, added, removed, unchanged


def _counts(row: dict[str, Any]) -> tuple[int, int, int, int, int, int]:
    return (row["received"], row["matched"], row["unmatched"], row["added"], row["removed"], row["unchanged"])


def _random_changes(
    rng: random.Random, tag: str, pool: list[str], n_objects: int, per_object: int
) -> list[dict[str, Any]]:
    changes: list[dict[str, Any]] = []
    for k in range(n_objects):
        ids = rng.sample(pool, min(per_object, len(pool)))
        changes.append({"user_ids": ([tag] if k == 0 else []) + ids, "should_remove": rng.random() < 0.45})
    return changes


def _replay_against_audit(
    runtime: PlatformRuntime, tenant: Tenant, cohort_id: str, sent: dict[str, SentRequest], ids: dict[str, int]
) -> list[str]:
    """Check the audit against a serial replay; returns the tags in applied order."""
    replay = Replay(ids)
    order: list[str] = []
    for row in audit_rows(runtime, tenant, cohort_id):
        tag = row["unmatched_sample"][0]["user_id"]
        request = sent[tag]
        assert _counts(row) == replay.apply(request.changes), f"audit row of {tag} disagrees with a serial replay"
        if request.response is not None:
            assert _counts(row) == _counts(request.response)
        order.append(tag)
    assert len(order) == len(set(order)), "a request was applied twice"
    assert members(runtime, tenant, cohort_id) == replay.state
    return order


def test_eight_concurrent_clients_end_in_a_serial_order(
    server: ServerProcess, runtime: PlatformRuntime, tenant: Tenant
) -> None:
    clients, per_client = 8, 6
    owned = {i: [f"own-{i}-{k}" for k in range(12)] for i in range(clients)}
    contested = [f"contested-{k}" for k in range(15)]
    ids = add_users(runtime, tenant.workspace_id, [e for r in owned.values() for e in r] + contested)
    sent: dict[str, SentRequest] = {}
    plans: dict[int, list[SentRequest]] = {}
    for i in range(clients):
        rng = random.Random(1000 + i)
        plans[i] = []
        for j in range(per_client):
            tag = f"tag-{i}-{j}"
            request = SentRequest(tag, _random_changes(rng, tag, owned[i] + contested, rng.randint(1, 4), 10))
            plans[i].append(request)
            sent[tag] = request
    start = threading.Barrier(clients)

    def run(i: int) -> None:
        with httpx.Client(base_url=server.base_url, timeout=60) as client:
            start.wait()
            for request in plans[i]:
                body = users_body(tenant, "shared", *request.changes)
                r = client.post(COHORTS_USERS.format(tenant.partner), json=body)
                if r.status_code == 201:
                    request.response = r.json()
                else:
                    request.error = f"{r.status_code} {r.text}"

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert [r.error for r in sent.values() if r.error] == []
    order = _replay_against_audit(runtime, tenant, "shared", sent, ids)
    assert set(order) == set(sent)
    # Each client waited for each answer before sending the next, so its requests keep their order.
    for i in range(clients):
        mine = [tag for tag in order if tag.startswith(f"tag-{i}-")]
        assert mine == [r.tag for r in plans[i]]
    # Owned ranges are touched by one client only: their final state is that client's last word on them.
    final = members(runtime, tenant, "shared")
    for i in range(clients):
        for ext in owned[i]:
            last = None
            for request in plans[i]:
                for change in request.changes:
                    if ext in change["user_ids"]:
                        last = not change["should_remove"]
            if last is not None:
                assert (ids[ext] in final) == last


# ----------------------------------------------------------------------------------------- bounded lock wait


@pytest.fixture(scope="module")
def impatient_server(database_url: str, runtime: PlatformRuntime) -> Iterator[ServerProcess]:
    proc = start_server(database_url, extra_env={"COHORTFLOW_PLATFORM__COHORT_LOCK_WAIT_SECONDS": "0.5"})
    yield proc
    proc.stop()


def test_lock_held_past_the_bounded_wait_is_423_and_changes_nothing(
    impatient_server: ServerProcess, runtime: PlatformRuntime, backend: str
) -> None:
    tenant = make_tenant(runtime)
    ids = add_users(runtime, tenant.workspace_id, ["l1", "l2"])
    with httpx.Client(base_url=impatient_server.base_url, timeout=30) as client:
        assert (
            client.post(
                COHORTS_USERS.format(tenant.partner), json=users_body(tenant, "held", {"user_ids": ["l1"]})
            ).status_code
            == 201
        )
        assert (
            client.post(
                COHORTS_USERS.format(tenant.partner), json=users_body(tenant, "free", {"user_ids": ["l1"]})
            ).status_code
            == 201
        )
        pk = cohort_pk(runtime, tenant, "held")
        before = snapshot(runtime, tenant.workspace_id)

        with runtime.engine.connect() as holder:
            # Another import's transaction, as the database sees it: the cohort row locked (PostgreSQL) or the
            # writer lock taken (SQLite's BEGIN IMMEDIATE, issued when this transaction begins).
            holder.begin()
            holder.execute(select(cohorts.c.id).where(cohorts.c.id == pk).with_for_update())
            started = time.monotonic()
            r = client.post(COHORTS_USERS.format(tenant.partner), json=users_body(tenant, "held", {"user_ids": ["l2"]}))
            assert time.monotonic() - started >= 0.4  # it waited before giving up
            assert r.status_code == 423
            assert r.json() == {"message": Messages.RESOURCE_LOCKED}
            assert int(r.headers["Retry-After"]) >= 1
            r = client.post(COHORTS.format(tenant.partner), json=name_body(tenant, "held", "renamed"))
            assert (r.status_code, r.json()) == (423, {"message": Messages.RESOURCE_LOCKED})
            if backend == "postgres":
                # The lock is per cohort: another cohort of the same workspace is not held up.
                r = client.post(
                    COHORTS_USERS.format(tenant.partner), json=users_body(tenant, "free", {"user_ids": ["l2"]})
                )
                assert r.status_code == 201
                before = snapshot(runtime, tenant.workspace_id)
            holder.rollback()

        assert snapshot(runtime, tenant.workspace_id) == before
        r = client.post(COHORTS_USERS.format(tenant.partner), json=users_body(tenant, "held", {"user_ids": ["l2"]}))
        assert r.status_code == 201
        assert members(runtime, tenant, "held") == {ids["l1"], ids["l2"]}


# ----------------------------------------------------------------- imports against merges and deletions


def _hold_membership_lock(runtime: PlatformRuntime, workspace_id: str, *, exclusive: bool) -> Any:
    """A transaction holding the workspace's membership lock, as a merge (exclusive) or an import would."""
    holder = runtime.engine.connect()
    holder.begin()
    lock_workspace_memberships(holder, workspace_id, exclusive=exclusive)
    return holder


def test_an_import_waits_for_a_merge_in_flight(
    impatient_server: ServerProcess, runtime: PlatformRuntime, backend: str
) -> None:
    """A merge or deletion in progress holds the workspace's imports back (no membership for a removed user)."""
    if backend != "postgres":
        pytest.skip("on SQLite every transaction holds the one writer lock: covered by the bounded-wait test")
    tenant = make_tenant(runtime)
    ids = add_users(runtime, tenant.workspace_id, ["m1"])
    other = make_tenant(runtime)
    add_users(runtime, other.workspace_id, ["m1"])
    with httpx.Client(base_url=impatient_server.base_url, timeout=30) as client:
        holder = _hold_membership_lock(runtime, tenant.workspace_id, exclusive=True)
        try:
            r = client.post(COHORTS_USERS.format(tenant.partner), json=users_body(tenant, "c", {"user_ids": ["m1"]}))
            assert (r.status_code, r.json()) == (423, {"message": Messages.RESOURCE_LOCKED})
            # Another workspace's imports do not wait.
            r = client.post(COHORTS_USERS.format(other.partner), json=users_body(other, "c", {"user_ids": ["m1"]}))
            assert r.status_code == 201
        finally:
            holder.rollback()
            holder.close()
        r = client.post(COHORTS_USERS.format(tenant.partner), json=users_body(tenant, "c", {"user_ids": ["m1"]}))
        assert r.status_code == 201
        assert members(runtime, tenant, "c") == {ids["m1"]}


def test_a_merge_waits_for_the_imports_in_flight(server: ServerProcess, runtime: PlatformRuntime, backend: str) -> None:
    if backend != "postgres":
        pytest.skip("on SQLite every transaction holds the one writer lock")
    tenant = make_tenant(runtime)
    add_users(runtime, tenant.workspace_id, ["t1"])
    alias = {"alias_name": "a-1", "alias_label": "crm"}
    auth = {"Authorization": f"Bearer {tenant.rest_api_key}"}
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        r = client.post(
            "/users/track",
            json={"attributes": [{"user_alias": alias, "_update_existing_only": False, "first_name": "A"}]},
            headers=auth,
        )
        assert r.status_code == 201
        holder = _hold_membership_lock(runtime, tenant.workspace_id, exclusive=False)
        done: list[httpx.Response] = []
        identify = threading.Thread(
            target=lambda: done.append(
                client.post(
                    "/users/identify",
                    json={"aliases_to_identify": [{"external_id": "t1", "user_alias": alias}]},
                    headers=auth,
                )
            )
        )
        try:
            identify.start()
            identify.join(timeout=1.0)
            assert not done, "the merge went ahead while an import held the workspace's memberships"
        finally:
            holder.rollback()
            holder.close()
        identify.join(timeout=20)
        assert done and done[0].status_code == 201
        assert done[0].json()["merged"] == 1


# ------------------------------------------------------------------------------------ killed server process


def test_server_killed_during_requests_leaves_no_partial_batch(database_url: str, runtime: PlatformRuntime) -> None:
    tenant = make_tenant(runtime)
    workers = 4
    pool = [f"k-{n}" for n in range(1500)]
    ids = add_users(runtime, tenant.workspace_id, pool)
    proc = start_server(database_url)
    sent: dict[str, SentRequest] = {}
    sent_lock = threading.Lock()
    stop = threading.Event()

    def run(i: int) -> None:
        rng = random.Random(7 + i)
        j = 0
        with httpx.Client(base_url=proc.base_url, timeout=30) as client:
            while not stop.is_set():
                tag = f"kill-{i}-{j}"
                j += 1
                # Several objects of ~300 ids each: a request is several statements, so a kill can land between.
                request = SentRequest(tag, _random_changes(rng, tag, pool, 3, 330))
                with sent_lock:
                    sent[tag] = request
                try:
                    r = client.post(
                        COHORTS_USERS.format(tenant.partner), json=users_body(tenant, "crash", *request.changes)
                    )
                except httpx.TransportError as exc:
                    request.error = type(exc).__name__
                    return
                if r.status_code == 201:
                    request.response = r.json()
                else:
                    request.error = f"{r.status_code} {r.text}"

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        # Let a good number of batches commit, then kill the server while the workers keep it busy.
        while time.monotonic() < deadline and sum(r.response is not None for r in list(sent.values())) < 12:
            time.sleep(0.02)
        proc.stop(kill=True)
    finally:
        stop.set()
        for t in threads:
            t.join()
        proc.stop(kill=True)

    assert any(r.error for r in sent.values()), "the server was not under load when it was killed"
    acknowledged = {tag for tag, r in sent.items() if r.response is not None}
    assert len(acknowledged) >= 12
    # Requests fail only by losing the connection, never with an HTTP error.
    assert [r.error for r in sent.values() if r.error and r.error[0].isdigit()] == []
    order = _replay_against_audit(runtime, tenant, "crash", sent, ids)
    # Everything acknowledged is durable; what was cut off is all or nothing (the replay equality above).
    assert acknowledged <= set(order)
    assert set(order) <= set(sent)
