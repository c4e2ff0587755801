"""Fresh planner statistics on a PostgreSQL server whose autovacuum is off.

Every lookup of a request's users is planned from the statistics of ``users`` and its identity tables. Autovacuum
refreshes them as tables grow; with it off, the statistics stay those of the last ``ANALYZE``, the planner
believes a workspace holds a handful of rows, and each lookup reads the whole workspace (BENCHMARKS.md:
``/users/track``'s general path went from 8.7 ms a request at 75 users to 113 ms at 135,000). The messaging
worker, which runs in every API server by default, calls :func:`analyze_stale_tables` once a minute and does
autovacuum's analyze for these tables: a table changed by more than autovacuum's default threshold since its
last ``ANALYZE`` is analyzed. With autovacuum on it does nothing.
"""

from __future__ import annotations

import structlog
from sqlalchemy import Connection, Engine

log = structlog.get_logger(__name__)

#: The tables whose statistics request lookups depend on.
LOOKUP_TABLES = ("users", "user_aliases", "user_devices", "cohort_members", "canvas_positions")
#: autovacuum_analyze_threshold and autovacuum_analyze_scale_factor's defaults: rows changed since the last
#: ANALYZE before a table is analyzed again.
ANALYZE_THRESHOLD_ROWS = 50
ANALYZE_SCALE_FACTOR = 0.1
#: How often a worker looks (a few catalogue reads).
CHECK_EVERY_SECONDS = 60.0
# Any constant: one process of all those sharing the database analyzes at a time.
_LOCK = 0x63665354

_STALE = """
SELECT s.relname
FROM pg_stat_user_tables AS s JOIN pg_class AS c ON c.oid = s.relid
WHERE s.schemaname = current_schema() AND s.relname = ANY(%s)
  AND s.n_mod_since_analyze > %s + %s * greatest(c.reltuples, 0)
ORDER BY s.relname
"""


def _autovacuum_off(conn: Connection) -> bool:
    return conn.exec_driver_sql("SHOW autovacuum").scalar() == "off"


def autovacuum_warning(engine: Engine) -> str | None:
    """What to tell the operator when PostgreSQL's autovacuum is off, or None: :func:`analyze_stale_tables` makes
    up for its analyzing of the user tables, not for its vacuuming."""
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as conn:
        if not _autovacuum_off(conn):
            return None
    return (
        "PostgreSQL's autovacuum is off: the messaging worker analyzes the user tables once a minute as they grow, "
        "but nothing vacuums them and other tables' statistics go stale; turn it on (ALTER SYSTEM SET autovacuum "
        "= on; SELECT pg_reload_conf())"
    )


def analyze_stale_tables(engine: Engine, tables: tuple[str, ...] = LOOKUP_TABLES) -> list[str]:
    """``ANALYZE`` each of ``tables`` that changed past autovacuum's threshold, when autovacuum is off
    (PostgreSQL only); the tables analyzed."""
    if engine.dialect.name != "postgresql":
        return []
    with engine.begin() as conn:
        if not _autovacuum_off(conn):
            return []
        if not conn.exec_driver_sql("SELECT pg_try_advisory_xact_lock(%s)", (_LOCK,)).scalar():
            return []  # another worker is at it
        stale = [
            str(name)
            for (name,) in conn.exec_driver_sql(
                _STALE, (list(tables), ANALYZE_THRESHOLD_ROWS, ANALYZE_SCALE_FACTOR)
            ).all()
        ]
        for name in stale:
            conn.exec_driver_sql(f'ANALYZE "{name}"')
    if stale:
        log.info("analyzed tables autovacuum would have", tables=stale)
    return stale
