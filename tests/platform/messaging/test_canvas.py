"""Canvas: defined and started over HTTP, advanced by the worker's domain function on an injected clock."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from cohortflow.clock import utcnow
from cohortflow.platform.messaging.canvas import advance_canvas, canvas_journeys, start_canvas
from cohortflow.platform.messaging.canvas import create_canvas as create_canvas_here
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.segments.service import create_segment as create_segment_here
from cohortflow.platform.store.schema import users
from cohortflow.settings import MessagingSettings
from tests.platform.messaging.helpers import add_cohort, add_users, auth, create_segment
from tests.platform.messaging.sinks import SmtpSink, WebhookSink
from tests.support import Tenant


def _journey(segment_id: str, hook_url: str) -> dict[str, Any]:
    email = {"channel": "email", "from_address": "hello@acme.example"}
    return {
        "name": "Onboarding",
        "entry_segment_id": segment_id,
        "entry_schedule": {"type": "now"},
        "steps": [
            {
                "id": "welcome",
                "type": "message",
                "next": "wait",
                "message": {**email, "subject": "Welcome {{ first_name }}", "text": "Welcome!"},
            },
            {"id": "wait", "type": "delay", "days": 1, "next": "split"},
            {
                "id": "split",
                "type": "split",
                "paths": [
                    {
                        "name": "Gold",
                        "next": "gold_msg",
                        "filter": {
                            "type": "custom_attribute",
                            "attribute": "plan",
                            "operator": "equals",
                            "value": "gold",
                        },
                    },
                    {
                        "name": "France",
                        "next": "fr_msg",
                        "filter": {
                            "type": "standard_attribute",
                            "attribute": "country",
                            "operator": "equals",
                            "value": "FR",
                        },
                    },
                ],
                "else_next": None,
            },
            {
                "id": "gold_msg",
                "type": "message",
                "next": "done",
                "message": {"channel": "webhook", "url": hook_url, "body": {"gold": "{{ external_id }}"}},
            },
            {
                "id": "fr_msg",
                "type": "message",
                "next": "done",
                "message": {**email, "subject": "Bonjour {{ first_name }}", "text": "Salut"},
            },
            {"id": "done", "type": "exit"},
        ],
    }


def test_canvas_moves_every_user_down_the_right_path(
    api: httpx.Client,
    runtime: PlatformRuntime,
    tenant: Tenant,
    smtp_sink: SmtpSink,
    webhook_sink: WebhookSink,
    messaging_settings: MessagingSettings,
) -> None:
    domain = f"{uuid.uuid4().hex[:8]}.example"
    people = {
        "gold_fr": {"first_name": "Gaston", "country": "FR", "custom_attributes": {"plan": "gold"}},
        "silver_fr": {"first_name": "Sylvie", "country": "FR", "custom_attributes": {"plan": "silver"}},
        "silver_de": {"first_name": "Sven", "country": "DE", "custom_attributes": {"plan": "silver"}},
        "upgrades": {"first_name": "Uwe", "country": "DE", "custom_attributes": {"plan": "silver"}},
        "no_email": {"first_name": "Nina", "country": "DE", "custom_attributes": {}},
        "outside": {"first_name": "Otto", "country": "FR", "custom_attributes": {"plan": "gold"}},
    }
    specs = [
        {"external_id": f"{label}-{domain}", **({} if label == "no_email" else {"email": f"{label}@{domain}"}), **spec}
        for label, spec in people.items()
    ]
    ids = dict(zip(people, add_users(runtime, tenant.workspace_id, specs), strict=True))
    add_cohort(runtime, tenant, "journey", [uid for label, uid in ids.items() if label != "outside"])
    segment_id = create_segment(
        api, tenant, "Journey", {"type": "partner_cohort", "partner": tenant.partner, "cohort_id": "journey"}
    )
    hook = f"/canvas/{uuid.uuid4().hex}"

    r = api.post("/canvases", json=_journey(segment_id, webhook_sink.url(hook)), headers=auth(tenant))
    assert r.status_code == 201, r.text
    canvas_id = r.json()["id"]
    assert r.json()["status"] == "draft"
    r = api.post(f"/canvases/{canvas_id}/start", headers=auth(tenant))
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "active"

    base = utcnow() + timedelta(minutes=1)

    def advance(at: datetime) -> Any:
        return advance_canvas(runtime.engine, messaging_settings, canvas_id, clock=lambda: at)

    first = advance(base)
    assert first is not None and first.entered == 5
    for label in ("gold_fr", "silver_fr", "silver_de", "upgrades"):
        assert [m["Subject"] for m in smtp_sink.to(f"{label}@{domain}")] == [f"Welcome {people[label]['first_name']}"]
    assert smtp_sink.to(f"outside@{domain}") == []
    with runtime.engine.connect() as conn:
        positions = canvas_journeys(conn, tenant.workspace_id, canvas_id)
    assert {p["step_id"] for p in positions} == {"wait"} and len(positions) == 5

    # An hour later nothing is due; meanwhile one user upgrades, which the split must see.
    assert advance(base + timedelta(hours=1)).moved == 0  # type: ignore[union-attr]
    with runtime.transaction() as conn:
        conn.execute(update(users).where(users.c.id == ids["upgrades"]).values(custom_attributes={"plan": "gold"}))
    assert webhook_sink.at(hook) == []

    advance(base + timedelta(days=1, seconds=1))
    assert sorted(c.body["gold"] for c in webhook_sink.at(hook)) == sorted([f"gold_fr-{domain}", f"upgrades-{domain}"])
    assert [m["Subject"] for m in smtp_sink.to(f"silver_fr@{domain}")] == ["Welcome Sylvie", "Bonjour Sylvie"]
    assert len(smtp_sink.to(f"silver_de@{domain}")) == 1
    assert len(smtp_sink.to(f"gold_fr@{domain}")) == 1  # gold took the webhook path, not the French one

    r = api.get(f"/canvases/{canvas_id}/stats", headers=auth(tenant))
    assert r.status_code == 200, r.text
    stats = r.json()
    assert (stats["entered"], stats["active"], stats["exited"]) == (5, 0, 5)
    steps = {s["id"]: s for s in stats["steps"]}
    assert (steps["welcome"]["entered"], steps["welcome"]["sent"], steps["welcome"]["skipped"]) == (5, 4, 1)
    assert steps["wait"]["entered"] == 5
    assert steps["split"]["paths"] == {"Gold": 2, "France": 1, "Everyone Else": 2}
    assert steps["split"]["exited"] == 2
    assert (steps["gold_msg"]["entered"], steps["gold_msg"]["sent"]) == (2, 2)
    assert (steps["fr_msg"]["entered"], steps["fr_msg"]["sent"]) == (1, 1)
    assert (steps["done"]["entered"], steps["done"]["exited"]) == (3, 3)

    # Running the worker again sends nothing more; an "enter once" Canvas takes no newcomers.
    calls_before = len(webhook_sink.calls)
    mails_before = len(smtp_sink.for_domain(domain))
    again = advance(base + timedelta(days=3))
    assert again is not None and (again.entered, again.moved) == (0, 0)
    assert (len(webhook_sink.calls), len(smtp_sink.for_domain(domain))) == (calls_before, mails_before)


def test_recurring_entry_lets_new_members_in_once(
    runtime: PlatformRuntime, tenant: Tenant, webhook_sink: WebhookSink, messaging_settings: MessagingSettings
) -> None:
    first_ids = add_users(runtime, tenant.workspace_id, [{"external_id": f"r1-{uuid.uuid4().hex[:6]}"}])
    add_cohort(runtime, tenant, "hourly", first_ids)
    hook = f"/recurring/{uuid.uuid4().hex}"
    start = datetime(2030, 1, 1, 10, 30, tzinfo=utcnow().tzinfo)
    with runtime.transaction() as conn:
        segment = create_segment_here(
            conn,
            tenant.workspace_id,
            "hourly",
            {"type": "partner_cohort", "partner": tenant.partner, "cohort_id": "hourly"},
        )
        created = create_canvas_here(
            conn,
            tenant.workspace_id,
            {
                "name": "Hourly",
                "entry_segment_id": segment.id,
                "entry_schedule": {"type": "recurring", "cron": "0 * * * *"},
                "steps": [
                    {
                        "id": "ping",
                        "type": "message",
                        "message": {
                            "channel": "webhook",
                            "url": webhook_sink.url(hook),
                            "body": {"u": "{{ external_id }}"},
                        },
                    }
                ],
            },
        )
        started = start_canvas(conn, tenant.workspace_id, created.id, now=start)
    assert started.next_entry_at == datetime(2030, 1, 1, 11, 0, tzinfo=start.tzinfo)

    def advance(at: datetime) -> Any:
        return advance_canvas(runtime.engine, messaging_settings, created.id, clock=lambda: at)

    assert advance(start + timedelta(minutes=10)).entered == 0  # before 11:00
    assert advance(datetime(2030, 1, 1, 11, 0, 5, tzinfo=start.tzinfo)).entered == 1
    second = add_users(runtime, tenant.workspace_id, [{"external_id": f"r2-{uuid.uuid4().hex[:6]}"}])
    from sqlalchemy import insert, select

    from cohortflow.platform.store.schema import cohort_members, cohorts

    with runtime.transaction() as conn:
        pk = conn.execute(
            select(cohorts.c.id).where(cohorts.c.workspace_id == tenant.workspace_id, cohorts.c.cohort_id == "hourly")
        ).scalar_one()
        conn.execute(insert(cohort_members).values(cohort_pk=pk, user_id=second[0], added_at=utcnow()))
    assert advance(datetime(2030, 1, 1, 11, 30, tzinfo=start.tzinfo)).entered == 0
    assert advance(datetime(2030, 1, 1, 12, 0, 1, tzinfo=start.tzinfo)).entered == 1  # only the newcomer
    assert len(webhook_sink.at(hook)) == 2


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"entry_segment_id": "seg_missing"}, "entry_segment_id: segment 'seg_missing' does not exist"),
        ({"steps": [{"id": "a", "type": "delay", "days": 1, "next": "b"}]}, "leads to unknown step 'b'"),
        (
            {
                "steps": [
                    {"id": "a", "type": "delay", "days": 1, "next": "b"},
                    {"id": "b", "type": "delay", "hours": 1, "next": "a"},
                ]
            },
            "cycle",
        ),
        ({"steps": [{"id": "a", "type": "delay", "next": None}]}, "positive duration"),
        (
            {
                "steps": [
                    {
                        "id": "m",
                        "type": "message",
                        "message": {"channel": "email", "from_address": "a@b.example", "subject": "{{ x", "text": "t"},
                    }
                ]
            },
            "steps[0] (m).message.subject: malformed Liquid template",
        ),
        (
            {
                "steps": [
                    {
                        "id": "s",
                        "type": "split",
                        "paths": [
                            {
                                "name": "P",
                                "filter": {
                                    "type": "custom_attribute",
                                    "attribute": "n",
                                    "operator": "greater_than",
                                    "value": "abc",
                                },
                            }
                        ],
                    }
                ]
            },
            "steps[0] (s).paths[0] (P).filter",
        ),
        ({"entry_schedule": {"type": "recurring", "cron": "every day"}}, "not a valid cron expression"),
        ({"steps": [{"id": "x", "type": "teleport"}]}, "teleport"),
    ],
)
def test_bad_canvas_definitions_are_rejected_and_nothing_is_saved(
    api: httpx.Client, tenant: Tenant, change: dict[str, Any], expected: str
) -> None:
    segment_id = create_segment(api, tenant, "everyone", {"type": "has_email", "value": True})
    body: dict[str, Any] = {
        "name": "Bad",
        "entry_segment_id": segment_id,
        "steps": [{"id": "bye", "type": "exit"}],
    }
    body.update(change)
    r = api.post("/canvases", json=body, headers=auth(tenant))
    assert r.status_code == 400, r.text
    assert expected in r.json()["message"]
    assert api.get("/canvases", headers=auth(tenant)).json() == {"canvases": []}
