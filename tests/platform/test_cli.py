"""The operator CLI (``cohortflow platform ...``), run for real on SQLite and PostgreSQL.

Most commands go through click's CliRunner (in-process, fast); what must be seen from outside — exit
codes and stderr of a real process, and ``quickstart`` serving — runs ``python -m cohortflow``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from cohortflow.cli import cli
from cohortflow.platform.errors import AuthenticationFailed
from cohortflow.platform.import_keys import authenticate_client_secret
from cohortflow.platform.partners import get_partner
from cohortflow.platform.workspaces import authenticate_app_key, authenticate_rest_key
from cohortflow.settings import get_settings
from tests.platform.dashboard.helpers import sign_in
from tests.support import ServerProcess, free_port, fresh_database, open_runtime

PUBLIC_URL = "https://rest.cohortflow.test"


@pytest.fixture(scope="module")
def cli_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database of the CLI tests' own, so listings are exactly what these tests created."""
    with fresh_database(backend, tmp_path_factory.mktemp(f"cli-{backend}")) as url:
        yield url


def run(url: str, *args: str, public_url: str = PUBLIC_URL, input: str | None = None) -> Result:
    env = {"COHORTFLOW_PLATFORM_DATABASE_URL": url, "COHORTFLOW_PLATFORM__PUBLIC_BASE_URL": public_url}
    get_settings.cache_clear()  # settings are read once per process; each invocation has its own env
    try:
        return CliRunner().invoke(cli, ["platform", *args], env=env, catch_exceptions=False, input=input)
    finally:
        get_settings.cache_clear()


def ok_json(url: str, *args: str) -> Any:
    result = run(url, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def fails(url: str, *args: str) -> str:
    """Run a command that must fail with a one-line error; returns the message."""
    result = run(url, *args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.output
    return errors[0].removeprefix("Error: ")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- workspaces --------------------------------------------------------------------------------------


def test_workspace_create_prints_id_endpoint_and_working_keys(cli_url: str) -> None:
    name = unique("acme")
    human = run(cli_url, "workspace", "create", name)
    assert human.exit_code == 0, human.output
    ws_id = re.search(r"workspace id\s+(ws_\w+)", human.stdout)
    assert ws_id is not None
    assert f"REST endpoint  {PUBLIC_URL}" in human.stdout
    rest_key = re.search(r"REST API key\s+(cfrest_\S+)", human.stdout)
    app_key = re.search(r"app key\s+(cfapp_\S+)", human.stdout)
    assert rest_key is not None and app_key is not None

    created = ok_json(cli_url, "workspace", "create", name + "-2")
    assert created["name"] == name + "-2"
    assert created["rest_endpoint"] == PUBLIC_URL
    assert created["id"].startswith("ws_")

    runtime = open_runtime(cli_url)
    try:
        with runtime.transaction() as conn:
            assert authenticate_rest_key(conn, rest_key.group(1)).workspace_id == ws_id.group(1)
            assert authenticate_app_key(conn, app_key.group(1)).workspace_id == ws_id.group(1)
            assert authenticate_rest_key(conn, created["rest_api_key"]).workspace_id == created["id"]
            assert authenticate_app_key(conn, created["app_key"]).workspace_id == created["id"]
    finally:
        runtime.close()

    listed = {w["id"]: w["name"] for w in ok_json(cli_url, "workspace", "list")}
    assert listed[ws_id.group(1)] == name
    assert listed[created["id"]] == name + "-2"
    table = run(cli_url, "workspace", "list")
    assert table.exit_code == 0
    assert ws_id.group(1) in table.stdout and name in table.stdout
    # A listing never shows a key.
    assert "cfrest_" not in table.stdout and "cfapp_" not in table.stdout


def test_workspace_create_rejects_blank_name(cli_url: str) -> None:
    before = ok_json(cli_url, "workspace", "list")
    assert "non-empty" in fails(cli_url, "workspace", "create", "  ")
    assert ok_json(cli_url, "workspace", "list") == before


# --- partners ----------------------------------------------------------------------------------------


def test_partner_create_list_and_duplicate(cli_url: str) -> None:
    name = unique("census")
    created = ok_json(cli_url, "partner", "create", name, "--display-name", "Census")
    assert created["name"] == name
    assert created["display_name"] == "Census"
    assert created["partner_api_key"].startswith("cfpartner_")

    human = run(cli_url, "partner", "create", name + "-b")
    assert human.exit_code == 0
    assert re.search(r"partner API key\s+cfpartner_\S+", human.stdout)

    listed = {p["name"]: p["display_name"] for p in ok_json(cli_url, "partner", "list")}
    assert listed[name] == "Census"
    assert name + "-b" in listed
    assert "cfpartner_" not in run(cli_url, "partner", "list").stdout

    assert fails(cli_url, "partner", "create", name) == f"partner {name!r} already exists"
    assert "lower-case letters" in fails(cli_url, "partner", "create", "Not A Name!")
    # The failed attempts changed nothing: the first key still authenticates, and there is one partner of the name.
    assert [p["name"] for p in ok_json(cli_url, "partner", "list")].count(name) == 1
    runtime = open_runtime(cli_url)
    try:
        with runtime.transaction() as conn:
            assert get_partner(conn, name).display_name == "Census"
    finally:
        runtime.close()


# --- data import keys --------------------------------------------------------------------------------


def test_import_key_lifecycle(cli_url: str) -> None:
    ws = ok_json(cli_url, "workspace", "create", unique("ws"))
    partner = unique("hightouch")
    other_partner = unique("mixpanel")
    ok_json(cli_url, "partner", "create", partner)
    ok_json(cli_url, "partner", "create", other_partner)
    scope = ["--workspace", ws["id"], "--partner", partner]

    first = ok_json(cli_url, "import-key", "create", *scope)
    assert first["data_import_key"].startswith("cfdik_")
    assert first["rest_endpoint"] == PUBLIC_URL
    assert first["state"] == "active"
    assert first["masked_key"] == first["data_import_key"][:14] + "…"
    human = run(cli_url, "import-key", "create", *scope)
    assert human.exit_code == 0
    second_key = re.search(r"data import key\s+(cfdik_\S+)", human.stdout)
    assert second_key is not None

    listed = ok_json(cli_url, "import-key", "list", *scope)
    assert [k["state"] for k in listed] == ["active", "active"]
    assert listed[0]["id"] == first["id"]
    assert all(k["last_used_at"] is None for k in listed)
    table = run(cli_url, "import-key", "list", *scope).stdout
    assert first["masked_key"] in table and "never" in table
    assert first["data_import_key"] not in table and second_key.group(1) not in table

    # Invalidate by id, then the other by its masked prefix (as ``list`` shows it).
    gone = ok_json(cli_url, "import-key", "invalidate", *scope, str(first["id"]))
    assert gone["state"] == "invalidated" and gone["invalidated_at"]
    second_masked = listed[1]["masked_key"]
    done = run(cli_url, "import-key", "invalidate", *scope, second_masked)
    assert done.exit_code == 0, done.output
    assert second_masked in done.stdout
    assert [k["state"] for k in ok_json(cli_url, "import-key", "list", *scope)] == ["invalidated", "invalidated"]
    assert "invalidated 20" in run(cli_url, "import-key", "list", *scope).stdout

    runtime = open_runtime(cli_url)
    try:
        with runtime.transaction() as conn:
            p = get_partner(conn, partner)
            for plain in (first["data_import_key"], second_key.group(1)):
                with pytest.raises(AuthenticationFailed, match="Invalid client secret"):
                    authenticate_client_secret(conn, p, plain)
    finally:
        runtime.close()

    # Keys are per partner: the other partner has none.
    assert ok_json(cli_url, "import-key", "list", "--workspace", ws["id"], "--partner", other_partner) == []


def test_import_key_invalidate_errors(cli_url: str) -> None:
    ws = ok_json(cli_url, "workspace", "create", unique("ws"))
    partner = unique("segment")
    ok_json(cli_url, "partner", "create", partner)
    scope = ["--workspace", ws["id"], "--partner", partner]
    key = ok_json(cli_url, "import-key", "create", *scope)
    ok_json(cli_url, "import-key", "invalidate", *scope, str(key["id"]))
    # A key already invalidated, or one that never existed, is a clear error.
    assert "no active data import key" in fails(cli_url, "import-key", "invalidate", *scope, str(key["id"]))
    assert "no active data import key" in fails(cli_url, "import-key", "invalidate", *scope, "cfdik_nothere")


def test_import_key_commands_reject_unknown_workspace_and_partner(cli_url: str) -> None:
    ws = ok_json(cli_url, "workspace", "create", unique("ws"))
    partner = unique("amplitude")
    ok_json(cli_url, "partner", "create", partner)
    for command in ("create", "list"):
        assert fails(cli_url, "import-key", command, "-w", "ws_missing", "-p", partner) == (
            "workspace 'ws_missing' does not exist"
        )
        assert (
            fails(cli_url, "import-key", command, "-w", ws["id"], "-p", "nobody") == "partner 'nobody' does not exist"
        )
    assert "does not exist" in fails(cli_url, "import-key", "invalidate", "-w", ws["id"], "-p", "nobody", "1")
    # Nothing was created by the failed commands.
    assert ok_json(cli_url, "import-key", "list", "-w", ws["id"], "-p", partner) == []
    # A missing required option is a usage error (exit 2), not a traceback.
    usage = run(cli_url, "import-key", "create", "-w", ws["id"])
    assert usage.exit_code == 2 and "--partner" in usage.output and "Traceback" not in usage.output


def test_workspace_can_be_named_instead_of_id(cli_url: str) -> None:
    name = unique("named")
    ws = ok_json(cli_url, "workspace", "create", name)
    partner = unique("p")
    ok_json(cli_url, "partner", "create", partner)
    key = ok_json(cli_url, "import-key", "create", "-w", name, "-p", partner)
    assert key["workspace_id"] == ws["id"]
    ok_json(cli_url, "workspace", "create", name)  # now the name is ambiguous
    assert "use the workspace id" in fails(cli_url, "import-key", "list", "-w", name, "-p", partner)


# --- real processes ----------------------------------------------------------------------------------


def cohortflow(url: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COHORTFLOW_PLATFORM_DATABASE_URL": url, "COHORTFLOW_LOG_LEVEL": "WARNING"}
    return subprocess.run(
        [sys.executable, "-m", "cohortflow", "platform", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_errors_from_a_real_process_are_one_line_and_non_zero(cli_url: str) -> None:
    partner = unique("dup")
    assert cohortflow(cli_url, "partner", "create", partner).returncode == 0
    dup = cohortflow(cli_url, "partner", "create", partner)
    assert dup.returncode == 1
    assert dup.stderr.strip() == f"Error: partner {partner!r} already exists"
    unknown = cohortflow(cli_url, "import-key", "list", "-w", "ws_nope", "-p", partner)
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == "Error: workspace 'ws_nope' does not exist"


def test_unreachable_database_is_a_one_line_error(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    proc = cohortflow(f"postgresql://postgres:s3cret@127.0.0.1:{port}/nothing", "workspace", "list")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: platform database")
    assert "s3cret" not in proc.stderr


def post_import(base_url: str, partner: str, partner_api_key: str, client_secret: str) -> httpx.Response:
    """The credentials check connectors make: an empty ``cohort_changes`` with valid keys is a 2xx."""
    body = {
        "partner_api_key": partner_api_key,
        "client_secret": client_secret,
        "cohort_id": "cli-check",
        "cohort_changes": [],
    }
    return httpx.post(f"{base_url}/partners/{partner}/cohorts/users", json=body, timeout=30)


def test_import_key_from_cli_works_against_a_real_server(database_url: str, server: ServerProcess) -> None:
    ws = ok_json(database_url, "workspace", "create", unique("ws"))
    partner = unique("hightouch")
    partner_key = ok_json(database_url, "partner", "create", partner)["partner_api_key"]
    scope = ["-w", ws["id"], "-p", partner]
    first = ok_json(database_url, "import-key", "create", *scope)
    second = ok_json(database_url, "import-key", "create", *scope)

    for key in (first, second):  # two keys are live together
        r = post_import(server.base_url, partner, partner_key, key["data_import_key"])
        assert r.status_code == 201, r.text
    assert [k["last_used_at"] is not None for k in ok_json(database_url, "import-key", "list", *scope)] == [True, True]

    ok_json(database_url, "import-key", "invalidate", *scope, first["masked_key"])
    r = post_import(server.base_url, partner, partner_key, first["data_import_key"])
    assert r.status_code == 401
    assert r.json() == {"message": "Invalid client secret"}
    assert post_import(server.base_url, partner, partner_key, second["data_import_key"]).status_code == 201


@contextmanager
def quickstart(url: str, tmp_path: Path, *extra: str) -> Iterator[tuple[str, str]]:
    """Run ``cohortflow platform quickstart`` as a real process; yields (what it printed, its base URL)."""
    port = free_port()
    env = {**os.environ, "COHORTFLOW_PLATFORM_DATABASE_URL": url, "COHORTFLOW_LOG_LEVEL": "WARNING"}
    env.pop("COHORTFLOW_PLATFORM__PUBLIC_BASE_URL", None)
    with (tmp_path / f"quickstart-{port}.err").open("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cohortflow", "platform", "quickstart", "--port", str(port), *extra],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        try:
            assert proc.stdout is not None
            printed = []
            for line in proc.stdout:
                printed.append(line)
                if line.startswith("Serving on") or line == "}\n":
                    break
            base_url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, f"quickstart exited: {''.join(printed)}"
                try:
                    if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "quickstart did not serve"
                time.sleep(0.1)
            yield "".join(printed), base_url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_quickstart_sets_up_once_prints_keys_and_serves(backend: str, tmp_path: Path) -> None:
    with fresh_database(backend, tmp_path) as url:
        with quickstart(url, tmp_path) as (printed, base_url):
            endpoint = re.search(r"REST endpoint\s+(\S+)", printed)
            partner_key = re.search(r"partner API key\s+(cfpartner_\S+)", printed)
            first_key = re.search(r"data import key\s+(cfdik_\S+)", printed)
            ws_id = re.search(r"workspace\s+default \((ws_\w+)\)", printed)
            assert endpoint and partner_key and first_key and ws_id, printed
            assert endpoint.group(1) == base_url  # the endpoint printed is where it serves
            assert re.search(r"REST API key\s+cfrest_\S+", printed)
            assert "curl -X POST" in printed
            r = post_import(endpoint.group(1), "hightouch", partner_key.group(1), first_key.group(1))
            assert r.status_code == 201, r.text
            # The dashboard's URL and a first admin, whose password works once printed.
            assert re.search(r"dashboard\s+(\S+)", printed).group(1) == f"{base_url}/dashboard/"  # type: ignore[union-attr]
            admin = re.search(r"sign in as\s+(\S+) / (\S+)", printed)
            assert admin, printed
            sign_in(base_url, admin.group(1), admin.group(2)).close()

        # A later run cannot show stored keys again; it says so and issues a fresh data import key.
        with quickstart(url, tmp_path) as (printed, base_url):
            assert "cannot be shown again" in printed
            assert "sign in as" not in printed and "reset-password admin@localhost" in printed
            assert "cfpartner_" not in printed and "cfrest_" not in printed
            assert f"default ({ws_id.group(1)})" in printed
            second_key = re.search(r"data import key\s+(cfdik_\S+)", printed)
            assert second_key and second_key.group(1) != first_key.group(1)
            assert post_import(base_url, "hightouch", partner_key.group(1), second_key.group(1)).status_code == 201
            assert post_import(base_url, "hightouch", partner_key.group(1), first_key.group(1)).status_code == 201

        with quickstart(url, tmp_path, "--json") as (printed, base_url):
            data = json.loads(printed)
            assert data["workspace_id"] == ws_id.group(1)
            assert data["rest_endpoint"] == base_url
            assert data["partner_api_key"] is None and data["rest_api_key"] is None
            assert data["data_import_key"] not in (first_key.group(1), second_key.group(1))
            assert post_import(base_url, "hightouch", partner_key.group(1), data["data_import_key"]).status_code == 201

        # Still exactly one "default" workspace and one hightouch partner, with three live keys.
        assert [w["name"] for w in ok_json(url, "workspace", "list")] == ["default"]
        assert [p["name"] for p in ok_json(url, "partner", "list")] == ["hightouch"]
        keys = ok_json(url, "import-key", "list", "-w", "default", "-p", "hightouch")
        assert [k["state"] for k in keys] == ["active", "active", "active"]


# --- cohorts -----------------------------------------------------------------------------------------


def test_cohort_list_and_show_after_real_imports(database_url: str, server: ServerProcess) -> None:
    ws = ok_json(database_url, "workspace", "create", unique("ws"))
    other_ws = ok_json(database_url, "workspace", "create", unique("ws"))
    partner = unique("hightouch")
    partner_key = ok_json(database_url, "partner", "create", partner)["partner_api_key"]
    secret = ok_json(database_url, "import-key", "create", "-w", ws["id"], "-p", partner)["data_import_key"]
    creds = {"partner_api_key": partner_key, "client_secret": secret}

    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        track = http.post(
            "/users/track",
            headers={"Authorization": f"Bearer {ws['rest_api_key']}"},
            json={"attributes": [{"external_id": f"u{i}", "first_name": f"U{i}"} for i in range(1, 5)]},
        )
        assert track.status_code == 201, track.text
        named = http.post(
            f"/partners/{partner}/cohorts",
            json={**creds, "cohort_id": "vip", "name": "VIP customers", "created_at": "2026-01-01T00:00:00Z"},
        )
        assert named.status_code == 201, named.text
        first = http.post(
            f"/partners/{partner}/cohorts/users",
            json={**creds, "cohort_id": "vip", "cohort_changes": [{"user_ids": ["u1", "u2", "u3", "ghost"]}]},
        )
        assert first.status_code == 201, first.text
        second = http.post(
            f"/partners/{partner}/cohorts/users",
            json={
                **creds,
                "cohort_id": "vip",
                "cohort_changes": [{"user_ids": ["u4"]}, {"user_ids": ["u2"], "should_remove": True}],
            },
        )
        assert second.status_code == 201, second.text

    listed = ok_json(database_url, "cohort", "list", "-w", ws["id"])
    assert [(c["partner"], c["cohort_id"], c["name"], c["size"]) for c in listed] == [
        (partner, "vip", "VIP customers", 3)
    ]
    assert listed[0]["last_import_at"] is not None
    assert ok_json(database_url, "cohort", "list", "-w", ws["id"], "-p", partner) == listed
    assert ok_json(database_url, "cohort", "list", "-w", other_ws["id"]) == []
    everywhere = ok_json(database_url, "cohort", "list", "-p", partner)
    assert [(c["workspace_id"], c["cohort_id"]) for c in everywhere] == [(ws["id"], "vip")]
    table = run(database_url, "cohort", "list", "-w", ws["id"]).stdout
    assert "VIP customers" in table and "vip" in table

    shown = ok_json(database_url, "cohort", "show", "-w", ws["id"], "-p", partner, "vip")
    assert shown["size"] == 3 and shown["name"] == "VIP customers"
    counts = ("received", "matched", "unmatched", "added", "removed", "unchanged")
    assert [tuple(i[c] for c in counts) for i in shown["recent_imports"]] == [
        (2, 2, 0, 1, 1, 0),  # newest first
        (4, 3, 1, 3, 0, 0),
    ]
    assert shown["recent_imports"][1]["unmatched_sample"] == [{"user_id": "ghost"}]
    limited = ok_json(database_url, "cohort", "show", "-w", ws["id"], "-p", partner, "vip", "--imports", "1")
    assert len(limited["recent_imports"]) == 1

    human = run(database_url, "cohort", "show", "-w", ws["id"], "-p", partner, "vip")
    assert human.exit_code == 0, human.output
    assert re.search(r"size\s+3\n", human.stdout)
    assert "user_id=ghost" in human.stdout
    assert re.search(r"RECEIVED\s+MATCHED\s+UNMATCHED\s+ADDED\s+REMOVED\s+UNCHANGED", human.stdout)


def test_cohort_command_errors(database_url: str) -> None:
    ws = ok_json(database_url, "workspace", "create", unique("ws"))
    partner = unique("census")
    ok_json(database_url, "partner", "create", partner)
    assert "no cohort 'nope'" in fails(database_url, "cohort", "show", "-w", ws["id"], "-p", partner, "nope")
    assert fails(database_url, "cohort", "show", "-w", "ws_nope", "-p", partner, "x") == (
        "workspace 'ws_nope' does not exist"
    )
    assert fails(database_url, "cohort", "list", "-p", "nobody-here") == "partner 'nobody-here' does not exist"
    assert fails(database_url, "cohort", "list", "-w", "ws_nope") == "workspace 'ws_nope' does not exist"
    assert "No cohorts." in run(database_url, "cohort", "list", "-w", ws["id"]).stdout


# --- dashboard users ---------------------------------------------------------------------------------


def test_dashboard_user_create_grant_and_reset_password(database_url: str, server: ServerProcess) -> None:
    ws = ok_json(database_url, "workspace", "create", unique("ws"))
    other = ok_json(database_url, "workspace", "create", unique("ws"))
    email = f"{unique('admin')}@example.com"
    created = ok_json(database_url, "user", "create", email, "--role", "admin", "-w", ws["id"])
    assert created["role"] == "admin" and created["workspaces"] == [ws["id"]]
    client = sign_in(server.base_url, email, created["password"])
    assert client.get(f"/dashboard/w/{other['id']}/").status_code == 404
    granted = ok_json(database_url, "user", "grant", email, "-w", other["id"])
    assert sorted(granted["workspaces"]) == sorted([ws["id"], other["id"]])
    assert client.get(f"/dashboard/w/{other['id']}/").status_code == 200
    # A new password ends the sessions the old one opened.
    fresh = ok_json(database_url, "user", "reset-password", email)
    assert client.get("/dashboard/", follow_redirects=False).status_code == 303
    sign_in(server.base_url, email, fresh["password"]).close()
    client.close()
    assert email in [u["email"] for u in ok_json(database_url, "user", "list")]
    again = run(database_url, "user", "create", email, "-w", ws["id"])
    assert again.exit_code == 1 and "already exists" in again.output
    short = run(database_url, "user", "create", "x@example.com", "--password-stdin", input="short\n")
    assert short.exit_code == 1 and "at least 12 characters" in short.output
