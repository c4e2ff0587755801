"""The sync state database in SQLAlchemy Core (SQLite by default, PostgreSQL in production).

Confirmed membership is keyed by the identifier exactly as it was sent (kind, alias label, value), not by
the model's primary key: a row whose identifier changes is then naturally one remove and one add, and what
the table says is precisely what the destination acknowledged.

Migrations in ``migrations/versions`` are kept in step with this module; a test compares them.
"""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Column, Float, ForeignKey, Index, Integer, String, Table, Text

from cohortflow.sqltypes import TS, BigId, new_metadata

metadata = new_metadata()

# One row per sync: where its membership lives and the cohort name the destination confirmed.
sync_states = Table(
    "sync_states",
    metadata,
    Column("sync_name", String(200), primary_key=True),
    # Destination + cohort (or attribute). When it changes, confirmed membership no longer describes the target.
    Column("target", String(2048), nullable=False),
    Column("cohort_name", String(1024)),
    # A new random value in every transaction that changes this sync's sync_members: a columnar snapshot
    # of membership is used only while it carries the current token (see state/snapshot.py).
    Column("members_token", String(32)),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
)

# kind: "e" external id, "a" alias (label is the alias label), "d" device id. label is "" unless an alias.
sync_members = Table(
    "sync_members",
    metadata,
    Column("sync_name", String(200), primary_key=True),
    Column("kind", String(1), primary_key=True),
    Column("label", String(255), primary_key=True),
    Column("value", String(1024), primary_key=True),
    Column("confirmed_at", TS, nullable=False),
)

# Identifiers the destination *rejected* (a 400 isolating them: certainly not applied), op "add" or "remove".
# ``runs`` counts the runs that saw the rejection; at the sync's ``quarantine_after_runs`` the identifier is
# quarantined: no longer planned until ``--retry-rejected`` (see sync/quarantine.py).
sync_failures = Table(
    "sync_failures",
    metadata,
    Column("sync_name", String(200), primary_key=True),
    Column("kind", String(1), primary_key=True),
    Column("label", String(255), primary_key=True),
    Column("value", String(1024), primary_key=True),
    Column("op", String(6), primary_key=True),
    Column("reason", String(1000), nullable=False),
    Column("run_id", String(36), nullable=False),
    Column("failed_at", TS, nullable=False),
    Column("runs", Integer, nullable=False, default=1),
    Column("first_failed_at", TS),
)

# Batches sent (or about to be) whose answer has not been recorded: written before the request goes out and
# deleted in the transaction that confirms it. What is left after a crash, a timeout or exhausted retries is
# *uncertain*: the destination may or may not have applied it, so the next plan sends those identities their
# current desired state (see docs/sync.md). ``ids`` is a JSON array of [kind, label, value]: one row per
# batch keeps the happy path to one small insert and one delete per request.
sync_batches = Table(
    "sync_batches",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("sync_name", String(200), nullable=False),
    Column("run_id", String(36), nullable=False),
    Column("op", String(6), nullable=False),  # add, remove, or carried (uncertainty compacted from older batches)
    Column("ids", Text, nullable=False),
    Column("size", Integer, nullable=False),
    Column("status", String(8), nullable=False),  # sending, failed
    Column("reason", String(1000)),
    Column("created_at", TS, nullable=False),
    Index("ix_sync_batches_sync_name", "sync_name"),
)

# A run is also the queue: ``sync serve`` (and its API and web app) insert a row ``queued``; a service process
# claims it (``worker_id``) and runs it under the same id, so a triggered run is followed by one id throughout.
sync_runs = Table(
    "sync_runs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("sync_name", String(200), nullable=False),
    # queued querying planning sending | succeeded failed partial cancelled
    Column("status", String(16), nullable=False),
    Column("dry_run", Boolean, nullable=False, default=False),
    Column("full_resync", Boolean, nullable=False, default=False),
    Column("reconcile", Boolean, nullable=False, default=False),
    Column("retry_rejected", Boolean, nullable=False, default=False),
    # Who asked: cli, api, web, schedule, after:<sync>
    Column("trigger", String(250)),
    Column("requested_at", TS),
    Column("cancel_requested_at", TS),
    # The ``sync serve`` process running it (sync_workers.id); null for a run started by ``cohortflow sync run``.
    Column("worker_id", String(64)),
    # Whether the alert rules have looked at this finished run (each run is judged once, by one process).
    Column("alert_checked", Boolean, nullable=False, default=False),
    Column("started_at", TS, nullable=False),
    Column("finished_at", TS),
    Column("phases", JSON, nullable=False, default=dict),  # phase -> seconds
    Column("counts", JSON, nullable=False, default=dict),
    Column("errors", JSON, nullable=False, default=list),  # first errors: {"reason", "count", "samples"}
    Column("message", Text),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Index("ix_sync_runs_sync_started", "sync_name", "started_at"),
    Index("ix_sync_runs_status", "status"),
)

# One run at a time per sync. A row is held by a live run; a dead holder (its process is gone, or its
# heartbeat is stale) is taken over, so kill -9 never leaves a sync locked.
sync_locks = Table(
    "sync_locks",
    metadata,
    Column("sync_name", String(200), primary_key=True),
    Column("run_id", String(36), nullable=False),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("acquired_at", TS, nullable=False),
    Column("heartbeat_at", TS, nullable=False),
)

# The scheduler's memory per sync: the schedule it last saw (a change restarts the count) and when the sync is
# next due. ``after_run_id`` is the upstream run that last fired an ``after`` schedule, so each success of the
# upstream sync fires it once, whichever process sees it first.
sync_schedules = Table(
    "sync_schedules",
    metadata,
    Column("sync_name", String(200), primary_key=True),
    Column("schedule", String(500), nullable=False),
    Column("next_run_at", TS),
    Column("last_enqueued_at", TS),
    Column("after_run_id", String(36)),
    Column("updated_at", TS, nullable=False),
)

# ``sync serve`` processes, each with a heartbeat: a run claimed by a process that stopped beating is closed as
# abandoned, and its slot under the global cap is freed.
sync_workers = Table(
    "sync_workers",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", TS, nullable=False),
    Column("heartbeat_at", TS, nullable=False),
)

# Bearer tokens of the REST API (``cohortflow sync token create``): only the SHA-256 digest is stored.
sync_api_tokens = Table(
    "sync_api_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("display_prefix", String(32), nullable=False),
    Column("created_at", TS, nullable=False),
    Column("last_used_at", TS),
    Column("revoked_at", TS),
)

# Alert incidents: one open row per (sync, kind) at most (kind: failed, rejected, stale). An incident is announced
# once when it opens and once when it is resolved (recovery), never per run in between.
sync_incidents = Table(
    "sync_incidents",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("sync_name", String(200), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("message", Text, nullable=False),
    Column("opened_at", TS, nullable=False),
    Column("opened_run_id", String(36)),
    Column("resolved_at", TS),
    Column("resolved_run_id", String(36)),
    Index("ix_sync_incidents_sync_kind", "sync_name", "kind"),
)

# Notifications to send, written in the transaction that opens or resolves an incident (so a crash never loses
# one and a decision is never sent twice), then claimed and sent by one process, with retries.
sync_alert_outbox = Table(
    "sync_alert_outbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("incident_id", String(32), nullable=False),
    Column("event", String(16), nullable=False),  # alert, recovery
    Column("channel", String(200), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("next_attempt_at", TS, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("claimed_by", String(64)),
    Column("claimed_at", TS),
    Column("sent_at", TS),
    Column("last_error", Text),
    Index("ix_sync_alert_outbox_sent_at", "sent_at"),
)

# The live request debugger: a bounded sample of each run's requests to the destination (body sample with the
# credentials masked, status, answer, duration, attempt), written by the delivery loop with its own commits.
sync_run_requests = Table(
    "sync_run_requests",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("run_id", String(36), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("at", TS, nullable=False),
    Column("method", String(10), nullable=False),
    Column("url", String(2048), nullable=False),
    Column("body", Text, nullable=False),
    Column("status", Integer),
    Column("answer", Text),
    Column("duration_ms", Float, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("error", Text),
    Index("ix_sync_run_requests_run_seq", "run_id", "seq"),
)

# The web app's users (roles: admin configures; operator runs and watches), their server-side sessions and the
# counters of the sign-in throttle: in the state database, so every `sync serve` process shares them.
sync_web_users = Table(
    "sync_web_users",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("role", String(16), nullable=False),
    Column("created_at", TS, nullable=False),
    Column("last_login_at", TS),
    Column("disabled_at", TS),
)

sync_web_sessions = Table(
    "sync_web_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("user_id", BigId, ForeignKey("sync_web_users.id", ondelete="CASCADE"), nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", TS, nullable=False),
    Column("expires_at", TS, nullable=False),
    Index("ix_sync_web_sessions_user_id", "user_id"),
)

sync_rate_counters = Table(
    "sync_rate_counters",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("count", Integer, nullable=False),
    Column("expires_at", Float, nullable=False),
)
