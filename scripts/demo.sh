#!/usr/bin/env bash
# Install cohortflow into .venv (pinned by constraints.txt) and run the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# The install is editable, so code changes need no reinstall: pip runs again only when the dependencies or
# the pins changed since the last install (pip takes seconds even when everything is already there).
stamp=.venv/.cohortflow-demo-installed
wanted="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ ! -x .venv/bin/cohortflow ] || [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c constraints.txt -e .
  echo "$wanted" > "$stamp"
fi
exec .venv/bin/cohortflow demo "$@"
