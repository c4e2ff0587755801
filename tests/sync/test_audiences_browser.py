"""The audience builder in a real browser (Playwright driving Debian's chromium) against real processes: a platform
server and ``cohortflow sync serve``, on SQLite and PostgreSQL state.

A marketer builds "French repeat buyers who are big spenders or were active lately" from the schema's columns,
related orders and page-view events, watching the size change with each condition; a wrong value is shown next to
its condition and saves nothing; the audience is saved into cohortflow.yaml (comments kept), compared with another
audience, synced into a new cohort on the platform, and the cohort holds exactly the audience's members who exist
there. Pages are saved at desktop and phone width under ``test-output/screenshots/<backend>/<test>/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml
from sqlalchemy import select

from cohortflow.platform.cohorts import get_cohort, member_user_ids
from cohortflow.platform.store.schema import users
from tests.platform.dashboard.conftest import screenshot, shots  # noqa: F401  (shots is a fixture)
from tests.sync.test_webapp_browser import CUSTOMERS, PASSWORD, browser, platform, serve_with_admin  # noqa: F401  (fixtures)

HEADER = "# Acme's sync workspace: the data team declares the schema, marketers build audiences.\n"
COUNTRIES = ["FR", "DE", "US", "FR", "ES"]


def country(i: int) -> str:
    return COUNTRIES[i % 5]


def ltv(i: int) -> int:
    return (i * 37) % 1000


def order_amounts(i: int) -> list[int]:
    return [(i * 13 + k * 29) % 120 for k in range(i % 4)]


def viewed_lately(i: int) -> bool:
    return i % 7 in (0, 1, 2)  # a page view 5 days ago; i % 7 == 3 viewed 100 days ago


def in_audience(i: int, ltv_above: int) -> bool:
    """The audience the test builds, read in plain Python."""
    repeat_buyer = sum(1 for a in order_amounts(i) if a > 50) >= 2
    return country(i) == "FR" and repeat_buyer and (ltv(i) > ltv_above or viewed_lately(i))


def _write_warehouse(path: Path) -> None:
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    orders = [(f"{i}-{k}", i, amount) for i in range(CUSTOMERS) for k, amount in enumerate(order_amounts(i))]
    views = [(f"v{i}", i, now - timedelta(days=5 if viewed_lately(i) else 100), "/pricing")
             for i in range(CUSTOMERS) if i % 7 <= 3]  # fmt: skip
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE customers (id INTEGER, external_id TEXT, email TEXT, country TEXT, ltv INTEGER)")
        con.executemany(
            "INSERT INTO customers VALUES (?, ?, ?, ?, ?)",
            [(i, f"c{i}", f"c{i}@example.com", country(i), ltv(i)) for i in range(CUSTOMERS)],
        )
        con.execute("CREATE TABLE orders (order_id TEXT, customer_id INTEGER, amount INTEGER)")
        con.executemany("INSERT INTO orders VALUES (?, ?, ?)", orders)
        con.execute("CREATE TABLE page_views (view_id TEXT, customer_id INTEGER, viewed_at TIMESTAMP, url TEXT)")
        con.executemany("INSERT INTO page_views VALUES (?, ?, ?, ?)", views)


@pytest.fixture
def service(tmp_path: Path, state_url: str, platform: dict[str, Any]) -> Iterator[str]:  # noqa: F811
    _write_warehouse(tmp_path / "warehouse.duckdb")
    doc = {
        "version": 1,
        "sources": {"warehouse": {"type": "duckdb", "path": "warehouse.duckdb"}},
        "models": {
            "customers": {"source": "warehouse", "table": "customers", "primary_key": "id"},
            "orders": {"source": "warehouse", "table": "orders", "primary_key": "order_id"},
            "page_views": {"source": "warehouse", "table": "page_views", "primary_key": "view_id"},
        },
        "parents": {
            "people": {
                "model": "customers",
                "identifiers": ["external_id", "email"],
                "columns": {"country": "text", "ltv": "number", "email": "text"},
                "related": {
                    "orders": {"model": "orders", "join": {"id": "customer_id"}, "columns": {"amount": "number"}}
                },
                "events": {
                    "page_views": {
                        "model": "page_views",
                        "join": {"id": "customer_id"},
                        "timestamp": "viewed_at",
                        "columns": {"url": "text"},
                    }
                },
                "traits": {"order_count": {"relation": "orders", "aggregate": "count"}},
            }
        },
        "audiences": {
            "high_value": {
                "parent": "people",
                "description": "Lifetime value above 500",
                "filter": {"type": "property", "column": "ltv", "operator": "greater_than", "value": 500},
            }
        },
        "destinations": {
            "braze": {
                "type": "braze_cohorts",
                "rest_endpoint": platform["base_url"],
                "partner": "hightouch",
                "partner_api_key": "${PARTNER_API_KEY}",
                "data_import_key": "${DATA_IMPORT_KEY}",
            }
        },
    }
    path = tmp_path / "cohortflow.yaml"
    path.write_text(HEADER + yaml.safe_dump(doc, sort_keys=False))
    (tmp_path / ".env").write_text(
        f"PARTNER_API_KEY={platform['partner_api_key']}\nDATA_IMPORT_KEY={platform['data_import_key']}\n"
    )
    with serve_with_admin(path, state_url) as base_url:
        yield base_url


def test_build_an_audience_see_its_size_save_it_and_sync_it(
    browser: Any,  # noqa: F811
    shots: Path,  # noqa: F811
    platform: dict[str, Any],  # noqa: F811
    service: str,
    tmp_path: Path,
) -> None:
    context = browser.new_context(base_url=service, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        _steps(page, shots, platform, tmp_path)
    finally:
        context.close()
    assert errors == []


def _size_is(page: Any, count: int) -> None:
    """Wait until the builder shows ``count`` as the audience's size (it asks the server after each change)."""
    page.locator("#aud-size", has_text=f"{count:,}").wait_for(timeout=30_000)
    page.locator("#aud-panel:not(.loading)").wait_for()


def _steps(page: Any, folder: Path, platform: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    workspace = tmp_path / "cohortflow.yaml"
    page.goto("/app/login")
    page.get_by_label("E-mail address").fill("admin@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/app/syncs")
    nav = page.get_by_role("navigation", name="Main")
    nav.get_by_role("link", name="Audiences").click()
    screenshot(page, folder, "01-audiences")
    page.get_by_role("link", name="New audience").click()
    _size_is(page, CUSTOMERS)  # no condition yet: everyone
    screenshot(page, folder, "02-builder-empty")

    root = page.locator("#builder > .group")
    # Country is FR.
    root.get_by_role("button", name="+ Column or trait").click()
    first = root.locator(".cond").nth(0)
    assert first.get_by_label("Column").input_value() == "country"
    # The operators offered are those of a text column.
    operators = first.get_by_label("Operator").locator("option").all_inner_texts()
    assert "contains" in operators and "is greater than" not in operators
    first.get_by_label("Value").fill("FR")
    _size_is(page, sum(1 for i in range(CUSTOMERS) if country(i) == "FR"))

    # Has at least 2 orders where amount > 50.
    root.get_by_role("button", name="+ Related rows").click()
    related = root.locator(".cond").nth(1)
    related.get_by_label("Times").fill("2")
    related.get_by_role("button", name="+ where").click()
    related.get_by_label("Operator").select_option("greater_than")
    related.get_by_label("Value").fill("50")
    repeat = [i for i in range(CUSTOMERS) if country(i) == "FR" and sum(1 for a in order_amounts(i) if a > 50) >= 2]
    _size_is(page, len(repeat))

    # And any of: lifetime value above N, or a page view in the last 30 days.
    root.get_by_role("button", name="+ Group").click()
    nested = root.locator(".group.nested")
    assert nested.get_by_label("Match (group)").input_value() == "or"
    nested.get_by_role("button", name="+ Column or trait").click()
    big = nested.locator(".cond").nth(0)
    big.get_by_label("Column").select_option("ltv")
    big.get_by_label("Operator").select_option("greater_than")
    # A value that is not a number: the engine's error shows next to this condition, and the size waits.
    big.get_by_label("Value").fill("lots")
    big.locator(".problem", has_text="needs a number, got string 'lots'").wait_for()
    assert "fix the problems" in page.locator("#aud-of").inner_text()
    page.get_by_label("Name").fill("fr_buyers")
    screenshot(page, folder, "03-builder-error")
    before = workspace.read_text()
    page.get_by_role("button", name="Save audience").click()
    page.get_by_role("alert").filter(has_text="Nothing was saved").wait_for()
    assert workspace.read_text() == before
    page.locator("#builder .cond .problem", has_text="needs a number").wait_for()
    screenshot(page, folder, "04-save-refused")

    root = page.locator("#builder > .group")
    nested = root.locator(".group.nested")
    big = nested.locator(".cond").nth(0)
    big.get_by_label("Value").fill("800")
    _size_is(page, sum(1 for i in repeat if ltv(i) > 800))
    nested.get_by_role("button", name="+ Event").click()
    event = nested.locator(".cond").nth(1)
    assert event.get_by_label("Event").input_value() == "page_views"
    assert event.get_by_label("Window").input_value() == "last" and event.get_by_label("Days").input_value() == "30"
    members = [i for i in range(CUSTOMERS) if in_audience(i, 800)]
    _size_is(page, len(members))
    assert page.locator("#aud-sample tbody tr").count() == 10
    sample_ids = {int(t) for t in page.locator("#aud-sample tbody tr td:first-child").all_inner_texts()}
    assert sample_ids <= set(members)
    sql = page.locator("#aud-sql").inner_text()
    assert "\"country\" = 'FR'" in sql and "page_views" in sql
    screenshot(page, folder, "05-builder")

    page.get_by_label("Name").fill("fr_buyers")
    page.get_by_role("button", name="Save audience").click()
    page.wait_for_url("**/app/audiences/fr_buyers")
    assert page.get_by_role("status").filter(has_text="Audience fr_buyers created").is_visible()
    saved = workspace.read_text()
    assert saved.startswith(HEADER)
    definition = yaml.safe_load(saved)["audiences"]["fr_buyers"]
    assert definition["parent"] == "people" and definition["filter"]["type"] == "and"
    _size_is(page, len(members))  # the saved audience opens in the builder with the same size
    screenshot(page, folder, "06-audience-saved")

    # Overlap with another audience.
    nav.get_by_role("link", name="Audiences").click()
    page.get_by_role("link", name="Compare two audiences").click()
    page.get_by_label("Audience A").select_option("fr_buyers")
    page.get_by_label("Audience B").select_option("high_value")
    page.get_by_role("button", name="Compare").click()
    high = {i for i in range(CUSTOMERS) if ltv(i) > 500}
    assert page.locator('[data-field="both"]').inner_text() == f"{len(high & set(members)):,}"
    assert page.locator('[data-field="only_a"]').inner_text() == f"{len(set(members) - high):,}"
    assert page.locator('[data-field="only_b"]').inner_text() == f"{len(high - set(members)):,}"
    screenshot(page, folder, "07-overlap")

    # A sync from the audience into a new cohort, matching on the external id.
    page.get_by_role("link", name="Audiences").first.click()
    page.get_by_role("link", name="fr_buyers").click()
    page.get_by_role("link", name="Sync this audience").click()
    assert page.get_by_label("Model or audience").input_value() == "audience:fr_buyers"
    page.get_by_role("button", name="Continue").click()
    page.get_by_label("Name", exact=True).fill("fr_buyers_sync")
    page.get_by_label("Identifier 1", exact=True).select_option("external_id")
    page.get_by_label("Column of identifier 1").select_option("external_id")
    page.get_by_label("New cohort's name").fill("French repeat buyers")
    screenshot(page, folder, "08-sync-form")
    page.get_by_role("button", name="Create sync").click()
    page.wait_for_url("**/app/syncs/fr_buyers_sync")
    assert "audience fr_buyers" in page.locator("main").inner_text()
    page.get_by_role("button", name="Run now").click()
    page.wait_for_url("**/app/syncs/fr_buyers_sync/runs/**")
    page.locator("[data-run-status]", has_text="succeeded").wait_for(timeout=60_000)
    page.wait_for_load_state("load")
    assert page.locator('[data-field="added"]').inner_text() == f"{len(members):,}"
    screenshot(page, folder, "09-run")

    # The cohort holds exactly the audience's members who exist on the platform (two in three do).
    expected = {f"c{i}" for i in members if i % 3 != 2}
    with platform["runtime"].engine.connect() as conn:
        cohort = get_cohort(conn, platform["workspace_id"], "hightouch", "cohortflow-fr_buyers_sync")
        ids = member_user_ids(conn, cohort.pk)
        external = {r.external_id for r in conn.execute(select(users.c.external_id).where(users.c.id.in_(ids)))}
    assert cohort.name == "French repeat buyers"
    assert external == expected and cohort.size == len(expected)
