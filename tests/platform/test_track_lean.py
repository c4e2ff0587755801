"""The lean validation of ``/users/track`` bodies agrees with the models: whatever it accepts, the models accept
with the same changes; everything else is left to the models (and so gets their exact errors)."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from pydantic_core import PydanticCustomError

from cohortflow.platform.track_request import AttributesObject, LeanAttributes, TrackRequest, lean_attributes
from cohortflow.platform.user_requests import check_storable

_KEYS = [
    # standard attributes, the lean path's own and the ones it leaves to the model
    "first_name", "last_name", "email", "phone", "country", "home_city", "language", "gender", "dob", "time_zone",
    "email_subscribe", "push_subscribe",
    # identifiers and names the model treats specially
    "_update_existing_only", "app_id", "user_alias", "braze_id", "device_id", "update_existing_only",
    "push_tokens", "subscription_groups", "changes", "model_config", "$bad", "",
    # custom attributes
    "plan", "lifetime_value", "tags", "visits", "x" * 255, "x" * 256,
]  # fmt: skip

_text = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["FR", "fr", "a@b.co", "not an email", "a@b", "subscribed", "opted_in", "unsubscribed", "M"]),
    st.text(min_size=250, max_size=330),
    st.builds(lambda n: "x" * n + "@example.com", st.integers(300, 320)),
    st.sampled_from(["a\x00b", "\ud800"]),
)
_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**65), 2**65), st.floats(allow_nan=True), _text)
_value = st.one_of(
    _scalar,
    st.lists(_scalar, max_size=3),
    st.fixed_dictionaries({"inc": st.one_of(st.integers(-5, 5), _text, st.booleans())}),
    st.fixed_dictionaries({"add": st.lists(_scalar, max_size=3)}),
    st.fixed_dictionaries({"remove": st.one_of(st.lists(_scalar, max_size=3), _text)}),
    st.dictionaries(st.sampled_from(["add", "remove", "inc", "k"]), _scalar, max_size=2),
)
_external_id = st.one_of(st.text(min_size=1, max_size=10), st.just(""), st.just("e" * 513), st.integers(), st.none())
_object = st.builds(
    lambda ext, rest: ({"external_id": ext} if ext is not None else {}) | rest,
    _external_id,
    st.dictionaries(st.sampled_from(_KEYS), _value, max_size=6),
)


def _model(obj: Any) -> AttributesObject | None:
    try:
        check_storable(obj)
        return AttributesObject.model_validate(obj)
    except (ValidationError, ValueError):
        return None


@settings(max_examples=2000, deadline=None)
@given(_object)
def test_what_the_lean_path_accepts_the_model_accepts_alike(obj: Any) -> None:
    lean = lean_attributes({"attributes": [obj]})
    if lean is None:
        return
    (got,) = lean
    model = _model(obj)
    assert model is not None, f"the lean path accepted what the model refuses: {obj!r}"
    assert got.external_id == model.external_id
    assert got.updates_existing_only == model.updates_existing_only
    assert got.changes == model.changes


def test_the_common_body_takes_the_lean_path_and_the_rest_the_model() -> None:
    common = {"external_id": "u1", "email": "u1@example.com", "country": "fr", "ltv": 3, "tags": {"add": ["a"]}}
    body = TrackRequest.model_validate({"attributes": [common] * 75})
    assert body.attributes is not None and all(isinstance(a, LeanAttributes) for a in body.attributes)
    assert body.attributes[0].changes.columns == {"email": "u1@example.com", "country": "FR"}
    for other in (
        {"attributes": [{**common, "gender": "f"}]},
        {"attributes": [{"user_alias": {"alias_name": "a", "alias_label": "b"}, "first_name": "A"}]},
        {"attributes": [common], "events": [{"external_id": "u1", "name": "e", "time": "2026-01-01T00:00:00Z"}]},
    ):
        body = TrackRequest.model_validate(other)
        assert body.attributes is not None and isinstance(body.attributes[0], AttributesObject)


def _storable_problems(data: Any) -> set[str]:
    """The rule of ``check_storable`` written plainly: the start of the message of every problem in ``data``."""
    if isinstance(data, str):
        if "\x00" in data:
            return {"strings may not contain the NUL character (\\u0000)"}
        try:
            data.encode("utf-8")
        except UnicodeEncodeError:
            return {"strings must be valid Unicode (no lone surrogate code points)"}
    elif isinstance(data, float) and not math.isfinite(data):
        return {"numbers must be finite (NaN and Infinity are not JSON)"}
    elif isinstance(data, int) and not isinstance(data, bool) and not -(2**63) <= data < 2**63:
        return {"integers must be between"}
    elif isinstance(data, dict):
        return {p for k, v in data.items() for p in (_storable_problems(k) | _storable_problems(v))}
    elif isinstance(data, list):
        return {p for item in data for p in _storable_problems(item)}
    return set()


class _Text(str):
    pass


_json = st.recursive(
    st.one_of(_scalar, st.builds(_Text, _text)),
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(_text, children, max_size=3)),
    max_leaves=8,
)


@settings(max_examples=1000, deadline=None)
@given(_json)
def test_check_storable_refuses_exactly_what_the_databases_cannot_store(data: Any) -> None:
    problems = _storable_problems(data)
    try:
        check_storable(data)
    except PydanticCustomError as exc:
        assert any(exc.message().startswith(p) for p in problems), (exc.message(), problems)
    else:
        assert not problems
