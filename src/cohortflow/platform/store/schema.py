"""The platform's relational schema, for SQLite and PostgreSQL, in SQLAlchemy Core.

Every table carries ``workspace_id`` (directly or through its parent) so that no query can cross
workspaces by accident: the domain functions always filter on it.

Migrations in ``migrations/versions`` must be kept in step with this module; a test compares them.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB

# Autoincrementing 64-bit keys: SQLite only autoincrements INTEGER PRIMARY KEY (its rowid).
BigId = BigInteger().with_variant(Integer(), "sqlite")
# JSONB on PostgreSQL so segment filters on custom attributes can use its operators and indexes.
Json = JSON().with_variant(JSONB(), "postgresql")
TS = DateTime(timezone=True)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

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
    Column("revoked_at", TS),
)

partners = Table(
    "partners",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False, unique=True),  # path segment, lower case: "hightouch"
    Column("display_name", String(200), nullable=False),  # "Hightouch": the filter reads "Hightouch Cohorts"
    Column("api_key_hash", String(64), nullable=False, unique=True),
    Column("api_key_prefix", String(32), nullable=False),
    Column("created_at", TS, nullable=False),
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
    UniqueConstraint("workspace_id", "external_id", name="uq_users_workspace_external_id"),
)

user_aliases = Table(
    "user_aliases",
    metadata,
    Column("workspace_id", String(64), nullable=False),
    Column("alias_label", String(255), nullable=False),
    Column("alias_name", String(512), nullable=False),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", TS, nullable=False),
    UniqueConstraint("workspace_id", "alias_label", "alias_name", name="uq_user_aliases_label_name"),
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
    UniqueConstraint("workspace_id", "device_id", name="uq_user_devices_workspace_device"),
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
    Column("cohort_pk", BigId, ForeignKey("cohorts.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("added_at", TS, nullable=False),
    Index("ix_cohort_members_user_id", "user_id"),
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
