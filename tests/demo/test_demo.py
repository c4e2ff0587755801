"""``cohortflow demo`` end to end, as the README runs it: twice, through the real CLI."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import duckdb

from cohortflow.demo.warehouse import HIGH_VALUE_SQL


def _run_demo(directory: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "cohortflow", "demo", "--customers", "1500", "--dir", str(directory), "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout)


def _expected_members(directory: Path) -> set[int]:
    """The platform users the model's rows should match, by the contract's identity rules, computed apart."""
    with duckdb.connect(str(directory / "warehouse.duckdb"), read_only=True) as wh:
        rows = wh.execute(f"SELECT external_id, crm_id, device_id FROM ({HIGH_VALUE_SQL})").fetchall()
    db = sqlite3.connect(directory / "platform.db")
    matched: set[int] = set()
    for external_id, crm_id, device_id in rows:
        if external_id is not None:
            hit = db.execute("SELECT id FROM users WHERE external_id = ?", (external_id,)).fetchone()
        elif crm_id is not None:
            hit = db.execute(
                "SELECT user_id FROM user_aliases WHERE alias_label = 'crm_id' AND alias_name = ?", (crm_id,)
            ).fetchone()
        else:
            hit = db.execute(
                "SELECT u.id FROM user_devices d JOIN users u ON u.id = d.user_id "
                "WHERE d.device_id = ? AND u.external_id IS NULL",
                (device_id,),
            ).fetchone()
        if hit:
            matched.add(int(hit[0]))
    db.close()
    return matched


def _cohort_members(directory: Path) -> set[int]:
    db = sqlite3.connect(directory / "platform.db")
    members = {int(r[0]) for r in db.execute("SELECT user_id FROM cohort_members")}
    db.close()
    return members


def test_demo_runs_twice_and_the_cohort_is_exact(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    for _ in range(2):  # running it twice works (each run starts from a clean directory)
        report = _run_demo(directory)
        first, second = report["runs"]
        assert first["status"] == second["status"] == "succeeded"
        # The second run sends only the changes: far fewer identifiers than the first.
        assert 0 < second["adds"] + second["removes"] < first["adds"]
        assert first["matched"] + first["unmatched"] == first["adds"]
        # Some model rows are anonymous-then-identified or warehouse-only: never matched.
        assert first["unmatched"] > 0
        expected = _expected_members(directory)
        assert _cohort_members(directory) == expected
        assert report["cohort"]["size_after_each_run"][-1] == len(expected)
        campaign = report["campaign"]
        assert campaign["sent"] == report["segment"]["reachable_email"] == campaign["emails_in_outbox"]
        assert campaign["failed"] == 0
        assert len(list((directory / "outbox").glob("*.eml"))) == campaign["sent"]
        assert "Merci" in next((directory / "outbox").glob("*.eml")).read_text()
        # Secrets stay out of the workspace file.
        config = (directory / "cohortflow.yaml").read_text()
        assert "${COHORTFLOW_DEMO_DATA_IMPORT_KEY}" in config
        assert "cfdik_" not in config


def test_the_demo_leaves_a_setup_that_can_be_continued(tmp_path: Path) -> None:
    """As the README says: cd into the demo's folder, serve its platform again, keep syncing."""
    import os
    import time

    import httpx

    directory = tmp_path / "demo"
    _run_demo(directory)
    env_file = (directory / ".env").read_text()
    assert "COHORTFLOW_DEMO_REST_API_KEY=cfrest_" in env_file and "COHORTFLOW_DEMO_DATA_IMPORT_KEY=cfdik_" in env_file
    assert (directory / ".env").stat().st_mode & 0o777 == 0o600
    env = {k: v for k, v in os.environ.items() if not k.startswith("COHORTFLOW_")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cohortflow", *args], cwd=directory, env=env, capture_output=True, text=True
        )

    runs = cli("sync", "runs", "high_value_customers")
    assert runs.returncode == 0 and runs.stdout.count("succeeded") == 2, runs.stderr
    checked = cli("sync", "validate")
    assert checked.returncode == 0 and "every model's query runs" in checked.stdout, checked.stderr
    port = next(line.split("=")[1] for line in env_file.splitlines() if line.startswith("COHORTFLOW_PLATFORM__PORT"))
    server = subprocess.Popen([sys.executable, "-m", "cohortflow", "platform", "serve"], cwd=directory, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and server.poll() is None
            time.sleep(0.2)
        again = cli("sync", "run", "high_value_customers")
        assert again.returncode == 0, again.stderr
        assert "high_value_customers: run" in again.stdout and "planned: +0 -0" in again.stdout
    finally:
        server.terminate()
        server.wait(timeout=30)
