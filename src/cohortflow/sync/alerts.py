"""Alerts: a run failed, rejected rows above a percentage, no successful run for N hours, and recovery.

One alert per incident and one recovery message, never a flood:

- Each finished run is judged once (``sync_runs.alert_checked``) in a transaction that holds the alert lock
  (an advisory lock on PostgreSQL; SQLite's writer lock), so two ``sync serve`` processes never judge it twice.
- An incident is a ``sync_incidents`` row, open until resolved; at most one is open per (sync, kind). Opening
  one writes one notification per channel into ``sync_alert_outbox`` in the same transaction; resolving it writes
  the recovery notifications. Runs that keep failing find the incident open and write nothing.
- The outbox is sent afterwards, outside any transaction: a process claims a row (``FOR UPDATE SKIP LOCKED`` on
  PostgreSQL), sends it, marks it sent; a failed send is retried with backoff; a claim left by a process that
  died is taken over after :data:`CLAIM_TIMEOUT` (the one case where a message may go twice).

Channels: a webhook with a Slack-compatible body (``text`` and ``blocks``, plus a ``cohortflow`` object with the
facts for other receivers) and e-mail over SMTP (``COHORTFLOW_SYNC__SMTP_*``).
"""

from __future__ import annotations

import smtplib
import ssl
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

import httpx
import structlog
from sqlalchemy import Connection, and_, or_, select, text, update

from cohortflow.clock import as_utc
from cohortflow.redact import redact_url
from cohortflow.settings import SyncSettings, get_settings
from cohortflow.sync.config import AlertChannel, AlertRules, EmailChannel, WebhookChannel, WorkspaceConfig
from cohortflow.sync.errors import ConfigError
from cohortflow.sync.runs import FAILED, FINAL_STATUSES, PARTIAL, SUCCEEDED
from cohortflow.sync.state.schema import sync_alert_outbox, sync_incidents, sync_runs
from cohortflow.sync.workspace import Workspace

log = structlog.get_logger("cohortflow.sync.alerts")

FAILED_KIND, REJECTED_KIND, STALE_KIND = "failed", "rejected", "stale"
ALERT, RECOVERY = "alert", "recovery"
_PG_ALERT_LOCK = 0x616C7274
CLAIM_TIMEOUT = timedelta(minutes=5)
MAX_ATTEMPTS = 8


@dataclass(frozen=True)
class Rules:
    """A sync's effective rules: its own ``alerts:`` over the workspace's, key by key."""

    failed: bool
    rejected_rows_percent: float | None
    no_success_hours: float | None
    recovery: bool
    notify: tuple[str, ...]


def rules_for(config: WorkspaceConfig, sync_name: str) -> Rules:
    values: dict[str, Any] = {
        "failed": True,
        "rejected_rows_percent": None,
        "no_success_hours": None,
        "recovery": True,
        "notify": [],
    }
    layers: list[AlertRules | None] = [config.alerts, config.syncs[sync_name].alerts]
    for layer in layers:
        if layer is not None:
            values.update({key: getattr(layer, key) for key in layer.model_fields_set & values.keys()})
    return Rules(
        failed=values["failed"] is not False,
        rejected_rows_percent=values["rejected_rows_percent"],
        no_success_hours=values["no_success_hours"],
        recovery=values["recovery"] is not False,
        notify=tuple(values["notify"] or ()),
    )


def rejected_percent(counts: dict[str, Any]) -> float | None:
    """Rejected rows (no usable identifier, or refused by the destination) as a share of the model's rows."""
    rows = counts.get("rows") or 0
    if not rows:
        return None
    rejected = sum((counts.get("rejected") or {}).values()) + sum(
        (counts.get("rejected_by_destination") or {}).values()
    )
    return 100.0 * rejected / rows


# ------------------------------------------------------------------------------------------------ judging


def _open_incident(conn: Connection, sync_name: str, kind: str) -> Any:
    return conn.execute(
        select(sync_incidents).where(
            sync_incidents.c.sync_name == sync_name,
            sync_incidents.c.kind == kind,
            sync_incidents.c.resolved_at.is_(None),
        )
    ).first()


def _notify(
    conn: Connection, incident_id: str, event: str, rules: Rules, payload: dict[str, Any], now: datetime
) -> None:
    for channel in rules.notify:
        conn.execute(
            sync_alert_outbox.insert().values(
                incident_id=incident_id,
                event=event,
                channel=channel,
                payload=payload,
                created_at=now,
                next_attempt_at=now,
                attempts=0,
            )
        )


def _payload(event: str, kind: str, sync_name: str, message: str, run_id: str | None, base_url: str) -> dict[str, Any]:
    titles = {
        (ALERT, FAILED_KIND): f"Sync {sync_name} failed",
        (ALERT, REJECTED_KIND): f"Sync {sync_name}: too many rejected rows",
        (ALERT, STALE_KIND): f"Sync {sync_name}: no successful run",
    }
    title = titles[(event, kind)] if event == ALERT else f"Sync {sync_name} recovered"
    url = f"{base_url.rstrip('/')}/app/syncs/{sync_name}" + (f"/runs/{run_id}" if run_id else "")
    return {"title": title, "message": message, "kind": kind, "sync": sync_name, "run_id": run_id, "url": url}


def _open(
    conn: Connection,
    sync_name: str,
    kind: str,
    message: str,
    run_id: str | None,
    rules: Rules,
    now: datetime,
    base_url: str,
) -> bool:
    if _open_incident(conn, sync_name, kind) is not None:
        return False
    incident_id = uuid.uuid4().hex
    conn.execute(
        sync_incidents.insert().values(
            id=incident_id, sync_name=sync_name, kind=kind, message=message, opened_at=now, opened_run_id=run_id
        )
    )
    _notify(conn, incident_id, ALERT, rules, _payload(ALERT, kind, sync_name, message, run_id, base_url), now)
    return True


def _resolve(
    conn: Connection, sync_name: str, kind: str, run_id: str | None, rules: Rules, now: datetime, base_url: str
) -> bool:
    row = _open_incident(conn, sync_name, kind)
    if row is None:
        return False
    conn.execute(
        update(sync_incidents).where(sync_incidents.c.id == row.id).values(resolved_at=now, resolved_run_id=run_id)
    )
    if rules.recovery:
        what = {
            FAILED_KIND: "runs succeed again",
            REJECTED_KIND: "rejected rows are back under the threshold",
            STALE_KIND: "a run succeeded",
        }[kind]
        message = f"{what} (incident opened {as_utc(row.opened_at):%Y-%m-%d %H:%M} UTC: {row.message})"
        _notify(conn, row.id, RECOVERY, rules, _payload(RECOVERY, kind, sync_name, message, run_id, base_url), now)
    return True


def _judge_run(conn: Connection, config: WorkspaceConfig, run: Any, now: datetime, base_url: str) -> None:
    if run.sync_name not in config.syncs:
        return
    rules = rules_for(config, run.sync_name)
    name, run_id = run.sync_name, run.id
    if run.status == FAILED and rules.failed:
        _open(conn, name, FAILED_KIND, run.message or "the run failed", run_id, rules, now, base_url)
    if run.status == SUCCEEDED:
        _resolve(conn, name, FAILED_KIND, run_id, rules, now, base_url)
        _resolve(conn, name, STALE_KIND, run_id, rules, now, base_url)
    if run.status in (SUCCEEDED, PARTIAL) and rules.rejected_rows_percent is not None:
        percent = rejected_percent(dict(run.counts or {}))
        if percent is not None and percent > rules.rejected_rows_percent:
            message = (
                f"{percent:.1f}% of the model's rows were rejected (threshold {rules.rejected_rows_percent:g}%): "
                + ", ".join(
                    f"{k} {v}"
                    for k, v in {
                        **(run.counts.get("rejected") or {}),
                        **(run.counts.get("rejected_by_destination") or {}),
                    }.items()
                )
            )
            _open(conn, name, REJECTED_KIND, message, run_id, rules, now, base_url)
        elif percent is not None:
            _resolve(conn, name, REJECTED_KIND, run_id, rules, now, base_url)


def _judge_staleness(conn: Connection, config: WorkspaceConfig, now: datetime, base_url: str) -> None:
    for name, sync in config.syncs.items():
        rules = rules_for(config, name)
        if rules.no_success_hours is None or not sync.enabled:
            continue
        since = conn.execute(
            select(sync_runs.c.finished_at)
            .where(sync_runs.c.sync_name == name, sync_runs.c.status == SUCCEEDED, sync_runs.c.dry_run.is_(False))
            .order_by(sync_runs.c.finished_at.desc())
            .limit(1)
        ).scalar_one_or_none()
        what = "last success"
        if since is None:
            # Never succeeded: count from its first run (a sync that never ran at all has nothing to be late for).
            since = conn.execute(
                select(sync_runs.c.requested_at)
                .where(sync_runs.c.sync_name == name)
                .order_by(sync_runs.c.requested_at)
                .limit(1)
            ).scalar_one_or_none()
            what = "first run, never succeeded since"
        if since is None:
            continue
        since = as_utc(since)
        if now - since > timedelta(hours=rules.no_success_hours):
            message = f"no successful run for {rules.no_success_hours:g} hours ({what}: {since:%Y-%m-%d %H:%M} UTC)"
            _open(conn, name, STALE_KIND, message, None, rules, now, base_url)


def evaluate(workspace: Workspace, now: datetime | None = None, base_url: str | None = None) -> None:
    """Judge every finished run not judged yet and every sync's staleness; write what must be sent."""
    store = workspace.store
    now = as_utc(now or store.clock())
    base_url = base_url or get_settings().sync.public_base_url
    with store.transaction() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_ALERT_LOCK})
        runs = conn.execute(
            select(sync_runs)
            .where(
                sync_runs.c.alert_checked.is_(False),
                sync_runs.c.status.in_(FINAL_STATUSES),
                sync_runs.c.dry_run.is_(False),
            )
            .order_by(sync_runs.c.finished_at, sync_runs.c.id)
        ).all()
        for run in runs:
            _judge_run(conn, workspace.config, run, now, base_url)
        if runs:
            conn.execute(update(sync_runs).where(sync_runs.c.id.in_([r.id for r in runs])).values(alert_checked=True))
        # Dry runs are never judged; mark them so they are not read again.
        conn.execute(
            update(sync_runs)
            .where(
                sync_runs.c.alert_checked.is_(False),
                sync_runs.c.dry_run.is_(True),
                sync_runs.c.status.in_(FINAL_STATUSES),
            )
            .values(alert_checked=True)
        )
        _judge_staleness(conn, workspace.config, now, base_url)


# ------------------------------------------------------------------------------------------------ sending


def _send_webhook(channel: WebhookChannel, event: str, payload: dict[str, Any], settings: SyncSettings) -> None:
    mark = ":red_circle:" if event == ALERT else ":large_green_circle:"
    body = {
        "text": f"{mark} cohortflow: {payload['title']}",
        "blocks": [
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": f"*{payload['title']}*\n{payload['message']}\n<{payload['url']}|Open in cohortflow>",
                },
            }
        ],
        "cohortflow": {"event": event, **payload},
    }
    url = channel.url.get_secret_value()
    try:
        answer = httpx.post(url, json=body, timeout=settings.alert_webhook_timeout_seconds)
    except httpx.HTTPError as exc:
        raise RuntimeError(f"POST {redact_url(url)}: {type(exc).__name__}: {exc}") from exc
    if not 200 <= answer.status_code < 300:
        raise RuntimeError(f"POST {redact_url(url)} answered {answer.status_code}: {answer.text[:200]}")


def _send_email(channel: EmailChannel, event: str, payload: dict[str, Any], settings: SyncSettings) -> None:
    message = EmailMessage()
    message["Subject"] = f"[cohortflow] {payload['title']}"
    message["From"] = settings.alert_from
    message["To"] = ", ".join(channel.to)
    message.set_content(f"{payload['title']}\n\n{payload['message']}\n\n{payload['url']}\n")
    context = ssl.create_default_context()
    smtp: smtplib.SMTP
    if settings.smtp_ssl:
        smtp = smtplib.SMTP_SSL(
            settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout_seconds, context=context
        )
    else:
        smtp = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout_seconds)
    try:
        with smtp:
            if settings.smtp_starttls and not settings.smtp_ssl:
                smtp.starttls(context=context)
            if settings.smtp_username and settings.smtp_password:
                smtp.login(settings.smtp_username, settings.smtp_password.get_secret_value())
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        raise RuntimeError(f"SMTP {settings.smtp_host}:{settings.smtp_port}: {type(exc).__name__}: {exc}") from exc


def send(channel: AlertChannel, event: str, payload: dict[str, Any], settings: SyncSettings) -> None:
    if isinstance(channel, WebhookChannel):
        _send_webhook(channel, event, payload, settings)
    else:
        _send_email(channel, event, payload, settings)


def _claim(workspace: Workspace, worker_id: str, now: datetime, limit: int) -> list[Any]:
    with workspace.store.transaction() as conn:
        query = (
            select(sync_alert_outbox)
            .where(
                sync_alert_outbox.c.sent_at.is_(None),
                sync_alert_outbox.c.attempts < MAX_ATTEMPTS,
                sync_alert_outbox.c.next_attempt_at <= now,
                or_(sync_alert_outbox.c.claimed_at.is_(None), sync_alert_outbox.c.claimed_at < now - CLAIM_TIMEOUT),
            )
            .order_by(sync_alert_outbox.c.id)
            .limit(limit)
        )
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        rows = conn.execute(query).all()
        if rows:
            conn.execute(
                update(sync_alert_outbox)
                .where(sync_alert_outbox.c.id.in_([r.id for r in rows]))
                .values(claimed_by=worker_id, claimed_at=now)
            )
    return list(rows)


def deliver(workspace: Workspace, worker_id: str = "cli", settings: SyncSettings | None = None, limit: int = 50) -> int:
    """Send what the outbox holds (a claimed batch); returns how many were sent."""
    settings = settings or get_settings().sync
    store = workspace.store
    sent = 0
    for row in _claim(workspace, worker_id, as_utc(store.clock()), limit):
        channel = workspace.config.alerts.channels.get(row.channel)
        error: str | None = None
        if channel is None:
            error = f"alert channel {row.channel!r} is no longer declared in {workspace.path.name}"
        else:
            try:
                workspace.require_env("alerts", "channels", row.channel)
                send(channel, row.event, dict(row.payload), settings)
            except (RuntimeError, ConfigError) as exc:
                error = str(exc)
        now = as_utc(store.clock())
        with store.transaction() as conn:
            where = and_(sync_alert_outbox.c.id == row.id, sync_alert_outbox.c.claimed_by == worker_id)
            if error is None:
                conn.execute(update(sync_alert_outbox).where(where).values(sent_at=now, attempts=row.attempts + 1))
                sent += 1
            else:
                attempts = row.attempts + 1
                log.warning("alert not delivered", channel=row.channel, attempt=attempts, error=error)
                conn.execute(
                    update(sync_alert_outbox)
                    .where(where)
                    .values(
                        attempts=attempts,
                        last_error=error,
                        claimed_by=None,
                        claimed_at=None,
                        next_attempt_at=now + timedelta(seconds=min(600, 2**attempts)),
                    )
                )
    return sent


def open_incidents(workspace: Workspace, sync_name: str | None = None) -> list[Any]:
    query = select(sync_incidents).where(sync_incidents.c.resolved_at.is_(None)).order_by(sync_incidents.c.opened_at)
    if sync_name is not None:
        query = query.where(sync_incidents.c.sync_name == sync_name)
    with workspace.store.engine.connect() as conn:
        return list(conn.execute(query).all())


def tick_hook(worker_id: str) -> Any:
    """The runner's per-tick hook: judge, then send."""

    def alerts(workspace: Workspace) -> None:
        evaluate(workspace)
        deliver(workspace, worker_id)

    alerts.__name__ = "alerts"
    return alerts
