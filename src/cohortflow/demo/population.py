"""Load the demo warehouse's customers into the platform the way real apps and back ends do.

Identified customers and alias-only customers arrive through ``/users/track`` (REST API key), 75 a request;
app users arrive through the SDK endpoint (app key), one request per device, as each installed app sends its
own: a new device creates an anonymous user, and for ``anonymous_then_identified`` customers the app's
``changeUser`` identifies that user with an external id the warehouse does not know, so the warehouse's device
id no longer matches in cohort import. The login travels in the same request as the first session's data, as
Braze's SDKs batch what happened since their last flush. Warehouse-only customers are not loaded at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import duckdb
import orjson

from cohortflow.demo.warehouse import ALIAS_LABEL

TRACK_BATCH = 75  # Braze's limit of attribute objects per /users/track request
_OPEN = {"name": "app_open"}


@dataclass
class LoadStats:
    track_requests: int = 0
    sdk_requests: int = 0
    users_by_kind: dict[str, int] = field(default_factory=dict)


def _profile(row: dict[str, Any]) -> dict[str, Any]:
    attrs = {
        "first_name": row["first_name"],
        "last_name": row["last_name"],
        "country": row["country"],
        "email": row["email"],
        "email_subscribe": "opted_in" if int(row["customer_id"][1:]) % 10 else "unsubscribed",
        "plan": row["plan"],
        "lifetime_value": row["lifetime_value"],
    }
    return {k: v for k, v in attrs.items() if v is not None}


def _customers(warehouse: Path) -> list[dict[str, Any]]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        cur = con.execute(
            "SELECT customer_id, profile_kind, external_id, crm_id, device_id, first_name, last_name, email, "
            "country, plan, lifetime_value FROM analytics.customers ORDER BY customer_id"
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _chunks(items: Sequence[dict[str, Any]], size: int) -> list[Sequence[dict[str, Any]]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


Progress = Callable[[int, int], None]


RETRIES = 5


_JSON = {"Content-Type": "application/json"}


async def _post(
    client: aiohttp.ClientSession,
    gate: asyncio.Semaphore,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> None:
    """POST, retrying what the platform asks to retry (429, 503: nothing was written) after its Retry-After."""
    data = orjson.dumps(body)
    for attempt in range(RETRIES + 1):
        async with gate, client.post(url, data=data, headers={**_JSON, **(headers or {})}) as response:
            status, retry_after = response.status, response.headers.get("Retry-After", "1")
            text = await response.text()
        if status not in (429, 503) or attempt == RETRIES:
            break
        await asyncio.sleep(float(retry_after))
    if status >= 300:
        raise RuntimeError(f"{url} answered {status}: {text[:300]}")


async def load_customers(
    base_url: str,
    rest_api_key: str,
    app_key: str,
    warehouse: Path,
    *,
    concurrency: int = 8,
    devices_at_once: int = 32,
    progress: Progress | None = None,
    kinds: Collection[str] | None = None,
) -> LoadStats:
    """Load the customers; ``progress(done, total)`` is called as requests complete.

    ``concurrency``: connections of the back end sending ``/users/track`` (a connection pool's size).
    ``devices_at_once``: app installs sending their first session at the same time. Each device is a client
    of its own; with more of them in flight the platform commits more SDK requests together (on SQLite, its
    group commit), as it would under real app traffic. ``kinds``: only the customers of these profile kinds (a
    benchmark loads one kind of traffic at a time).
    """
    rows = [r for r in _customers(warehouse) if kinds is None or r["profile_kind"] in kinds]
    stats = LoadStats()
    for row in rows:
        stats.users_by_kind[row["profile_kind"]] = stats.users_by_kind.get(row["profile_kind"], 0) + 1
    gate, device_gate = asyncio.Semaphore(concurrency), asyncio.Semaphore(devices_at_once)
    auth = {"Authorization": f"Bearer {rest_api_key}"}
    identified = [{"external_id": r["external_id"], **_profile(r)} for r in rows if r["profile_kind"] == "identified"]
    aliases = [
        {
            "user_alias": {"alias_name": r["crm_id"], "alias_label": ALIAS_LABEL},
            "_update_existing_only": False,
            **_profile(r),
        }
        for r in rows
        if r["profile_kind"] == "alias_only"
    ]
    devices = [r for r in rows if r["profile_kind"] in ("anonymous", "anonymous_then_identified")]
    total = -(-len(identified + aliases) // TRACK_BATCH) + len(devices)
    done = 0

    async def counted(request: Awaitable[None]) -> None:
        nonlocal done
        await request
        done += 1
        if progress is not None:
            progress(done, total)

    def first_session(row: dict[str, Any]) -> dict[str, Any]:
        body = {"api_key": app_key, "device_id": row["device_id"], "attributes": _profile(row), "events": [_OPEN]}
        if row["profile_kind"] == "anonymous_then_identified":
            # The app logs the user in: changeUser gives them an external id of the app's own.
            body["external_id"] = f"app-login-{row['customer_id']}"
        return body

    # aiohttp rather than httpx: about a quarter of httpx's CPU per request (BENCHMARKS.md), and the loader sends
    # thousands of small requests while sharing two cores with the server.
    connector = aiohttp.TCPConnector(limit=concurrency + devices_at_once)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(base_url=base_url, connector=connector, timeout=timeout) as client:
        track = [
            counted(_post(client, gate, "/users/track", {"attributes": list(chunk)}, headers=auth))
            for chunk in _chunks(identified + aliases, TRACK_BATCH)
        ]
        sessions = [counted(_post(client, device_gate, "/sdk/data", first_session(r))) for r in devices]
        stats.track_requests, stats.sdk_requests = len(track), len(sessions)
        await asyncio.gather(*track)
        await asyncio.gather(*sessions)
    return stats
