"""The platform's dashboard: server-rendered pages over the same domain functions as the API and the CLI.

``app.py`` builds it on the web kit (:mod:`cohortflow.web`); ``access.py`` decides who sees what; each module
in ``views/`` serves one kind of page.
"""

MOUNT_PATH = "/dashboard"
