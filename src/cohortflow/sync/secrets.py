"""Where a workspace's ``${VAR}`` references are read from, and the secrets file the web app writes.

Precedence, lowest first: a ``.env`` file beside the workspace file, the secrets file beside it
(``<name>.secrets.env``, written by the web app with mode 0600), then the process environment, which always
wins, as with every ``.env`` convention: an operator can override any file-held value without editing it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values


def secrets_path(workspace_path: Path) -> Path:
    """``cohortflow.yaml`` -> ``cohortflow.secrets.env`` in the same folder."""
    return workspace_path.with_name(f"{workspace_path.stem}.secrets.env")


def dotenv_path(workspace_path: Path) -> Path:
    return workspace_path.with_name(".env")


def read_env_file(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def workspace_env(workspace_path: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables ``${VAR}`` may name for this workspace file."""
    return {
        **read_env_file(dotenv_path(workspace_path)),
        **read_env_file(secrets_path(workspace_path)),
        **(os.environ if environ is None else environ),
    }


def env_files(workspace_path: Path) -> tuple[Path, Path]:
    return dotenv_path(workspace_path), secrets_path(workspace_path)
