"""Liquid templates: per-user context, defaults, per-user errors, and save-time rejection."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cohortflow.platform.errors import InvalidRequest
from cohortflow.platform.messaging.templates import (
    TemplateRenderError,
    _parse,
    render,
    render_json,
    user_context,
    validate_template,
)


def _profile(**fields: object) -> dict[str, object]:
    return {"custom_attributes": {}, **fields}


def test_profile_fields_and_custom_attributes_render() -> None:
    context = user_context(_profile(first_name="Alice", custom_attributes={"plan": "gold", "first_name": "shadowed"}))
    assert render('Hello {{ first_name | default: "there" }}', context) == "Hello Alice"
    assert render("{{ plan | upcase }} / {{ custom_attributes.plan }}", context) == "GOLD / gold"
    # A custom attribute never shadows a profile field at the top level; it stays under custom_attributes.
    assert render("{{ custom_attributes.first_name }}", context) == "shadowed"
    assert render('Hello {{ first_name | default: "there" }}', user_context(_profile())) == "Hello there"


def test_a_missing_value_without_default_fails_that_render_with_the_reason() -> None:
    with pytest.raises(TemplateRenderError, match=r"template error: .*plan.* is undefined"):
        render("Your plan: {{ custom_attributes.plan }}", user_context(_profile()))
    with pytest.raises(TemplateRenderError, match="divide by 0"):
        render("{{ 10 | divided_by: n }}", user_context(_profile(custom_attributes={"n": 0})))


def test_json_bodies_render_strings_only() -> None:
    context = user_context(_profile(external_id="u1", custom_attributes={"n": 3}))
    body = {"id": "{{ external_id }}", "n": "{{ n | plus: 1 }}", "raw": 5, "list": ["{{ n }}", True, None]}
    assert render_json(body, context) == {"id": "u1", "n": "4", "raw": 5, "list": ["3", True, None]}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{% if %}yes{% endif %}", "subject: malformed Liquid template"),
        ("{{ name", "subject: malformed Liquid template"),
        ("{% for x in xs %}", "subject: malformed Liquid template"),
        ("{{ name | shout }}", "subject: unknown Liquid filter 'shout'"),
        ('{% include "other" %}', "subject: malformed Liquid template"),
    ],
)
def test_malformed_templates_are_rejected_naming_the_field(source: str, expected: str) -> None:
    with pytest.raises(InvalidRequest, match=re.escape(expected)):
        validate_template(source, field="subject")


# Text made of the characters Liquid markup is built from, so near-misses ("{ {", "{%" split, "}}") come up often.
_markup_free = st.text(alphabet=st.sampled_from(list("{}%-| ab\n")), max_size=30).filter(
    lambda s: "{{" not in s and "{%" not in s
)


@given(_markup_free)
def test_text_without_markup_renders_as_liquid_renders_it(source: str) -> None:
    # The fast path (no Liquid call) must give what Liquid itself gives.
    assert render(source, {}) == _parse(source).render() == source
