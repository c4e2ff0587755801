#!/usr/bin/env bash
# Install cohortflow into .venv (pinned by constraints.txt) and run the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints.txt -e .
exec .venv/bin/cohortflow demo "$@"
