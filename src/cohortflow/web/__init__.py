"""The web kit both products' pages are built on: login, sessions, CSRF, throttling, base layout, assets.

It imports neither ``cohortflow.platform`` nor ``cohortflow.sync``: each product supplies its own account and
session storage through the small protocols in :mod:`cohortflow.web.sessions` and :mod:`cohortflow.web.auth`,
so the dashboard and the sync tool's web app share this code without either importing the other.
"""

from cohortflow.web.kit import WebKit

__all__ = ["WebKit"]
