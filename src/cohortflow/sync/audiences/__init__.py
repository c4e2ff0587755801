"""Audiences: marketers build cohorts over warehouse data without writing SQL (Hightouch's Customer Studio).

``cohortflow.yaml`` declares a schema (parent models, their related models, events and traits) and audiences
as typed filter trees over it; each audience compiles to one SQL query for its source's dialect, which a sync
sends like any model (``syncs.NAME.audience``). See ``docs/audiences.md``.

Modules: ``filters`` (the tree), ``config`` (the YAML classes), ``schema`` (name resolution), ``validate``
(checks across the file), ``dialects``, ``compiler``, ``service`` (size, overlap, schema: the functions the
CLI and the sync service's pages call), ``cli``. This package imports none of them itself: ``sync.config``
imports ``config`` while the compiler imports ``sync.config``.
"""
