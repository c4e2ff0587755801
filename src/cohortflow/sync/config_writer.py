"""Config stays code: what the web app creates or edits is written back to ``cohortflow.yaml``.

The file is edited as a round-trip YAML document (ruamel.yaml), so comments, key order and quoting survive; only
the keys an edit manages change. Secrets typed in the app never enter the YAML: they go to the secrets file
beside it (``<name>.secrets.env``, mode 0600) and the YAML keeps a ``${VAR}`` reference (an existing reference is
reused). Every edit is validated as a whole before anything is written (the same parser as every command), so
a bad input gets the file-and-key error and changes nothing; both files are replaced atomically, under a lock
file so two edits never interleave.
"""

from __future__ import annotations

import fcntl
import io
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from cohortflow.sync.config import WorkspaceConfig, parse_workspace
from cohortflow.sync.errors import ConfigError, InvalidInput
from cohortflow.sync.secrets import read_env_file, secrets_path, workspace_env

NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_REFERENCE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
SECTIONS = ("sources", "models", "destinations", "syncs")


def check_name(kind: str, name: str) -> str:
    name = name.strip()
    if not NAME.match(name):
        raise InvalidInput(
            f"a {kind} name is 1 to 63 lower-case letters, digits or underscores, starting with a letter: {name!r}"
        )
    return name


def _yaml() -> YAML:
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 120
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def secret_variable(section: str, name: str, field: str) -> str:
    """``destinations.braze.data_import_key`` -> ``COHORTFLOW_BRAZE_DATA_IMPORT_KEY``."""
    return re.sub(r"[^A-Z0-9]+", "_", f"COHORTFLOW_{name}_{field}".upper())


@contextmanager
def workspace_lock(path: Path) -> Iterator[None]:
    """Held while the workspace file is read, checked and replaced: two edits never interleave."""
    lock = path.with_name(f".{path.name}.lock")
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_atomically(path: Path, text: str, mode: int | None = None) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        elif path.exists():
            os.fchmod(fd, path.stat().st_mode & 0o777)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _env_line(key: str, value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'{key}="{escaped}"'


class Edit:
    """One edit of the document: the sections to change and the secrets to store."""

    def __init__(self, doc: CommentedMap, existing_secrets: Mapping[str, str]) -> None:
        self.doc = doc
        self.secrets: dict[str, str] = {}
        self._existing = existing_secrets

    def section(self, name: str) -> CommentedMap:
        if name not in self.doc or self.doc[name] is None:
            self.doc[name] = CommentedMap()
        section: CommentedMap = self.doc[name]
        return section

    def entry(self, section: str, name: str, *, create: bool) -> CommentedMap:
        table = self.section(section)
        if name in table:
            if create:
                raise InvalidInput(f"{section[:-1]} {name!r} already exists; choose another name")
            entry: CommentedMap = table[name]
            return entry
        if not create:
            raise InvalidInput(f"no {section[:-1]} named {name!r} in the workspace file")
        table[name] = CommentedMap()
        created: CommentedMap = table[name]
        return created

    def put(self, entry: CommentedMap, values: Mapping[str, Any], remove: tuple[str, ...] = ()) -> None:
        """Set ``values`` in place (keeping the entry's other keys and comments) and drop the ``remove`` keys."""
        for key in remove:
            if key in entry and key not in values:
                del entry[key]
        for key, value in values.items():
            entry[key] = value

    def secret(self, entry: CommentedMap, section: str, name: str, field: str, value: str | None) -> None:
        """A secret field: a typed value goes to the secrets file behind a ``${VAR}``; None keeps what is there."""
        if value is None or value == "":
            if field not in entry:
                raise InvalidInput(f"{field.replace('_', ' ')} is required")
            return
        current = entry.get(field)
        match = _REFERENCE.match(str(current)) if isinstance(current, str) else None
        variable = match.group(1) if match else secret_variable(section, name, field)
        self.secrets[variable] = value
        entry[field] = f"${{{variable}}}"


class WorkspaceWriter:
    def __init__(self, path: Path) -> None:
        self.path = path

    def apply(self, change: Callable[[Edit], None]) -> WorkspaceConfig:
        """Apply ``change`` to the document; validate the result; write YAML and secrets, or nothing."""
        with workspace_lock(self.path):
            yaml = _yaml()
            try:
                text = self.path.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"{self.path}: cannot read the workspace file: {exc.strerror or exc}") from exc
            doc = yaml.load(text) or CommentedMap()
            if not isinstance(doc, CommentedMap):
                raise ConfigError(f"{self.path}: the workspace file must be a mapping")
            secrets_file = secrets_path(self.path)
            existing = read_env_file(secrets_file)
            edit = Edit(doc, existing)
            change(edit)
            out = io.StringIO()
            yaml.dump(doc, out)
            new_text = out.getvalue()
            env = {**workspace_env(self.path), **edit.secrets}
            config = parse_workspace(new_text, self.path.name, env)
            if edit.secrets:
                merged = {**existing, **edit.secrets}
                body = "# Secrets typed in the cohortflow web app; cohortflow.yaml names them as ${VAR}.\n"
                body += "".join(_env_line(k, v) + "\n" for k, v in sorted(merged.items()))
                _write_atomically(secrets_file, body, mode=0o600)
            _write_atomically(self.path, new_text)
            return config


# ------------------------------------------------------------------------------------------------ edits

SOURCE_SECRET_FIELDS = {"postgres": ("url",), "sqlalchemy": ("url",)}
DESTINATION_SECRET_FIELDS = {
    "braze_cohorts": ("partner_api_key", "data_import_key"),
    "braze_users_track": ("rest_api_key",),
}
DESTINATION_FIELDS = {
    "braze_cohorts": ("rest_endpoint", "partner"),
    "braze_users_track": ("rest_endpoint",),
}


def save_source(
    path: Path, name: str, kind: str, values: Mapping[str, str], secrets: Mapping[str, str | None], *, create: bool
) -> WorkspaceConfig:
    name = check_name("source", name)
    if kind not in ("duckdb", "sqlite", "postgres", "sqlalchemy"):
        raise InvalidInput(f"unknown source type {kind!r}")

    def change(edit: Edit) -> None:
        entry = edit.entry("sources", name, create=create)
        edit.put(entry, {"type": kind, **values}, remove=("path", "url", "read_only"))
        for field in SOURCE_SECRET_FIELDS.get(kind, ()):
            edit.secret(entry, "sources", name, field, secrets.get(field))

    return WorkspaceWriter(path).apply(change)


def save_destination(
    path: Path, name: str, kind: str, values: Mapping[str, Any], secrets: Mapping[str, str | None], *, create: bool
) -> WorkspaceConfig:
    name = check_name("destination", name)
    if kind not in DESTINATION_FIELDS:
        raise InvalidInput(f"unknown destination type {kind!r}")

    def change(edit: Edit) -> None:
        entry = edit.entry("destinations", name, create=create)
        if not create and entry.get("type") != kind:
            raise InvalidInput(f"destination {name!r} is a {entry.get('type')}; its type cannot change")
        edit.put(entry, {"type": kind, **values})
        for field in DESTINATION_SECRET_FIELDS[kind]:
            edit.secret(entry, "destinations", name, field, secrets.get(field))

    return WorkspaceWriter(path).apply(change)


def save_model(path: Path, name: str, values: Mapping[str, Any], *, create: bool) -> WorkspaceConfig:
    name = check_name("model", name)

    def change(edit: Edit) -> None:
        entry = edit.entry("models", name, create=create)
        edit.put(entry, values, remove=("sql", "table"))

    return WorkspaceWriter(path).apply(change)


def save_sync(path: Path, name: str, values: Mapping[str, Any], *, create: bool) -> WorkspaceConfig:
    name = check_name("sync", name)

    def change(edit: Edit) -> None:
        entry = edit.entry("syncs", name, create=create)
        # A sync reads a model or an audience: switching from one to the other drops the old key.
        edit.put(entry, values, remove=("model", "audience", "cohort", "attribute", "alerts", "schedule"))

    return WorkspaceWriter(path).apply(change)


def set_sync_enabled(path: Path, name: str, enabled: bool) -> WorkspaceConfig:
    def change(edit: Edit) -> None:
        entry = edit.entry("syncs", name, create=False)
        if enabled and "enabled" in entry:
            del entry["enabled"]  # the default: keep the file as short as it was
        elif not enabled:
            entry["enabled"] = False

    return WorkspaceWriter(path).apply(change)
