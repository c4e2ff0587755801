"""``cohortflow demo``: run the whole flow and print a short report."""

from __future__ import annotations

import gc
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from cohortflow.demo.layout import discard_previous, launch_platform, reset_directory
from cohortflow.logs import configure_logging
from cohortflow.settings import get_settings

if TYPE_CHECKING:
    from cohortflow.demo.run import DemoReport


def report_dict(report: DemoReport) -> dict[str, Any]:
    runs = []
    for run in report.runs:
        c = run.counts
        runs.append(
            {
                "run_id": run.run_id,
                "status": run.status,
                "rows": c.get("rows", 0),
                "adds": c.get("adds", 0),
                "removes": c.get("removes", 0),
                "rejected": sum(c.get("rejected", {}).values()) + sum(c.get("rejected_by_destination", {}).values()),
                "matched": c.get("matched"),
                "unmatched": c.get("unmatched"),
                "requests": c.get("requests", 0),
            }
        )
    return {
        "directory": str(report.directory),
        "rest_endpoint": report.rest_endpoint,
        "customers": report.warehouse.customers if report.warehouse else 0,
        "customers_by_kind": report.warehouse.by_kind if report.warehouse else {},
        "churn": report.churn,
        "runs": runs,
        "cohort": {
            "cohort_id": report.cohort.cohort_id if report.cohort else None,
            "name": report.cohort.name if report.cohort else None,
            "size_after_each_run": report.cohort_sizes,
        },
        "segment": {
            "name": report.segment_name,
            "total": report.segment.total if report.segment else None,
            "reachable_email": report.segment.reachable_email if report.segment else None,
        },
        "campaign": {**report.campaign_counts, "emails_in_outbox": report.emails_received},
    }


def _print_report(console: Console, data: dict[str, Any], seconds: float) -> None:
    table = Table(title="Sync runs (warehouse model -> Hightouch cohort)", title_justify="left")
    for column in (
        "run",
        "status",
        "rows",
        "adds",
        "removes",
        "rejected",
        "matched",
        "unmatched",
        "requests",
        "cohort size",
    ):
        table.add_column(column, justify="left" if column in ("run", "status") else "right")
    for i, run in enumerate(data["runs"]):
        table.add_row(
            f"#{i + 1}",
            run["status"],
            f"{run['rows']:,}",
            f"{run['adds']:,}",
            f"{run['removes']:,}",
            f"{run['rejected']:,}",
            "-" if run["matched"] is None else f"{run['matched']:,}",
            "-" if run["unmatched"] is None else f"{run['unmatched']:,}",
            f"{run['requests']:,}",
            f"{data['cohort']['size_after_each_run'][i]:,}",
        )
    console.print(table)
    seg, camp = data["segment"], data["campaign"]
    console.print(
        f"Cohort [bold]{data['cohort']['name']}[/] ({data['cohort']['cohort_id']}): "
        f"{data['cohort']['size_after_each_run'][-1]:,} members as the platform sees them."
    )
    console.print(
        f"Segment [bold]{seg['name']}[/]: {seg['total']:,} users, {seg['reachable_email']:,} reachable by email."
    )
    console.print(
        f"Campaign: {camp.get('sent', 0):,} emails sent, {camp.get('skipped', 0):,} skipped as unreachable, "
        f"{camp.get('failed', 0):,} failed; {camp['emails_in_outbox']:,} in {data['directory']}/outbox/."
    )
    console.print(
        f"Done in {seconds:.1f} s. Files in {data['directory']}: warehouse.duckdb, platform.db, cohortflow.yaml, "
        ".env (settings and keys), sync-state.db."
    )
    console.print(
        f"To continue: cd {data['directory']}, then `cohortflow platform serve` (same platform, same port) and "
        "`cohortflow sync run high_value_customers` or `cohortflow sync serve` (see the README)."
    )


@click.command("demo")
@click.option(
    "--customers",
    default=20_000,
    show_default=True,
    type=click.IntRange(100, 10_000_000),
    help="Customers in the generated warehouse.",
)
@click.option(
    "--dir",
    "directory",
    default="cohortflow-demo",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the demo writes its files (replaced).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def demo(customers: int, directory: Path, as_json: bool) -> None:
    """The main job: warehouse -> sync -> cohort -> segment -> campaign, on embedded defaults."""
    # The report says what happened; per-run log lines would only repeat it.
    configure_logging("WARNING", get_settings().log_json)
    console = Console(stderr=as_json)
    if not console.is_terminal:
        console.width = max(console.width, 110)
    started = time.monotonic()
    # A bar for the long steps (loading customers, sending changes) on a terminal; plain lines elsewhere.
    columns = (TextColumn("       {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    bars = Progress(*columns, console=console, transient=True, disable=not console.is_terminal)
    tasks: dict[str, TaskID] = {}

    def step(message: str) -> None:
        for task in tasks.values():
            bars.remove_task(task)
        tasks.clear()
        console.print(f"[dim]{time.monotonic() - started:6.1f}s[/] {message}")

    def progress(what: str, done: int, total: int | None) -> None:
        if what not in tasks:
            tasks[what] = bars.add_task(what, total=total)
        bars.update(tasks[what], completed=done, total=total)

    try:
        directory = reset_directory(directory)
        # What this process imports from here on (the platform server's modules before it forks, then the rest)
        # stays for the whole run and leaves almost no cyclic garbage: collections while it loads would only walk
        # it again and again. Once loaded, it moves out of the collector's generations, so full collections
        # triggered by the loader's garbage no longer walk it either (a full collection of this heap cost about
        # 0.15 s).
        gc.disable()
        try:
            # The platform server starts first: it starts serving while this process imports the rest.
            server = launch_platform(directory)
            discard_previous(directory)
            try:
                from cohortflow.demo.run import run_demo
            except BaseException:
                server.stop()
                raise
        finally:
            gc.freeze()
            gc.enable()
        with bars:
            report = run_demo(directory, customers, server=server, step=step, progress=progress)
    except Exception as exc:  # the demo's user needs the reason, not a traceback
        raise click.ClickException(f"the demo failed: {type(exc).__name__}: {exc}") from exc
    data = report_dict(report)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        _print_report(console, data, time.monotonic() - started)
