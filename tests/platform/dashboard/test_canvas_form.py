"""The Canvas editor's form codec and the flow layout, without a database."""

from __future__ import annotations

from typing import Any

from cohortflow.platform.dashboard import canvas_form as cf
from cohortflow.platform.dashboard import segment_builder as sb
from cohortflow.platform.dashboard.flow import FlowStep, layout
from cohortflow.platform.messaging.canvas import CanvasDefinition

CATALOGUE = sb.Catalogue(partners=[sb.PartnerCohorts("hightouch", "Hightouch Cohorts", [("vip", "VIP customers")])])
EMAIL = {"channel": "email", "from_address": "news@acme.example", "subject": "Hi {{ first_name }}", "text": "Hello"}
JOURNEY: dict[str, Any] = {
    "name": "Welcome",
    "entry_segment_id": "seg_1",
    "entry_schedule": {"type": "recurring", "cron": "0 9 * * 1", "until": "2031-01-01T00:00:00+00:00"},
    "steps": [
        {"id": "hello", "type": "message", "name": "Say hello", "message": EMAIL, "next": "wait"},
        {"id": "wait", "type": "delay", "days": 2, "hours": 3, "seconds": 5, "next": "split"},
        {
            "id": "split",
            "type": "split",
            "paths": [
                {"name": "VIPs", "filter": {"type": "partner_cohort", "partner": "hightouch", "cohort_id": "vip",
                                           "operator": "includes"}, "next": "hook"},
                {"name": "Both", "filter": {"type": "and", "filters": [
                    {"type": "identity", "state": "identified"}, {"type": "has_email", "value": True}]}},
            ],
            "else_next": "bye",
        },
        {"id": "hook", "type": "message", "message": {"channel": "webhook", "url": "https://hooks.example/x",
                                                      "body": {"id": "{{ external_id }}"}, "headers": {"X-A": "1"}}},
        {"id": "bye", "type": "exit"},
    ],
}  # fmt: skip


def fields_of(form: cf.CanvasForm) -> dict[str, str]:
    """The fields a browser posts for ``form``."""
    fields = {"name": form.name, "entry_segment_id": form.entry_segment_id, "schedule": form.schedule,
              "at": form.at, "cron": form.cron, "until": form.until}  # fmt: skip
    for i, step in enumerate(form.steps):
        p = f"s{i}."
        for name in ("id", "type", "name", "next", "else_next", "days", "hours", "minutes", "seconds", "channel",
                     "from_address", "reply_to", "subject", "text", "html", "url", "body", "headers"):  # fmt: skip
            fields[p + name] = getattr(step, name)
        for j, path in enumerate(step.paths):
            q = f"{p}p{j}."
            fields[q + "name"], fields[q + "next"] = path.name, path.next
            if path.filter_json is not None:
                fields[q + "filter_json"] = path.filter_json
            else:
                assert path.row is not None
                for name in ("kind", "operator", "cohort", "attribute", "value", "state", "event", "product_id",
                             "min_count", "within_days"):  # fmt: skip
                    fields[q + name] = getattr(path.row, name)
    return fields


def test_a_journey_survives_the_form() -> None:
    definition = CanvasDefinition.model_validate(JOURNEY)
    form = cf.from_definition(definition, CATALOGUE)
    assert form.steps[2].paths[0].row is not None and form.steps[2].paths[1].filter_json is not None
    again = cf.definition(cf.from_form(fields_of(form), CATALOGUE))
    assert again is not None
    assert CanvasDefinition.model_validate(again) == definition


def test_form_problems_are_named_by_field() -> None:
    form = cf.from_form(
        {"s0.id": "a", "s0.type": "message", "s0.channel": "webhook", "s0.url": "", "s0.body": "[",
         "s1.id": "b", "s1.type": "delay", "s1.days": "two",
         "s2.id": "c", "s2.type": "split", "s2.p0.name": "", "s2.p0.kind": "custom_attribute",
         "s2.p0.operator": "equals", "s2.p0.attribute": "", "schedule": "at", "at": "tomorrow"},
        CATALOGUE,
    )  # fmt: skip
    assert cf.definition(form) is None
    assert form.errors == {
        "name": "Give the Canvas a name.",
        "entry_segment_id": "Choose the entry segment.",
        "schedule": "The entry time must be a date and a time (UTC), e.g. 2030-01-31 09:00.",
        "s0.url": "Enter the URL the webhook is sent to.",
        "s0.body": "The body is not valid JSON: Expecting value: line 1 column 2 (char 1).",
        "s1.days": "The days must be a whole number.",
        "s2.p0.name": "Name the path.",
        "s2.p0.filter": "Enter the custom attribute's name.",
    }


def test_buttons_build_a_journey() -> None:
    form = cf.default_form(CATALOGUE, "seg_1")
    for kind in ("delay", "split", "message", "exit"):
        form = cf.apply_action(form, f"add_step:{kind}", CATALOGUE)
    assert [s.type for s in form.steps] == ["message", "delay", "split", "message", "exit"]
    # The journey grows at its end: each message or delay that led to the exit leads to the step added after it.
    assert [s.next for s in form.steps] == ["step-2", "step-3", "", "step-5", ""]
    form = cf.apply_action(form, "add_path:2", CATALOGUE)
    assert [p.name for p in form.steps[2].paths] == ["Path 1", "Path 2"]
    form = cf.apply_action(form, "remove:1", CATALOGUE)  # the delay goes; the link to it becomes the exit
    assert [s.id for s in form.steps] == ["step-1", "step-3", "step-4", "step-5"] and form.steps[0].next == ""
    form = cf.apply_action(form, "up:3", CATALOGUE)
    assert [s.id for s in form.steps][-2:] == ["step-5", "step-4"]
    assert cf.apply_action(form, "remove:99", CATALOGUE).steps == form.steps


def test_the_flow_is_drawn_in_layers_with_loops_and_unreached_steps_visible() -> None:
    def step(step_id: str, *targets: str, kind: str = "message") -> FlowStep:
        return FlowStep(step_id, kind, step_id, [], [(t, "") for t in targets] or [("", "")])

    entry = FlowStep("entry", "entry", "Entry", [], [])
    flow = layout(entry, [step("a", "b", "c"), step("b", "c"), step("c"), step("lost")])
    y = {n.id: n.y for n in flow.nodes}
    assert y["entry"] < y["a"] < y["b"] < y["c"] < y["lost"]  # c sits below b: the longest path decides
    assert [n.id for n in flow.nodes if n.unreached] == ["lost"]
    assert len(flow.exits) == 2  # c and lost lead out
    loop = layout(entry, [step("a", "b"), step("b", "a")])
    assert [e.back for e in loop.edges] == [False, False, True]
    assert layout(entry, []).nodes[0].id == "entry"
