"""The sync tool (the Hightouch role): keep a cohort in a Braze-compatible platform equal to a model.

Public API::

    from cohortflow.sync import load_workspace, run_sync

    with load_workspace("cohortflow.yaml") as ws:
        result = run_sync(ws, "vip", dry_run=False, full_resync=False)

See ``docs/sync.md``.
"""

from cohortflow.sync.engine import RunResult, run_sync
from cohortflow.sync.runs import RunRecord, get_run, list_runs
from cohortflow.sync.workspace import Workspace, load_workspace

__all__ = ["RunRecord", "RunResult", "Workspace", "get_run", "list_runs", "load_workspace", "run_sync"]
