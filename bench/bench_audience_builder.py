"""What one change in the audience builder costs: the preview the web app runs after each edit, against the bare
count of the same audience.

The builder posts its draft to ``/app/audiences/preview`` (and the API's ``POST /audiences/preview`` does the
same), which runs ``draft_size``: the whole workspace file re-checked with the draft in place, the audience
compiled, one counting query (with its split groups) and one ``LIMIT 10`` query for the sample. The bare count is
``audience_size(ws, "bench", sample=0)``, what ``bench_audiences`` compares with hand-written SQL. The warehouse
and the audience (a parent condition, a related-model condition, an event window) are ``bench_audiences``'s.

Both run in this process, alternating, over a warm DuckDB file; medians of ``--repeats`` with the process's CPU
seconds beside them. Run from the repository root:

    python -m bench.bench_audience_builder                    # 1M people, 10M events, 7 repeats
    python -m bench.bench_audience_builder --short            # CI: 100k people, 1M events, 2 repeats
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bench_audiences import AUDIENCE, NOW, prepare, write_workspace
from bench.harness import machine
from bench.sync_support import log, median


def _timed(fn: Any) -> tuple[Any, float, float]:
    started, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return value, time.perf_counter() - started, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--short", action="store_true", help="100k people, 1M events, 2 repeats (for CI)")
    parser.add_argument("--workdir", type=Path, help="reuse (or keep) this directory")
    args = parser.parse_args()
    if args.short:
        args.people, args.events, args.repeats = 100_000, 1_000_000, 2
    from cohortflow.sync import load_workspace
    from cohortflow.sync.audiences.service import audience_size, draft_size

    info = machine()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cf-bench-builder-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        if not (workdir / "warehouse.duckdb").exists():
            prepare(workdir, args.people, args.events)
        write_workspace(workdir)
        runs: dict[str, list[tuple[float, float]]] = {"preview": [], "count": []}
        sizes = set()
        with load_workspace(workdir / "cohortflow.yaml", state_url="sqlite://") as ws:
            audience_size(ws, "bench", sample=0, now=NOW)  # warm the page cache and DuckDB's catalogue
            for _ in range(args.repeats):
                preview, seconds, cpu = _timed(lambda: draft_size(ws, AUDIENCE, sample=10, now=NOW))
                runs["preview"].append((seconds, cpu))
                sizes.add(preview.size)
                count, seconds, cpu = _timed(lambda: audience_size(ws, "bench", sample=0, now=NOW))
                runs["count"].append((seconds, cpu))
                sizes.add(count.size)
                log(f"preview {runs['preview'][-1][0]:.3f} s, count {runs['count'][-1][0]:.3f} s")
        assert len(sizes) == 1, f"preview and count disagree: {sizes}"
        medians = {name: round(median([s for s, _ in rs]), 3) for name, rs in runs.items()}
        report = {
            "bench": "audience_builder",
            "people": args.people,
            "events": args.events,
            "repeats": args.repeats,
            "machine": info,
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "audience_size": sizes.pop(),
            "seconds": medians,
            "cpu_s": {name: round(median([c for _, c in rs]), 3) for name, rs in runs.items()},
            "preview_over_count": round(medians["preview"] / medians["count"], 2),
        }
        print(json.dumps(report))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
