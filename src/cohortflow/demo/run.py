"""The demo's script: every step of the document, on embedded defaults (DuckDB warehouse, SQLite platform).

1. generate a DuckDB warehouse of customers;
2. start the platform (its own process) on SQLite on a free loopback port; create a workspace, the
   partner ``hightouch`` and a data import key (the dashboard's "generate key");
3. load the customers into the platform through its APIs (identified, alias-only, anonymous devices,
   anonymous-then-identified; some customers stay warehouse-only);
4. write ``cohortflow.yaml`` (secrets as ``${VAR}``) and run the sync into a new cohort;
5. change the warehouse and run the sync again: only the changes cross the wire;
6. segment on the cohort ("Hightouch Cohorts includes ... AND country = FR") and send an email campaign to
   it through a local SMTP server that writes each message to ``outbox/``;
7. report what the sync did, the cohort as the platform sees it, the segment and the campaign.

Every run starts from a clean demo directory, so running the demo twice works.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cohortflow.clock import utcnow
from cohortflow.demo.layout import discard_previous, launch_platform, platform_database_url, reset_directory
from cohortflow.demo.outbox import Outbox
from cohortflow.demo.population import LoadStats, load_customers
from cohortflow.demo.warehouse import ALIAS_LABEL, HIGH_VALUE_SQL, WarehouseStats, churn, generate
from cohortflow.platform.cohorts import CohortInfo, get_cohort
from cohortflow.platform.import_keys import create_import_key
from cohortflow.platform.messaging.campaigns import create_campaign, request_send, run_send
from cohortflow.platform.partners import create_partner
from cohortflow.platform.process import ServerProcess
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.segments.service import SegmentSize, create_segment, segment_size
from cohortflow.platform.workspaces import create_workspace
from cohortflow.settings import MessagingSettings, PlatformSettings
from cohortflow.sync import RunResult, load_workspace, run_sync

PARTNER = "hightouch"
SYNC_NAME = "high_value_customers"
COHORT_NAME = "High-value customers (last 90 days)"
ENV_PARTNER_KEY = "COHORTFLOW_DEMO_PARTNER_API_KEY"
ENV_IMPORT_KEY = "COHORTFLOW_DEMO_DATA_IMPORT_KEY"

Step = Callable[[str], None]
# (what, done, total): progress of a long step (loading customers, sending the sync's changes).
ProgressFn = Callable[[str, int, int | None], None]
ENV_REST_API_KEY = "COHORTFLOW_DEMO_REST_API_KEY"
ENV_APP_KEY = "COHORTFLOW_DEMO_APP_KEY"


@dataclass
class DemoReport:
    directory: Path
    rest_endpoint: str = ""
    warehouse: WarehouseStats | None = None
    loaded: LoadStats | None = None
    churn: dict[str, int] = field(default_factory=dict)
    runs: list[RunResult] = field(default_factory=list)
    cohort_sizes: list[int] = field(default_factory=list)
    cohort: CohortInfo | None = None
    segment_name: str = ""
    segment: SegmentSize | None = None
    campaign_counts: dict[str, int] = field(default_factory=dict)
    emails_received: int = 0
    extras: dict[str, Any] = field(default_factory=dict)


def workspace_yaml(warehouse: Path, rest_endpoint: str) -> dict[str, Any]:
    return {
        "version": 1,
        "sources": {"warehouse": {"type": "duckdb", "path": str(warehouse)}},
        "models": {
            "high_value_customers": {
                "source": "warehouse",
                "sql": HIGH_VALUE_SQL.strip(),
                "primary_key": "customer_id",
            }
        },
        "destinations": {
            "braze": {
                "type": "braze_cohorts",
                "rest_endpoint": rest_endpoint,
                "partner": PARTNER,
                "partner_api_key": f"${{{ENV_PARTNER_KEY}}}",
                "data_import_key": f"${{{ENV_IMPORT_KEY}}}",
                "concurrency": 4,
            }
        },
        "syncs": {
            SYNC_NAME: {
                "model": "high_value_customers",
                "destination": "braze",
                "identifier": {
                    "fallback": [
                        {"external_id": "external_id"},
                        {"alias": {"name_column": "crm_id", "label": ALIAS_LABEL}},
                        {"device_id": "device_id"},
                    ]
                },
                "cohort": {"mode": "create", "name": COHORT_NAME},
                "on_row_removed": "remove",
            }
        },
    }


def _no_progress(_what: str, _done: int, _total: int | None) -> None:
    return None


def write_env(directory: Path, port: int, values: dict[str, str]) -> Path:
    """``.env`` in the demo folder: the settings and keys that let ``cd DIR`` + ``cohortflow ...`` continue the setup
    (serve the same platform on the same port, keep syncing into the same state). Mode 0600: it holds keys."""
    settings = {
        "COHORTFLOW_PLATFORM_DATABASE_URL": platform_database_url(directory),
        "COHORTFLOW_PLATFORM__PORT": str(port),
        "COHORTFLOW_PLATFORM__PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "COHORTFLOW_SYNC_STATE_URL": f"sqlite:///{directory / 'sync-state.db'}",
        "COHORTFLOW_SYNC__CONFIG_PATH": str(directory / "cohortflow.yaml"),
    }
    path = directory / ".env"
    lines = ["# Written by cohortflow demo: settings and keys to continue from this folder (see the README)."]
    lines += [f"{k}={v}" for k, v in {**settings, **values}.items()]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def run_demo(
    directory: Path,
    customers: int,
    *,
    server: ServerProcess | None = None,
    step: Step = lambda _msg: None,
    progress: ProgressFn = _no_progress,
) -> DemoReport:
    """Run the demo in ``directory``. ``server``: the platform already launched there by
    :func:`cohortflow.demo.layout.launch_platform` on a folder :func:`~cohortflow.demo.layout.reset_directory`
    emptied; without it, both happen here."""
    if server is None:
        directory = reset_directory(directory)
        server = launch_platform(directory)
        discard_previous(directory)
    report = DemoReport(directory=directory)
    warehouse = directory / "warehouse.duckdb"

    database_url = platform_database_url(directory)
    try:
        # The server starts (a second or two of imports) while the warehouse is generated.
        step(f"Generating a DuckDB warehouse of {customers:,} customers")
        report.warehouse = generate(warehouse, customers)
        server.wait_ready()
        # The server migrated the database before it answered: migrating again here only cost CPU (alembic).
        runtime = PlatformRuntime.open(PlatformSettings(database_url=database_url), run_migrations=False)
    except BaseException:
        server.stop()
        raise
    try:
        with server:
            base_url = server.base_url
            report.rest_endpoint = base_url
            step(f"Platform serving on {base_url} (SQLite); creating a workspace and a Hightouch data import key")
            with runtime.transaction() as conn:
                ws = create_workspace(conn, "Demo workspace")
                partner = create_partner(conn, PARTNER, "Hightouch")
                _info, import_key = create_import_key(conn, ws.id, PARTNER)
            report.extras["workspace_id"] = ws.id

            step("Loading customers into the platform through /users/track and the SDK endpoint")
            report.loaded = asyncio.run(
                load_customers(
                    base_url,
                    ws.rest_api_key.plain,
                    ws.app_key.plain,
                    warehouse,
                    progress=lambda done, total: progress("requests to the platform", done, total),
                )
            )

            config_path = directory / "cohortflow.yaml"
            config_path.write_text(yaml.safe_dump(workspace_yaml(warehouse, base_url), sort_keys=False))
            keys = {
                ENV_PARTNER_KEY: partner.api_key.plain,
                ENV_IMPORT_KEY: import_key.plain,
                ENV_REST_API_KEY: ws.rest_api_key.plain,
                ENV_APP_KEY: ws.app_key.plain,
            }
            write_env(directory, int(base_url.rsplit(":", 1)[1]), keys)
            env = {**os.environ, **keys}
            state_url = f"sqlite:///{directory / 'sync-state.db'}"

            def sending(phase: str, done: int, total: int | None) -> None:
                progress({"querying": "rows read", "sending": "identifiers sent"}.get(phase, phase), done, total)

            with load_workspace(config_path, state_url=state_url, env=env) as workspace:
                step(f"Sync '{SYNC_NAME}': first run creates the cohort")
                report.runs.append(_checked(run_sync(workspace, SYNC_NAME, progress=sending)))
                report.cohort_sizes.append(_cohort(runtime, ws.id).size)

                step("Changing the warehouse: some customers spend more, some go quiet")
                report.churn = churn(warehouse)

                step(f"Sync '{SYNC_NAME}': second run sends only the changes")
                report.runs.append(_checked(run_sync(workspace, SYNC_NAME, progress=sending)))
                report.cohort = _cohort(runtime, ws.id)
                report.cohort_sizes.append(report.cohort.size)

            step("Segment 'Hightouch Cohorts includes the cohort AND country = FR', then an email campaign to it")
            _segment_and_campaign(runtime, ws.id, report)
    finally:
        runtime.close()
    return report


def _segment_and_campaign(runtime: PlatformRuntime, workspace_id: str, report: DemoReport) -> None:
    report.segment_name = f"{COHORT_NAME} in France"
    segment_filter = {
        "type": "and",
        "filters": [
            {
                "type": "partner_cohort",
                "partner": PARTNER,
                "cohort_id": f"cohortflow-{SYNC_NAME}",
                "operator": "includes",
            },
            {"type": "standard_attribute", "attribute": "country", "operator": "equals", "value": "FR"},
        ],
    }
    outbox = Outbox(report.directory / "outbox")
    with outbox as (smtp_host, smtp_port):
        messaging = MessagingSettings(smtp_host=smtp_host, smtp_port=smtp_port)
        with runtime.transaction() as conn:
            segment = create_segment(conn, workspace_id, report.segment_name, segment_filter)
            report.segment = segment_size(conn, workspace_id, segment.id, now=utcnow())
            campaign = create_campaign(
                conn,
                workspace_id,
                {
                    "name": "Merci ! A thank-you to our best customers",
                    "segment_ids": [segment.id],
                    "message": {
                        "channel": "email",
                        "from_address": "Cohortflow Demo <hello@demo.example>",
                        "subject": "Merci {{ first_name | default: 'à vous' }} !",
                        "text": "Bonjour {{ first_name | default: 'cher client' }},\n\n"
                        "Thank you for being one of our best customers.\n",
                        "html": "<p>Bonjour <b>{{ first_name | default: 'cher client' }}</b>,</p>"
                        "<p>Thank you for being one of our best customers.</p>",
                    },
                },
                settings=messaging,
            )
            send = request_send(conn, workspace_id, campaign.id)
        result = run_send(runtime.engine, messaging, send.id)
        report.campaign_counts = dict(result.counts) if result else {}
    report.emails_received = outbox.count


def _cohort(runtime: PlatformRuntime, workspace_id: str) -> CohortInfo:
    with runtime.engine.connect() as conn:
        return get_cohort(conn, workspace_id, PARTNER, f"cohortflow-{SYNC_NAME}")


def _checked(result: RunResult) -> RunResult:
    if not result.ok:
        raise RuntimeError(f"sync run {result.run_id} ended {result.status}: {result.message}")
    return result
