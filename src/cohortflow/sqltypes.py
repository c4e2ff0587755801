"""Column types and constraint naming shared by the platform schema and the sync state schema."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, DateTime, Integer, MetaData
from sqlalchemy.dialects.postgresql import JSONB

# Autoincrementing 64-bit keys: SQLite only autoincrements INTEGER PRIMARY KEY (its rowid).
BigId = BigInteger().with_variant(Integer(), "sqlite")
# JSONB on PostgreSQL so filters on JSON documents can use its operators and indexes.
Json = JSON().with_variant(JSONB(), "postgresql")
TS = DateTime(timezone=True)

# Deterministic constraint names, so migrations can name what they drop on both databases.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_metadata() -> MetaData:
    return MetaData(naming_convention=NAMING_CONVENTION)
