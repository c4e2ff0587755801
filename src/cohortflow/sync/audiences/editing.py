"""Saving audiences into ``cohortflow.yaml``, for a builder (the sync service's pages) and the CLI.

The workspace file stays the one truth and stays the user's file: an audience is written as one YAML block
in place of its old block (or at the end of ``audiences:``), so comments and the rest of the file are kept.
Before anything is written, the whole new file goes through the loader's checks: a definition with an
unknown column, an operator that does not fit a type or a cycle is a :class:`ConfigError` naming the key,
and the file is left unchanged. The write itself replaces the file atomically.

:func:`preview` runs the same checks without writing, so a builder can size an unsaved definition.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cohortflow.sync.config import WorkspaceConfig, parse_workspace
from cohortflow.sync.config_writer import workspace_lock
from cohortflow.sync.errors import ConfigError
from cohortflow.sync.secrets import workspace_env
from cohortflow.sync.workspace import Workspace

SECTION = "audiences"


def _replace_entry(text: str, file: str, name: str, definition: Mapping[str, Any] | None) -> str:
    """``text`` with ``audiences.<name>`` set to ``definition`` (removed when None)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: invalid YAML: {exc}") from None
    if root is not None and not isinstance(root, yaml.MappingNode):
        raise ConfigError(f"{file}:1: the workspace file must be a mapping")
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    section = next((v for k, v in (root.value if root else []) if k.value == SECTION), None)
    block = yaml.safe_dump({name: dict(definition)}, sort_keys=False, allow_unicode=True) if definition else ""
    if section is None or (isinstance(section, yaml.MappingNode) and not section.value):
        if definition is None:
            raise ConfigError(f"{file}: no audience named {name!r}")
        kept = [ln for ln in lines if not ln.startswith(f"{SECTION}:")]  # an empty 'audiences: {}'
        return "".join(kept) + f"{SECTION}:\n" + _indent(block, 2)
    if not isinstance(section, yaml.MappingNode) or section.flow_style:
        raise ConfigError(
            f"{file}:{section.start_mark.line + 1}: {SECTION}: written in flow style ({{...}}); "
            "write it as an indented block to save audiences into it"
        )
    entries = section.value
    indent = entries[0][0].start_mark.column
    for i, (key, value) in enumerate(entries):
        if key.value != name:
            continue
        start = key.start_mark.line
        end = entries[i + 1][0].start_mark.line if i + 1 < len(entries) else _end_line(value)
        end = _last_content(lines, start, end)
        return "".join(lines[:start]) + _indent(block, indent) + "".join(lines[end:])
    if definition is None:
        raise ConfigError(f"{file}: no audience named {name!r}")
    end = _last_content(lines, entries[-1][0].start_mark.line, _end_line(entries[-1][1]))
    return "".join(lines[:end]) + _indent(block, indent) + "".join(lines[end:])


def _end_line(node: yaml.Node) -> int:
    """The index of the first line after ``node`` (PyYAML's end mark is on that line, column 0, for a block,
    or on the node's own last line for a scalar or a flow collection)."""
    mark = node.end_mark
    return mark.line if mark.column == 0 else mark.line + 1


def _last_content(lines: list[str], start: int, end: int) -> int:
    """``end`` moved back over blank and comment lines: they introduce what follows, so they stay."""
    while end - 1 > start and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")):
        end -= 1
    return end


def _indent(block: str, spaces: int) -> str:
    pad = " " * spaces
    return "".join(pad + ln if ln.strip() else ln for ln in block.splitlines(keepends=True))


def preview(workspace: Workspace, name: str, definition: Mapping[str, Any]) -> Workspace:
    """The workspace as it would be with audience ``name`` set to ``definition``, checked like the file, and
    nothing written (raises :class:`ConfigError` naming each problem). Size it with ``audience_size``."""
    text = _read(workspace.path)
    missing: dict[tuple[str, ...], str] = {}
    config = _check(_replace_entry(text, str(workspace.path), name, definition), workspace.path, missing)
    return Workspace(
        path=workspace.path,
        config=config,
        state_url=workspace.state_url,
        _store=workspace._store,
        owns_store=False,
        missing_env=missing,
    )


@dataclass(frozen=True)
class Problem:
    """One problem of a definition: ``path`` is the key inside the audience (``filter.filters.0.column``; empty
    for the definition as a whole, None when the problem is elsewhere in the file), so a builder can show the
    message next to the condition it is about."""

    path: str | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "message": self.message}


def problems_of(error: ConfigError, name: str) -> list[Problem]:
    """The lines of a :class:`ConfigError` about audience ``name`` (``file:line: audiences.NAME.key: message``),
    each with its key inside the audience."""
    own = re.compile(r"^(?:.*?:\d+: )?" + re.escape(f"{SECTION}.{name}") + r"(?:\.(?P<path>[^:\s]+))?: (?P<msg>.*)$")
    out = []
    for line in error.message.split("\n"):  # not splitlines(): a value quoted in a message may hold U+2028
        if not line.strip():
            continue
        found = own.match(line)
        if found:
            out.append(Problem(found.group("path") or "", found.group("msg")))
        else:
            out.append(Problem(None, line))
    return out


def save_audience(path: Path | str, name: str, definition: Mapping[str, Any]) -> WorkspaceConfig:
    """Add or replace audience ``name`` in the workspace file; the new file's config on success. Nothing is
    written when the new file would not load."""
    return _write(Path(path), name, definition)


def delete_audience(path: Path | str, name: str) -> WorkspaceConfig:
    """Remove audience ``name``; refused (nothing written) while a sync, a priority list or another audience
    still names it."""
    return _write(Path(path), name, None)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the workspace file: {exc.strerror or exc}") from exc


def _check(text: str, path: Path, missing: dict[tuple[str, ...], str] | None = None) -> WorkspaceConfig:
    """The file checked as every command loads it: ``${VAR}`` from the env files beside it and the environment;
    a missing one is an error only where it is used (an audience never uses a destination's keys)."""
    deferred: dict[tuple[str, ...], str] = {} if missing is None else missing
    return parse_workspace(text, str(path), workspace_env(path), deferred=deferred)


def _write(path: Path, name: str, definition: Mapping[str, Any] | None) -> WorkspaceConfig:
    # The web app's other edits take the same lock: an audience saved while a sync is saved loses neither.
    with workspace_lock(path):
        return _write_locked(path, name, definition)


def _write_locked(path: Path, name: str, definition: Mapping[str, Any] | None) -> WorkspaceConfig:
    before = _read(path)
    after = _replace_entry(before, str(path), name, definition)
    config = _check(after, path)
    if _read(path) != before:  # another writer got in between: writing now would lose its change
        raise ConfigError(f"{path}: the file changed while the audience was being saved; nothing was written")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(after)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return config
