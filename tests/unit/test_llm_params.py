"""Request validation of the LLM SDK: every bad field gives an error naming it (no torch needed)."""

from __future__ import annotations

import pytest

from sdk.llm.errors import InvalidRequest
from sdk.llm.params import SamplingParams, messages_from_obj, prompt_from_obj, sampling_from_obj


def test_defaults_and_greedy() -> None:
    p = sampling_from_obj({}, max_tokens_limit=100)
    assert p == SamplingParams(max_tokens=64)
    assert sampling_from_obj({"temperature": 0}, max_tokens_limit=100).greedy
    assert sampling_from_obj({"stop": "\n"}, max_tokens_limit=100).stop == ("\n",)


@pytest.mark.parametrize(("obj", "field"), [
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 101}, "max_tokens"),
    ({"max_tokens": "5"}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_k": -1}, "top_k"),
    ({"seed": -3}, "seed"),
    ({"stop": 5}, "stop"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stop": [""]}, "stop[0]"),
])
def test_bad_sampling_names_the_field(obj: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        sampling_from_obj(obj, max_tokens_limit=100, path="body.")
    assert e.value.field == f"body.{field}"
    assert str(e.value).startswith(f"body.{field}: ")


@pytest.mark.parametrize(("obj", "field"), [
    (None, "messages"),
    ([], "messages"),
    (["hi"], "messages[0]"),
    ([{"role": "robot", "content": "x"}], "messages[0].role"),
    ([{"role": "user"}], "messages[0].content"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": 7}], "messages[1].content"),
    ([{"role": "user", "content": [{"type": "image_url"}]}], "messages[0].content[0]"),
])
def test_malformed_messages_name_the_field(obj: object, field: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        messages_from_obj(obj)
    assert e.value.field == field


def test_text_content_parts_are_joined() -> None:
    msgs = messages_from_obj([{"role": "user", "content": [{"type": "text", "text": "a"},
                                                              {"type": "text", "text": "b"}]}])
    assert msgs[0].content == "ab"


def test_prompt_must_be_a_non_empty_string() -> None:
    assert prompt_from_obj("x") == "x"
    for bad in ("", None, 3, ["a"]):
        with pytest.raises(InvalidRequest, match="^prompt: "):
            prompt_from_obj(bad)
