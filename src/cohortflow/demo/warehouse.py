"""The demo's data warehouse: realistic customers in a DuckDB file, generated deterministically.

Each customer has a *profile kind* that says how (and whether) the platform knows them, so the demo
exercises every matching rule of the contract:

- ``identified``: the platform knows them by ``external_id``;
- ``alias_only``: the platform knows them by the alias ``crm_id`` only (no external id yet);
- ``anonymous``: the platform knows only an app device (no external id): matched by ``device_id``;
- ``anonymous_then_identified``: the device was later identified in the app; the warehouse still holds
  only the device id, which Braze no longer matches (counted as unmatched);
- ``warehouse_only``: never seen by the platform (unmatched).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

# Shares of the profile kinds, in per-mille, in the order the generator assigns them.
PROFILE_MIX: tuple[tuple[str, int], ...] = (
    ("identified", 600),
    ("alias_only", 150),
    ("anonymous", 100),
    ("anonymous_then_identified", 50),
    ("warehouse_only", 100),
)
ALIAS_LABEL = "crm_id"

_FIRST = [
    "Camille",
    "Léa",
    "Hugo",
    "Louis",
    "Emma",
    "Yuki",
    "Haruto",
    "Sakura",
    "Olivia",
    "Noah",
    "Liam",
    "Mia",
    "Lucas",
    "Chloé",
    "Jules",
    "Aiko",
    "Ren",
    "Sofia",
    "Mateo",
    "Ava",
    "Ethan",
    "Nora",
    "Inès",
    "Tom",
]
_LAST = [
    "Martin",
    "Bernard",
    "Dubois",
    "Sato",
    "Suzuki",
    "Takahashi",
    "Smith",
    "Johnson",
    "Brown",
    "Garcia",
    "Lefebvre",
    "Moreau",
    "Tanaka",
    "Watanabe",
    "Miller",
    "Davis",
    "Laurent",
    "Simon",
    "Ito",
    "Wilson",
]
_COUNTRIES = ["FR", "FR", "FR", "JP", "JP", "US", "US", "DE", "GB", "CA", "BE", "ES"]
_PLANS = ["free", "free", "starter", "pro", "enterprise"]


@dataclass(frozen=True)
class WarehouseStats:
    customers: int
    by_kind: dict[str, int]


def _kind_case() -> str:
    """SQL CASE assigning a profile kind from the customer number, following PROFILE_MIX."""
    parts, upper = [], 0
    for kind, share in PROFILE_MIX:
        upper += share
        parts.append(f"WHEN (n * 7919) % 1000 < {upper} THEN '{kind}'")
    return "CASE " + " ".join(parts) + " END"


def generate(path: Path, customers: int, *, seed: float = 0.42) -> WarehouseStats:
    """(Re)create ``analytics.customers`` with ``customers`` rows in the DuckDB file at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    first = "[" + ", ".join(f"'{n}'" for n in _FIRST) + "]"
    last = "[" + ", ".join(f"'{n}'" for n in _LAST) + "]"
    countries = "[" + ", ".join(f"'{c}'" for c in _COUNTRIES) + "]"
    plans = "[" + ", ".join(f"'{p}'" for p in _PLANS) + "]"
    with duckdb.connect(str(path)) as con:
        con.execute(f"SELECT setseed({seed})")
        con.execute("CREATE SCHEMA IF NOT EXISTS analytics")
        con.execute("DROP TABLE IF EXISTS analytics.customers")
        con.execute(
            f"""
            CREATE TABLE analytics.customers AS
            WITH base AS (
                SELECT n, {_kind_case()} AS profile_kind,
                       random() AS r1, random() AS r2, random() AS r3, random() AS r4, random() AS r5, random() AS r6
                FROM range(1, {customers} + 1) t(n)
            )
            SELECT
                printf('C%07d', n) AS customer_id,
                profile_kind,
                CASE WHEN profile_kind IN ('identified', 'warehouse_only')
                     THEN printf('user-%07d', n) END AS external_id,
                CASE WHEN profile_kind = 'alias_only' THEN printf('crm-%07d', n) END AS crm_id,
                CASE WHEN profile_kind IN ('anonymous', 'anonymous_then_identified')
                     THEN printf('device-%07d', n) END AS device_id,
                {first}[1 + (n * 31) % {len(_FIRST)}] AS first_name,
                {last}[1 + (n * 17) % {len(_LAST)}] AS last_name,
                CASE WHEN r4 < 0.9 THEN lower(printf('%s.%s.%d@example.com',
                     {first}[1 + (n * 31) % {len(_FIRST)}], {last}[1 + (n * 17) % {len(_LAST)}], n)) END AS email,
                {countries}[1 + CAST(floor(r1 * {len(_COUNTRIES)}) AS INTEGER)] AS country,
                {plans}[1 + CAST(floor(r2 * {len(_PLANS)}) AS INTEGER)] AS plan,
                round(exp(r3 * 8), 2) AS lifetime_value,
                TIMESTAMP '2026-11-01' - to_days(CAST(floor(r5 * 365) AS INTEGER)) AS last_order_at,
                TIMESTAMP '2024-01-01' + to_days(CAST(floor(r6 * 600) AS INTEGER)) AS signed_up_at
            FROM base
            """
        )
        rows = con.execute("SELECT profile_kind, count(*) FROM analytics.customers GROUP BY 1 ORDER BY 1").fetchall()
    by_kind = {str(k): int(c) for k, c in rows}
    return WarehouseStats(customers=sum(by_kind.values()), by_kind=by_kind)


def churn(path: Path, *, seed: float = 0.7) -> dict[str, int]:
    """Change the warehouse between two syncs: some customers spend (enter), some go quiet (leave)."""
    with duckdb.connect(str(path)) as con:
        con.execute(f"SELECT setseed({seed})")
        entered = con.execute(
            "UPDATE analytics.customers SET lifetime_value = lifetime_value + 1000 "
            "WHERE lifetime_value < 300 AND random() < 0.05"
        ).fetchone()
        left = con.execute(
            "UPDATE analytics.customers SET last_order_at = TIMESTAMP '2025-01-01' "
            "WHERE lifetime_value >= 300 AND random() < 0.05"
        ).fetchone()
    return {"raised_value": int(entered[0]) if entered else 0, "went_quiet": int(left[0]) if left else 0}


HIGH_VALUE_SQL = """
SELECT customer_id, external_id, crm_id, device_id, email, first_name, country, lifetime_value
FROM analytics.customers
WHERE lifetime_value >= 300 AND last_order_at >= TIMESTAMP '2026-08-01'
"""
