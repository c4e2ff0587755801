"""The ``cohortflow`` command. Subcommand groups live next to the side they drive."""

from __future__ import annotations

import click

from cohortflow import __version__
from cohortflow.demo.cli import demo
from cohortflow.logs import configure_logging
from cohortflow.platform.cli import platform_group
from cohortflow.settings import get_settings
from cohortflow.sync.audiences.cli import audiences_group
from cohortflow.sync.cli import sync_group


@click.group()
@click.version_option(__version__, prog_name="cohortflow")
def cli() -> None:
    """cohortflow: warehouse cohorts into a Braze-compatible engagement platform."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)


cli.add_command(platform_group)
cli.add_command(sync_group)
sync_group.add_command(audiences_group)
cli.add_command(demo)


def main() -> None:
    cli()
