"""The ``cohortflow`` command. Subcommand groups live next to the side they drive.

Each group is imported only when it runs (or when help lists it): importing every group took about 3 s of CPU,
and ``cohortflow demo`` starts its platform server only once its own module is loaded.
"""

from __future__ import annotations

import importlib

import click

from cohortflow import __version__
from cohortflow.logs import configure_logging
from cohortflow.settings import get_settings


def _sync_group() -> click.Command:
    from cohortflow.sync.audiences.cli import audiences_group
    from cohortflow.sync.cli import sync_group

    sync_group.add_command(audiences_group)
    return sync_group


# name -> "module:attribute" of the command, or a function returning it.
_SUBCOMMANDS: dict[str, str | object] = {
    "platform": "cohortflow.platform.cli:platform_group",
    "sync": _sync_group,
    "demo": "cohortflow.demo.cli:demo",
}


class _LazyGroup(click.Group):
    """Click's lazily loading group (click's documentation, "Lazily Loading Subcommands")."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_SUBCOMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in _SUBCOMMANDS:
            self.add_command(_load(_SUBCOMMANDS[cmd_name]), cmd_name)
        return super().get_command(ctx, cmd_name)


def _load(target: str | object) -> click.Command:
    if isinstance(target, str):
        module, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
    else:
        assert callable(target)
        command = target()
    assert isinstance(command, click.Command)
    return command


@click.group(cls=_LazyGroup)
@click.version_option(__version__, prog_name="cohortflow")
def cli() -> None:
    """cohortflow: warehouse cohorts into a Braze-compatible engagement platform."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)


def main() -> None:
    cli()
