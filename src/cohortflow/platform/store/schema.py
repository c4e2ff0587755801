"""The platform's relational schema, for SQLite and PostgreSQL, in SQLAlchemy Core.

Every table carries ``workspace_id`` (directly or through its parent) so that no query can cross
workspaces by accident: the domain functions always filter on it.

Migrations in ``migrations/versions`` must be kept in step with this module; a test compares them.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
    false,
    func,
    text,
)

from cohortflow.sqltypes import TS, BigId, Json, new_metadata

metadata = new_metadata()

workspaces = Table(
    "workspaces",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_at", TS, nullable=False),
)

# REST API keys (``Authorization: Bearer``) for the /users/* endpoints.
rest_api_keys = Table(
    "rest_api_keys",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("workspace_id", String(64), ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("display_prefix", String(32), nullable=False),
    Column("name", String(200), nullable=False, server_default=""),
    Column("created_at", TS, nullable=False),
    Column("last_used_at", TS),
    Column("revoked_at", TS),
)

# App identifiers for the SDK-style ingestion endpoint. Braze's app API key identifies an app and is
# embedded in shipped apps, so it is not a secret; it is still stored hashed like every other key.
app_keys = Table(
    "app_keys",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("workspace_id", String(64), ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("display_prefix", String(32), nullable=False),
    Column("name", String(200), nullable=False, server_default=""),
    Column("created_at", TS, nullable=False),
    Column("last_used_at", TS),
    Column("revoked_at", TS),
)

partners = Table(
    "partners",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False, unique=True),  # path segment, lower case: "hightouch"
    Column("display_name", String(200), nullable=False),  # "Hightouch": the filter reads "Hightouch Cohorts"
    Column("created_at", TS, nullable=False),
)

# A partner's API keys. Usually one is live; during a rotation two are, so the partner can switch over
# without a failed request, and the old one is revoked afterwards.
partner_api_keys = Table(
    "partner_api_keys",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("partner_id", BigId, ForeignKey("partners.id", ondelete="CASCADE"), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("display_prefix", String(32), nullable=False),
    Column("created_at", TS, nullable=False),
    Column("last_used_at", TS),
    Column("revoked_at", TS),
    Index("ix_partner_api_keys_partner_id", "partner_id"),
)

# Operator tokens authenticate the platform-wide admin API (/admin/...), e.g. partner key rotation, which no
# workspace's key may do. Created by the CLI (shell access to the platform is the root of trust).
operator_tokens = Table(
    "operator_tokens",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("display_prefix", String(32), nullable=False),
    Column("created_at", TS, nullable=False),
    Column("last_used_at", TS),
    Column("revoked_at", TS),
)

data_import_keys = Table(
    "data_import_keys",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("workspace_id", String(64), ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("partner_id", BigId, ForeignKey("partners.id", ondelete="CASCADE"), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("display_prefix", String(32), nullable=False),
    Column("created_at", TS, nullable=False),
    Column("last_used_at", TS),
    Column("invalidated_at", TS),
    Index("ix_data_import_keys_ws_partner", "workspace_id", "partner_id"),
)

# Dashboard sign-in accounts (not the end users above). ``role`` is "admin" or "marketer".
dashboard_users = Table(
    "dashboard_users",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("password_hash", String(200), nullable=False),
    Column("role", String(20), nullable=False),
    Column("created_at", TS, nullable=False),
    Column("last_login_at", TS),
    Column("disabled_at", TS),
)

# Which workspaces a dashboard user may see; every dashboard query is scoped by one of these.
dashboard_user_workspaces = Table(
    "dashboard_user_workspaces",
    metadata,
    Column("user_id", BigId, ForeignKey("dashboard_users.id", ondelete="CASCADE"), primary_key=True),
    Column("workspace_id", String(64), ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True),
)

# Server-side dashboard sessions: the browser holds the token, this table its SHA-256 digest.
dashboard_sessions = Table(
    "dashboard_sessions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("user_id", BigId, ForeignKey("dashboard_users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", TS, nullable=False),
    Column("expires_at", TS, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("workspace_id", String(64), ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("braze_id", String(32), nullable=False, unique=True),
    Column("external_id", String(512)),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    # Standard profile attributes as columns so segments can filter and index them.
    Column("first_name", String(255)),
    Column("last_name", String(255)),
    Column("email", String(320)),
    Column("phone", String(64)),
    Column("country", String(64)),
    Column("home_city", String(255)),
    Column("language", String(32)),
    Column("gender", String(16)),
    Column("dob", String(10)),
    Column("time_zone", String(64)),
    Column("email_subscribe", String(16)),  # subscribed | opted_in | unsubscribed
    Column("push_subscribe", String(16)),
    Column("custom_attributes", Json, nullable=False, default=dict),
    # A stable pseudo-random bucket 0..9999 for holdouts ("random bucket" segment filter).
    Column("random_bucket", Integer, nullable=False, default=0),
    # Unique indexes that also carry the user id (INCLUDE, PostgreSQL): cohort import's matching then reads
    # only the index, never the table. SQLite's indexes carry the rowid, which is the id, already.
    Index("uq_users_workspace_external_id", "workspace_id", "external_id", unique=True, postgresql_include=["id"]),
)

user_aliases = Table(
    "user_aliases",
    metadata,
    Column("workspace_id", String(64), nullable=False),
    Column("alias_label", String(255), nullable=False),
    Column("alias_name", String(512), nullable=False),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", TS, nullable=False),
    Index(
        "uq_user_aliases_label_name",
        "workspace_id",
        "alias_label",
        "alias_name",
        unique=True,
        postgresql_include=["user_id"],
    ),
    # One name per label per user.
    UniqueConstraint("user_id", "alias_label", name="uq_user_aliases_user_label"),
)

user_devices = Table(
    "user_devices",
    metadata,
    Column("workspace_id", String(64), nullable=False),
    Column("device_id", String(512), nullable=False),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", TS, nullable=False),
    Column("last_seen_at", TS, nullable=False),
    Index("uq_user_devices_workspace_device", "workspace_id", "device_id", unique=True, postgresql_include=["user_id"]),
    Index("ix_user_devices_user_id", "user_id"),
)

user_events = Table(
    "user_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("workspace_id", String(64), nullable=False),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("time", TS, nullable=False),
    Column("properties", Json, nullable=False, default=dict),
    Index("ix_user_events_user_name_time", "user_id", "name", "time"),
)

user_purchases = Table(
    "user_purchases",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("workspace_id", String(64), nullable=False),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("product_id", String(255), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("price", Float, nullable=False),
    Column("quantity", Integer, nullable=False, default=1),
    Column("time", TS, nullable=False),
    Column("properties", Json, nullable=False, default=dict),
    Index("ix_user_purchases_user_time", "user_id", "time"),
)

cohorts = Table(
    "cohorts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("workspace_id", String(64), ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("partner_id", BigId, ForeignKey("partners.id", ondelete="CASCADE"), nullable=False),
    Column("cohort_id", String(512), nullable=False),  # the partner's id
    Column("name", String(1024), nullable=False),
    Column("partner_created_at", TS),  # ``created_at`` as the partner sent it
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    Column("last_import_at", TS),
    UniqueConstraint("workspace_id", "partner_id", "cohort_id", name="uq_cohorts_ws_partner_cohort"),
)

cohort_members = Table(
    "cohort_members",
    metadata,
    # No foreign keys, on purpose: their per-row checks (a lookup and a row lock on users and cohorts for
    # every inserted member) tripled the cost of a 1,000-identifier import. Imports insert only users they
    # just matched, and identity.delete_users / merge_users delete memberships explicitly.
    # No index on user_id alone either (see cohorts.in_workspace_cohorts): the primary key serves both the
    # segments (members of a cohort) and one user's memberships (one probe per cohort of the workspace).
    Column("cohort_pk", BigId, primary_key=True),
    Column("user_id", BigId, primary_key=True),
    Column("added_at", TS, nullable=False),
)

cohort_imports = Table(
    "cohort_imports",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("workspace_id", String(64), nullable=False),
    Column("partner_id", BigId, nullable=False),
    Column("cohort_pk", BigId, ForeignKey("cohorts.id", ondelete="CASCADE"), nullable=False),
    Column("at", TS, nullable=False),
    Column("received", Integer, nullable=False),
    Column("matched", Integer, nullable=False),
    Column("unmatched", Integer, nullable=False),
    Column("added", Integer, nullable=False),
    Column("removed", Integer, nullable=False),
    Column("unchanged", Integer, nullable=False),
    Column("unmatched_sample", Json, nullable=False, default=list),
    Index("ix_cohort_imports_cohort_at", "cohort_pk", "at"),
    Index("ix_cohort_imports_at", "at"),
)

# The partner rate limit's counters (cohortflow.platform.ratelimit.DatabaseStorage), shared by every server
# process on this database: one row per limit key, its count and when its window ends (epoch seconds).
rate_limit_counters = Table(
    "rate_limit_counters",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("count", BigId, nullable=False),
    Column("expires_at", Float, nullable=False),
)

# --- segments

# A segment is a saved filter tree; membership is never stored, it is evaluated whenever asked.
segments = Table(
    "segments",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("workspace_id", String(64), ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("filter", Json, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    Index("ix_segments_workspace_created", "workspace_id", "created_at"),
)

# "Cohort AND country" segments count from this index alone (see migration 0002).
Index("ix_users_workspace_country", users.c.workspace_id, users.c.country, users.c.id)
# Users found by email address, as identity.find_by_email compares it (migration 0010).
Index("ix_users_workspace_email_lower", users.c.workspace_id, func.lower(users.c.email))

# --- messaging

# A campaign: one message on one channel to target segments. ``definition`` holds the validated
# CampaignDefinition (segments, extra filter, message templates, channel settings, rate limit).
campaigns = Table(
    "campaigns",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("workspace_id", String(64), ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("definition", Json, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    UniqueConstraint("workspace_id", "name", name="uq_campaigns_workspace_name"),
)

# A campaign's target segments. The foreign key (no cascade) keeps a targeted segment from being deleted.
campaign_segments = Table(
    "campaign_segments",
    metadata,
    Column("campaign_id", String(64), ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True),
    Column("segment_id", String(64), ForeignKey("segments.id"), primary_key=True),
    Index("ix_campaign_segments_segment_id", "segment_id"),
)

# One execution of a campaign. Any number of workers share a running send (each claims its own batches of
# ``campaign_deliveries``); ``immediate`` marks a "send now", of which a campaign has at most one pending or running
# (the partial unique index below), so a double-clicked "Send now" starts one send. The lease columns serve sends
# with a rate limit, which one process at a time runs so that the limit holds.
campaign_sends = Table(
    "campaign_sends",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("workspace_id", String(64), nullable=False),
    Column("campaign_id", String(64), ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False),
    Column("status", String(16), nullable=False),  # scheduled | running | completed | canceled
    Column("scheduled_at", TS, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("started_at", TS),
    Column("finished_at", TS),
    Column("audience_size", Integer),  # set when the audience is evaluated, at the start of the send
    Column("lease_owner", String(64)),
    Column("lease_expires_at", TS),
    Column("immediate", Boolean, nullable=False, server_default=false()),
    Index("ix_campaign_sends_status_scheduled", "status", "scheduled_at"),
    Index("ix_campaign_sends_campaign", "campaign_id"),
    Index(
        "uq_campaign_sends_one_immediate",
        "campaign_id",
        unique=True,
        sqlite_where=text("immediate AND status IN ('scheduled', 'running')"),
        postgresql_where=text("immediate AND status IN ('scheduled', 'running')"),
    ),
)

# Delivery rows are written once and updated twice (claim, outcome); half-empty pages leave room for both.
DELIVERY_FILLFACTOR = 50

# The per-user send log. The primary key is the "never twice in one send" guarantee: a row is claimed
# (status ``claimed``) in its own committed transaction before the message leaves.
campaign_deliveries = Table(
    "campaign_deliveries",
    metadata,
    Column("send_id", BigId, ForeignKey("campaign_sends.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("status", String(16), nullable=False),  # pending | claimed | sent | failed | skipped
    Column("reason", String(1000)),
    Column("attempts", Integer, nullable=False, default=0),
    Column("updated_at", TS, nullable=False),
    # Which worker holds a claimed row, and until when: an expired claim is a dead worker's in-flight window.
    Column("claimed_by", String(64)),
    Column("claimed_until", TS),
    # Claims walk the primary key in user id order from a cursor, so they never rescan rows already done. No
    # index names ``status`` (or any column a claim or an outcome changes), and pages start half empty, so both
    # updates of a row are HOT on PostgreSQL: no index entries written, the row stays on its page.
    postgresql_with={"fillfactor": DELIVERY_FILLFACTOR},
)

canvases = Table(
    "canvases",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("workspace_id", String(64), ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("definition", Json, nullable=False),
    # The entry audience; the foreign key (no cascade) keeps the segment from being deleted under the Canvas.
    Column("entry_segment_id", String(64), ForeignKey("segments.id"), nullable=False),
    Column("status", String(16), nullable=False),  # draft | active | stopped
    Column("next_entry_at", TS),  # when the entry audience is next evaluated; NULL: no more entries
    Column("last_entry_at", TS),
    Column("lease_owner", String(64)),
    Column("lease_expires_at", TS),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    Column("started_at", TS),
    UniqueConstraint("workspace_id", "name", name="uq_canvases_workspace_name"),
    Index("ix_canvases_status", "status"),
)

# Where each user is in a Canvas: one row per user, reset when the Canvas lets the user re-enter.
canvas_positions = Table(
    "canvas_positions",
    metadata,
    Column("canvas_id", String(64), ForeignKey("canvases.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("step_id", String(64), nullable=False),
    Column("state", String(16), nullable=False),  # active | exited
    Column("due_at", TS),
    Column("entered_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    Column("entries", Integer, nullable=False, server_default="1"),  # how many times the user entered
    Column("exited_at", TS),
    Index("ix_canvas_positions_due", "canvas_id", "state", "due_at"),
)

# What happened to each user at each step: ``entered``, ``path`` (with the path's name) and ``exited``.
canvas_step_events = Table(
    "canvas_step_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("canvas_id", String(64), ForeignKey("canvases.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("step_id", String(64), nullable=False),
    Column("event", String(16), nullable=False),
    Column("path", String(200)),
    Column("at", TS, nullable=False),
    Index("ix_canvas_step_events_canvas_step", "canvas_id", "step_id", "event"),
)

# Message steps' send log, claimed before delivery exactly like ``campaign_deliveries``.
canvas_deliveries = Table(
    "canvas_deliveries",
    metadata,
    Column("canvas_id", String(64), ForeignKey("canvases.id", ondelete="CASCADE"), primary_key=True),
    Column("step_id", String(64), primary_key=True),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    # Which of the user's entries into the Canvas (re-entry starts a new one, with its own messages).
    Column("entry", Integer, primary_key=True, server_default="1"),
    Column("status", String(16), nullable=False),  # pending | claimed | sent | failed | skipped
    Column("reason", String(1000)),
    Column("attempts", Integer, nullable=False, default=0),
    Column("updated_at", TS, nullable=False),
    Column("claimed_by", String(64)),
    Column("claimed_until", TS),
    # As ``campaign_deliveries``: claims walk the primary key, and claim and outcome updates stay HOT.
    postgresql_with={"fillfactor": DELIVERY_FILLFACTOR},
)

# Global frequency capping: at most ``max_messages`` per user per channel in any ``period_seconds`` (a workspace
# setting; a campaign or Canvas may ignore it).
frequency_caps = Table(
    "frequency_caps",
    metadata,
    Column("workspace_id", String(64), ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True),
    Column("channel", String(16), primary_key=True),
    Column("max_messages", Integer, nullable=False),
    Column("period_seconds", Integer, nullable=False),
)

# Messages that count toward frequency caps, written when the message is claimed (and removed if it fails).
message_receipts = Table(
    "message_receipts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("source", String(200), nullable=False),  # the idempotency key of the message
    Column("at", TS, nullable=False),
    Index("ix_message_receipts_user_channel_at", "user_id", "channel", "at"),
    Index("ix_message_receipts_source", "source"),
)
