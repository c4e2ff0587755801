"""The seed's Hightouch steps in a real browser (Playwright driving Debian's chromium) against real processes:
a platform server and ``cohortflow sync serve``, on SQLite and PostgreSQL state.

Step 2: Destinations > search "Braze Cohorts" > REST endpoint and data import key from the platform > Test
connection > Continue. Step 3: a model, a sync that creates a new cohort, run it, watch the request debugger,
see the run's counts. Then the cohort is on the platform with the right size. Every page is saved at desktop and
phone width under ``test-output/screenshots/<backend>/<test>/``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pytest

from cohortflow.platform.cohorts import get_cohort
from cohortflow.platform.import_keys import create_import_key
from cohortflow.platform.partners import create_partner
from cohortflow.platform.workspaces import create_workspace
from tests.platform.dashboard.conftest import (  # noqa: F401  (shots is a fixture)
    chromium,
    screenshot,
    shots,
)
from tests.support import fresh_database, open_runtime, start_server
from tests.sync.service_support import start_service
from tests.sync.support import seed_users

PASSWORD = "a long test password"


@contextmanager
def serve_with_admin(path: Path, state_url: str) -> Iterator[str]:
    """``sync serve`` on the workspace at ``path``, with the admin ``admin@example.com`` / PASSWORD; its URL."""
    made = subprocess.run(
        [sys.executable, "-m", "cohortflow", "sync", "-f", str(path), "--state-url", state_url, "user", "create",
         "admin@example.com", "--password-stdin"],
        input=PASSWORD, capture_output=True, text=True, env=os.environ,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    process = start_service(path, state_url)
    try:
        yield process.base_url
    finally:
        process.stop()


CUSTOMERS = 3000


@pytest.fixture
def browser() -> Iterator[Any]:
    """Chromium for this test only: Playwright's sync API keeps an event loop on the main thread while it runs,
    and the engine's ``asyncio.run`` in later tests of the session must not find it there."""
    with chromium() as launched:
        yield launched


@pytest.fixture
def platform(tmp_path: Path, backend: str) -> Iterator[dict[str, Any]]:
    """A real platform server with a workspace, the partner Hightouch, a data import key and some users."""
    (tmp_path / "platform").mkdir()
    with fresh_database(backend, tmp_path / "platform") as url:
        runtime = open_runtime(url)
        with runtime.transaction() as conn:
            ws = create_workspace(conn, "Acme")
            partner = create_partner(conn, "hightouch", "Hightouch")
            _info, key = create_import_key(conn, ws.id, "hightouch")
        server = start_server(url)
        try:
            # Two users in three exist on the platform: only they can join the cohort.
            seed_users(
                server.base_url, ws.rest_api_key.plain, [{"external_id": f"c{i}"} for i in range(0, CUSTOMERS, 3)]
            )
            seed_users(
                server.base_url, ws.rest_api_key.plain, [{"external_id": f"c{i}"} for i in range(1, CUSTOMERS, 3)]
            )
            yield {
                "base_url": server.base_url,
                "runtime": runtime,
                "workspace_id": ws.id,
                "partner_api_key": partner.api_key.plain,
                "data_import_key": key.plain,
            }
        finally:
            server.stop()
            runtime.close()


@pytest.fixture
def service(tmp_path: Path, state_url: str) -> Iterator[str]:
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        con.execute(
            "CREATE TABLE customers AS SELECT 'c' || i AS customer_id, 'c' || i || '@example.com' AS email, "
            f"(i * 37) % 1000 AS lifetime_value FROM range({CUSTOMERS}) t(i)"
        )
    path = tmp_path / "cohortflow.yaml"
    path.write_text("# Acme's sync workspace: the web app writes here too.\nversion: 1\n")
    with serve_with_admin(path, state_url) as base_url:
        yield base_url


def test_the_seed_hightouch_steps_in_the_browser(
    browser: Any,
    shots: Path,  # noqa: F811
    platform: dict[str, Any],
    service: str,
    tmp_path: Path,
) -> None:
    context = browser.new_context(base_url=service, viewport={"width": 1280, "height": 800})
    page = context.new_page()
    try:
        _steps(page, shots, platform, tmp_path)
    finally:
        context.close()


def _steps(page: Any, folder: Path, platform: dict[str, Any], tmp_path: Path) -> None:
    page.goto("/")
    assert "/app/login" in page.url
    screenshot(page, folder, "01-login")
    page.get_by_label("E-mail address").fill("admin@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/app/syncs")
    screenshot(page, folder, "02-syncs-empty")
    nav = page.get_by_role("navigation", name="Main")

    # Sources: the warehouse.
    nav.get_by_role("link", name="Sources").click()
    screenshot(page, folder, "03-sources-empty")
    page.get_by_role("link", name="Add source").first.click()
    page.get_by_label("Name").fill("warehouse")
    page.get_by_label("Type").select_option("duckdb")
    page.get_by_label("File path").fill("warehouse.duckdb")
    page.get_by_role("button", name="Test connection").click()
    assert page.get_by_role("status").filter(has_text="Connection works").is_visible()
    screenshot(page, folder, "04-source-tested")
    page.get_by_role("button", name="Save source").click()
    page.wait_for_url("**/app/sources/warehouse")
    screenshot(page, folder, "05-source")

    # Step 2: Destinations > Braze Cohorts > REST endpoint and data import key > Test connection > Continue.
    nav.get_by_role("link", name="Destinations").click()
    screenshot(page, folder, "06-destinations-empty")
    page.get_by_role("link", name="Add destination").first.click()
    page.get_by_label("Search destinations").fill("braze cohorts")
    page.get_by_role("button", name="Search").click()
    screenshot(page, folder, "07-catalogue-search")
    page.get_by_role("link", name="Braze Cohorts").click()
    page.get_by_label("REST endpoint").fill(platform["base_url"])
    page.get_by_label("Data import key").fill(platform["data_import_key"])
    page.get_by_label("Partner API key").fill("not-the-key")
    page.get_by_role("button", name="Test connection").click()
    assert page.get_by_role("alert").filter(has_text="Invalid Partner API key").is_visible()
    screenshot(page, folder, "08-destination-test-failed")
    page.get_by_label("Partner API key").fill(platform["partner_api_key"])
    page.get_by_role("button", name="Test connection").click()
    assert page.get_by_role("status").filter(has_text="accepted the keys").is_visible()
    screenshot(page, folder, "09-destination-tested")
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url("**/app/destinations/braze")
    screenshot(page, folder, "10-destination")
    workspace_file = (tmp_path / "cohortflow.yaml").read_text()
    assert platform["data_import_key"] not in workspace_file and "${COHORTFLOW_BRAZE_DATA_IMPORT_KEY}" in workspace_file

    # Step 3: a model (SQL, preview, primary key from the columns)...
    nav.get_by_role("link", name="Models").click()
    page.get_by_role("link", name="Add model").first.click()
    page.get_by_label("Name").fill("high_value_customers")
    page.get_by_label("SQL").fill("SELECT customer_id, email FROM customers WHERE lifetime_value >= 500")
    page.get_by_role("button", name="Preview").click()
    page.get_by_label("Primary key").select_option("customer_id")
    screenshot(page, folder, "11-model-preview")
    page.get_by_role("button", name="Save model").click()
    page.wait_for_url("**/app/models/high_value_customers")
    screenshot(page, folder, "12-model")

    # ...and a sync to the destination that creates a new cohort, matching on the external id.
    page.get_by_role("link", name="Sync this model").click()
    screenshot(page, folder, "13-sync-choose")
    page.get_by_role("button", name="Continue").click()
    page.get_by_label("Name", exact=True).fill("high_value")
    page.get_by_label("Identifier 1", exact=True).select_option("external_id")
    page.get_by_label("Column of identifier 1").select_option("customer_id")
    page.get_by_label("Cohort", exact=True).select_option("create")
    page.get_by_label("New cohort's name").fill("High-value customers")
    screenshot(page, folder, "14-sync-form")
    page.get_by_role("button", name="Create sync").click()
    page.wait_for_url("**/app/syncs/high_value")
    screenshot(page, folder, "15-sync-before-run")

    # Run it and watch the debugger fill in while the run goes.
    page.get_by_role("button", name="Run now").click()
    page.wait_for_url("**/app/syncs/high_value/runs/**")
    page.locator("[data-run-status]", has_text="succeeded").wait_for(timeout=60_000)
    page.wait_for_load_state("load")
    rows = page.locator("#requests details.req")
    rows.first.wait_for()
    assert rows.count() >= 3  # naming the cohort, then batches of at most 1,000 identifiers
    expected = sum(1 for i in range(CUSTOMERS) if (i * 37) % 1000 >= 500)
    members = sum(1 for i in range(CUSTOMERS) if (i * 37) % 1000 >= 500 and i % 3 != 2)
    assert page.locator('[data-field="added"]').inner_text() == f"{expected:,}"
    assert page.locator('[data-field="matched"]').inner_text() == f"{members:,}"
    rows.nth(1).locator("summary").click()
    screenshot(page, folder, "16-run-debugger")

    page.get_by_role("link", name="high_value").first.click()
    assert page.locator("svg.chart rect").count() == 3
    screenshot(page, folder, "17-sync-after-run")
    nav.get_by_role("link", name="Syncs").click()
    screenshot(page, folder, "18-syncs")
    nav.get_by_role("link", name="Destinations").click()
    page.get_by_role("link", name="braze").click()
    assert page.get_by_role("cell", name="High-value customers").is_visible()
    screenshot(page, folder, "19-destination-with-cohort")

    # The cohort is on the platform, with exactly the matched users.
    with platform["runtime"].engine.connect() as conn:
        cohort = get_cohort(conn, platform["workspace_id"], "hightouch", "cohortflow-high_value")
    assert cohort.name == "High-value customers" and cohort.size == members
