"""``cohortflow sync audiences ...``: list, describe the schema, show the compiled SQL, size, overlap.

Commands parse arguments and call :mod:`cohortflow.sync.audiences.service` and the compiler.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TextIO

import click
import yaml
from rich.console import Console
from rich.table import Table

from cohortflow.settings import get_settings
from cohortflow.sync.audiences.compiler import compile_audience
from cohortflow.sync.audiences.config import AudienceRef
from cohortflow.sync.audiences.editing import delete_audience, save_audience
from cohortflow.sync.audiences.service import audience_overlap, audience_size, describe_schema
from cohortflow.sync.cli import _dump, _errors_to_exit, _workspace
from cohortflow.sync.errors import ConfigError

_split = click.option("--split", default=None, help="One split group of the audience.")
_priority = click.option(
    "--priority-list", default=None, help="The audience's share of this priority list (minus earlier audiences)."
)


@click.group("audiences")
def audiences_group() -> None:
    """Audiences: filter trees over a parent model, compiled to SQL for the warehouse."""


@audiences_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def audiences_list(ctx: click.Context, as_json: bool) -> None:
    """Audiences and priority lists of the workspace file."""
    with _errors_to_exit(ctx):
        config = _workspace(ctx).config
    audiences: list[dict[str, Any]] = [
        {
            "name": name,
            "parent": a.parent,
            "description": a.description,
            "splits": dict(a.splits.groups) if a.splits else None,
        }
        for name, a in config.audiences.items()
    ]
    lists = {name: list(p.audiences) for name, p in config.priority_lists.items()}
    if as_json:
        _dump({"audiences": audiences, "priority_lists": lists})
        return
    table = Table("audience", "parent", "splits", "description")
    for a in audiences:
        splits = ", ".join(f"{g} {p}%" for g, p in (a["splits"] or {}).items())
        table.add_row(a["name"], a["parent"], splits, a["description"] or "")
    Console().print(table)
    for name, members in lists.items():
        click.echo(f"priority list {name}: {' > '.join(members)}")


@audiences_group.command("schema")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def audiences_schema(ctx: click.Context, as_json: bool) -> None:
    """Parents with the columns, traits, related models and events audiences can use."""
    with _errors_to_exit(ctx):
        parents = describe_schema(_workspace(ctx))
    if as_json:
        _dump(parents)
        return
    for p in parents:
        click.echo(f"parent {p['parent']} (model {p['model']}; identifiers: {', '.join(p['identifiers'])})")
        for c in p["columns"]:
            click.echo(f"  column {c['name']}: {c['type']}")
        for t in p["traits"]:
            of = f" of {t['column']}" if t["column"] else ""
            click.echo(f"  trait {t['name']}: {t['type']} ({t['aggregate']}{of} over {t['relation']})")
        for r in p["related"]:
            columns = ", ".join(f"{c['name']} {c['type']}" for c in r["columns"])
            click.echo(f"  related {r['name']} ({r['cardinality']}, model {r['model']}): {columns}")
        for e in p["events"]:
            columns = ", ".join(f"{c['name']} {c['type']}" for c in e["columns"])
            click.echo(f"  event {e['name']} (model {e['model']}, at {e['timestamp']}): {columns}")


@audiences_group.command("compile")
@click.argument("name")
@_split
@_priority
@click.pass_context
def audiences_compile(ctx: click.Context, name: str, split: str | None, priority_list: str | None) -> None:
    """The SQL that audience NAME runs in its warehouse (relative windows counted from now)."""
    with _errors_to_exit(ctx):
        compiled = compile_audience(
            _workspace(ctx).config, AudienceRef(name=name, split=split, priority_list=priority_list)
        )
    click.echo(f"-- {compiled.target.describe()}: source {compiled.source!r}, dialect {compiled.dialect}")
    click.echo(compiled.sql + ";")


@audiences_group.command("size")
@click.argument("name")
@_split
@_priority
@click.option("--sample", default=10, show_default=True, help="Rows of the audience to show.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def audiences_size(
    ctx: click.Context, name: str, split: str | None, priority_list: str | None, sample: int, as_json: bool
) -> None:
    """How many people audience NAME holds, with a sample of them (runs in the warehouse)."""
    with _errors_to_exit(ctx):
        result = audience_size(
            _workspace(ctx), AudienceRef(name=name, split=split, priority_list=priority_list), sample=max(sample, 0)
        )
    if as_json:
        _dump(result.as_dict())
        return
    share = f" ({result.size / result.parent_rows:.1%})" if result.parent_rows else ""
    click.echo(f"{result.target.describe()}: {result.size} of {result.parent_rows} people{share}")
    for group, count in result.groups.items():
        click.echo(f"  {group}: {count}")
    if result.sample:
        table = Table(*result.columns)
        for row in result.sample:
            table.add_row(*("" if v is None else str(v) for v in row.values()))
        Console().print(table)


@audiences_group.command("overlap")
@click.argument("a")
@click.argument("b")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def audiences_overlap(ctx: click.Context, a: str, b: str, as_json: bool) -> None:
    """How many people audiences A and B share."""
    with _errors_to_exit(ctx):
        result = audience_overlap(_workspace(ctx), a, b).as_dict()
    if as_json:
        _dump(result)
        return
    click.echo(f"{a}: {result['a_size']}, {b}: {result['b_size']}, both: {result['both']}")
    click.echo(f"  only {a}: {result['only_a']}, only {b}: {result['only_b']}, either: {result['either']}")
    click.echo(f"  of {result['parent_rows']} people")


def _workspace_path(ctx: click.Context) -> Path:
    return Path(ctx.ensure_object(dict).get("file") or get_settings().sync.config_path)


@audiences_group.command("save")
@click.argument("name")
@click.argument("definition", type=click.File("r", encoding="utf-8"))
@click.pass_context
def audiences_save(ctx: click.Context, name: str, definition: TextIO) -> None:
    """Add or replace audience NAME in the workspace file from DEFINITION (YAML or JSON; - reads stdin).

    The new file is checked first: a bad definition is an error and nothing is written."""
    with _errors_to_exit(ctx):
        try:
            data = yaml.safe_load(definition)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{definition.name}: invalid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{definition.name}: an audience definition is a mapping (parent, filter, ...)")
        path = _workspace_path(ctx)
        config = save_audience(path, name, data)
    click.echo(f"{path}: audience {name!r} saved (parent {config.audiences[name].parent!r})")


@audiences_group.command("delete")
@click.argument("name")
@click.pass_context
def audiences_delete(ctx: click.Context, name: str) -> None:
    """Remove audience NAME from the workspace file (refused while anything still names it)."""
    with _errors_to_exit(ctx):
        path = _workspace_path(ctx)
        delete_audience(path, name)
    click.echo(f"{path}: audience {name!r} deleted")
