"""The run history chart of a sync's page: adds, removes and rejected per run, as server-rendered SVG geometry."""

from __future__ import annotations

from dataclasses import dataclass

from cohortflow.sync.runs import RunRecord

WIDTH, HEIGHT, TOP, BOTTOM, LEFT = 900, 200, 14, 26, 54
SERIES = (("adds", "added"), ("removes", "removed"), ("rejected", None))


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    series: str
    title: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    ticks: list[tuple[float, str]]  # y, label
    labels: list[tuple[float, str]]  # x, label under each run
    baseline: float


def _values(run: RunRecord) -> dict[str, int]:
    c = run.counts
    rejected = sum((c.get("rejected") or {}).values()) + sum((c.get("rejected_by_destination") or {}).values())
    return {"adds": int(c.get("added", 0)), "removes": int(c.get("removed", 0)), "rejected": int(rejected)}


def run_chart(runs: list[RunRecord]) -> Chart | None:
    """Runs oldest first (dry runs and unfinished runs left out); None when there is nothing to draw."""
    shown = [r for r in runs if not r.dry_run and r.finished][-20:]
    if not shown:
        return None
    values = [_values(r) for r in shown]
    top = max([1, *(v for row in values for v in row.values())])
    plot_h = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - LEFT) / len(shown)
    bar_w = min(18.0, slot / 4)
    bars: list[Bar] = []
    labels: list[tuple[float, str]] = []
    for i, (run, row) in enumerate(zip(shown, values, strict=True)):
        x0 = LEFT + i * slot + (slot - 3 * bar_w) / 2
        for j, (series, _) in enumerate(SERIES):
            h = plot_h * row[series] / top
            bars.append(
                Bar(
                    x=round(x0 + j * bar_w, 1),
                    y=round(TOP + plot_h - h, 1),
                    width=round(bar_w - 1, 1),
                    height=round(max(h, 0.0), 1),
                    series=series,
                    title=f"{run.started_at:%Y-%m-%d %H:%M} · {series}: {row[series]:,}",
                )
            )
        labels.append(
            (round(LEFT + i * slot + slot / 2, 1), f"{run.started_at:%b %d %H:%M}" if len(shown) <= 8 else "")
        )
    ticks = [(round(TOP + plot_h - plot_h * f, 1), f"{round(top * f):,}") for f in (0, 0.5, 1)]
    return Chart(WIDTH, HEIGHT, bars, ticks, labels, TOP + plot_h)
