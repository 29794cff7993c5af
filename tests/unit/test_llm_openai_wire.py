"""aiosd.llm.oai: OpenAI request bodies checked (each rejection names its param) and turned into
block task data; block answers into OpenAI responses and SSE chunk frames; `aiosd llm plan` offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aiosd.llm import oai
from tests.daemons import cli

MSG = [{"role": "user", "content": "hi"}]


def test_chat_body_becomes_block_task_data() -> None:
    model, data = oai.chat_task({"model": "m", "messages": [{"role": "developer", "content": "be brief"},
                                                            {"role": "user", "content": [{"type": "text", "text": "a"},
                                                                                         {"type": "text", "text": "b"}]}],
                                 "max_completion_tokens": 3, "temperature": 0, "stop": "x", "seed": 7})
    assert model == "m"
    assert data == {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "ab"}],
                    "max_tokens": 3, "temperature": 0, "stop": ["x"], "seed": 7}
    assert oai.completion_task({"model": "m", "prompt": ["p"]}) == ("m", {"prompt": "p"})


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": MSG, "max_tokens": 0}, "max_tokens"),
    ({"messages": MSG, "max_tokens": 1.5}, "max_tokens"),
    ({"messages": MSG, "temperature": -0.1}, "temperature"),
    ({"messages": MSG, "temperature": float("nan")}, "temperature"),
    ({"messages": MSG, "top_p": 0}, "top_p"),
    ({"messages": MSG, "top_k": True}, "top_k"),
    ({"messages": MSG, "stop": ["a"] * 5}, "stop"),
    ({"messages": MSG, "n": 2}, "n"),
    ({"messages": MSG, "stream": "yes"}, "stream"),
    ({"messages": []}, "messages"),
    ({"messages": [{"content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content[0]"),
    ({"messages": ["x"]}, "messages[0]"),
])
def test_bad_chat_bodies_name_the_param(body: dict[str, Any], param: str) -> None:
    with pytest.raises(oai.OpenAIError) as e:
        oai.chat_task({"model": "m", **body})
    assert e.value.status == 400 and e.value.param == param
    err = e.value.body()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"


def test_model_and_body_shape() -> None:
    cases: list[tuple[dict[str, Any], str]] = [({"messages": MSG}, "model"), ({"model": "", "messages": MSG}, "model"),
                                               ({"model": "m", "prompt": 3}, "prompt")]
    for body, param in cases:
        with pytest.raises(oai.OpenAIError) as e:
            oai.completion_task(body) if "prompt" in body else oai.chat_task(body)
        assert e.value.param == param
    with pytest.raises(oai.OpenAIError) as e:
        oai.chat_task([1, 2])
    assert e.value.status == 400 and e.value.code == "invalid_body"


def test_block_errors_map_to_openai_statuses() -> None:
    assert oai.block_error("block 'b' failed the task (OverCapacity): queue full").status == 429
    ctx = oai.block_error("failed the task (ContextTooLong): data.prompt: 300 tokens, context of 128 tokens")
    assert ctx.status == 400 and ctx.code == "context_length_exceeded"
    inv = oai.block_error("failed the task (InvalidRequest): data.max_tokens: must be <= 127")
    assert inv.status == 400 and inv.param == "max_tokens"
    assert oai.block_error("boom").status == 502


def test_responses_and_stream_frames() -> None:
    out = {"text": "hello", "finish_reason": "length",
           "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}}
    chat = oai.chat_response("id1", "m", out, 100)
    assert chat["choices"][0]["message"] == {"role": "assistant", "content": "hello"}
    assert chat["choices"][0]["finish_reason"] == "length" and chat["usage"]["total_tokens"] == 5
    frames = oai.stream_frames(True, "id1", "m", out, 100, include_usage=True)
    assert frames[-1] == b"data: [DONE]\n\n" and all(f.startswith(b"data: ") and f.endswith(b"\n\n") for f in frames)
    docs = [json.loads(f[6:]) for f in frames[:-1]]
    assert "".join(d["choices"][0]["delta"].get("content", "") for d in docs if d["choices"]) == "hello"
    assert docs[-1]["usage"]["completion_tokens"] == 3 and docs[-1]["choices"] == []
    text = oai.stream_frames(False, "id2", "m", {"text": "", "finish_reason": "stop"}, 100, include_usage=False)
    assert [json.loads(f[6:])["choices"][0]["finish_reason"] for f in text[:-1]] == ["stop"]
    assert oai.include_usage({"stream_options": {"include_usage": True}})
    with pytest.raises(oai.OpenAIError):
        oai.include_usage({"stream_options": {"include_usage": "y"}})


def test_cli_llm_plan(tmp_path: Path) -> None:
    cfg = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
           "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512, "tie_word_embeddings": False}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    r = cli("llm", "plan", str(tmp_path), "--nodes", "a=1:100:gpu,b=1:50", "--stages", "2", "--json")
    assert r.returncode == 0, r.stderr
    plans = json.loads(r.stdout)["plans"]
    assert plans and all(p["stages"][0]["start"] == 0 and p["stages"][-1]["end"] == 4 for p in plans)
    assert plans[0]["tokens_per_s"] >= plans[-1]["tokens_per_s"]
    text = cli("llm", "plan", str(tmp_path), "--nodes", "a=1", check=True).stdout
    assert "tok/s" in text and "a[0,4)" in text
    bad = cli("llm", "plan", str(tmp_path), "--nodes", "a=lots")
    assert bad.returncode == 2 and "--nodes 'a=lots'" in bad.stderr
    assert "MODEL_DIR" in cli("llm", "plan", str(tmp_path / "nope")).stderr
