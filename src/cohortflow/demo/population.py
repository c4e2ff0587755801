"""Load the demo warehouse's customers into the platform the way real apps and back ends do.

Identified customers and alias-only customers arrive through ``/users/track`` (REST API key); app users
arrive through the SDK endpoint (app key): a new device creates an anonymous user, and for
``anonymous_then_identified`` customers a later ``changeUser`` identifies that user with an external id
the warehouse does not know, so the warehouse's device id no longer matches in cohort import.
Warehouse-only customers are not loaded at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import httpx

from cohortflow.demo.warehouse import ALIAS_LABEL

TRACK_BATCH = 75  # Braze's limit of attribute objects per /users/track request


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


async def _post(client: httpx.AsyncClient, gate: asyncio.Semaphore, url: str, body: dict[str, Any], **kw: Any) -> None:
    async with gate:
        response = await client.post(url, json=body, **kw)
    if response.status_code >= 300:
        raise RuntimeError(f"{url} answered {response.status_code}: {response.text[:300]}")


async def load_customers(
    base_url: str,
    rest_api_key: str,
    app_key: str,
    warehouse: Path,
    *,
    concurrency: int = 8,
    progress: Progress | None = None,
) -> LoadStats:
    """Load the customers; ``progress(done, total)`` is called as requests complete."""
    rows = _customers(warehouse)
    stats = LoadStats()
    for row in rows:
        stats.users_by_kind[row["profile_kind"]] = stats.users_by_kind.get(row["profile_kind"], 0) + 1
    gate = asyncio.Semaphore(concurrency)
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
    logins_total = sum(1 for r in devices if r["profile_kind"] == "anonymous_then_identified")
    total = -(-len(identified + aliases) // TRACK_BATCH) + len(devices) + logins_total
    done = 0

    async def counted(request: Awaitable[None]) -> None:
        nonlocal done
        await request
        done += 1
        if progress is not None:
            progress(done, total)

    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        track = [
            counted(_post(client, gate, "/users/track", {"attributes": list(chunk)}, headers=auth))
            for chunk in _chunks(identified + aliases, TRACK_BATCH)
        ]
        stats.track_requests = len(track)
        await asyncio.gather(*track)
        first_sessions = [
            counted(
                _post(
                    client,
                    gate,
                    "/sdk/data",
                    {
                        "api_key": app_key,
                        "device_id": r["device_id"],
                        "attributes": _profile(r),
                        "events": [{"name": "app_open"}],
                    },
                )
            )
            for r in devices
        ]
        await asyncio.gather(*first_sessions)
        # The app later logs these users in: changeUser gives them an external id of the app's own.
        logins = [
            counted(
                _post(
                    client,
                    gate,
                    "/sdk/data",
                    {"api_key": app_key, "device_id": r["device_id"], "external_id": f"app-login-{r['customer_id']}"},
                )
            )
            for r in devices
            if r["profile_kind"] == "anonymous_then_identified"
        ]
        await asyncio.gather(*logins)
        stats.sdk_requests = len(first_sessions) + len(logins)
    return stats
