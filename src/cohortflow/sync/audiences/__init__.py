"""Audiences: marketers build cohorts over warehouse data without writing SQL (Hightouch's Customer Studio).

``cohortflow.yaml`` declares a schema (parent models, their related models, events and traits) and audiences
as typed filter trees over it; see ``docs/audiences.md``.
"""
