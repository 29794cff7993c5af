"""LLMBlock through the SDK's BlockTester (the same TaskRunner as the task endpoint)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from sdk import BlockTester, CallbackFailed
from sdk.llm.block import LLMBlock
from tests.unit.test_llm_engine import build_tiny_model


@pytest.fixture(scope="module")
def tester(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BlockTester]:
    model = build_tiny_model(tmp_path_factory.getbasetemp())
    t = BlockTester(LLMBlock, block_id="llm-1", block_init_data={"model_path": str(model), "model_name": "tiny"},
                    block_init_settings={"max_batch": 4, "max_queue": 4, "max_context": 128, "threads": 1},
                    block_init_parameters={"temperature": 0.0, "max_tokens": 8})
    yield t
    t.block.close()


def _one(t: BlockTester, data: Any, **kw: Any) -> dict[str, Any]:
    outs = t.outputs(t.packet(data, **kw))
    assert len(outs) == 1
    out: dict[str, Any] = outs[0]
    return out


def test_completion_answers_text_usage_and_tokens(tester: BlockTester) -> None:
    out = _one(tester, {"prompt": "The river begins"})
    assert out["model"] == "tiny" and out["finish_reason"] in ("length", "stop")
    assert out["usage"]["completion_tokens"] == len(out["token_ids"]) <= 8
    assert out["usage"]["total_tokens"] == out["usage"]["prompt_tokens"] + out["usage"]["completion_tokens"]
    again = _one(tester, {"prompt": "The river begins"})  # parameters.temperature 0: greedy, repeatable
    assert again["token_ids"] == out["token_ids"]


def test_chat_messages_and_a_batch_of_inputs(tester: BlockTester) -> None:
    chat = _one(tester, {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4})
    assert chat["usage"]["completion_tokens"] <= 4
    items = [{"prompt": p} for p in ("a", "b", "c", "d", "e")]
    outs = tester.outputs(tester.packet({"inputs": items}))
    singles = [_one(tester, it)["token_ids"] for it in items]
    assert [o["token_ids"] for o in outs] == singles


def test_aios_message_mode_keeps_the_history(tester: BlockTester) -> None:
    first = _one(tester, {"message": "hello"}, session_id="conv-1")
    assert "reply" in first
    history = tester.block.utils.chat_history("conv-1")
    assert [m.role for m in history] == ["user", "assistant"] and history[1].content == first["reply"]
    _one(tester, {"message": "more"}, session_id="conv-1")
    assert len(tester.block.utils.chat_history("conv-1")) == 4
    assert tester.management("remove_session", {"session_id": "conv-1"})["status"] == "success"
    assert tester.block.utils.chat_history("conv-1") == []


@pytest.mark.parametrize(("data", "type_", "text"), [
    ("not json", "InvalidRequest", "data: not JSON"),
    ({"nothing": 1}, "InvalidRequest", "needs one of prompt"),
    ({"prompt": "x", "max_tokens": 0}, "InvalidRequest", "data.max_tokens: must be in 1.."),
    ({"prompt": "x", "temperature": -1}, "InvalidRequest", "data.temperature: must be >= 0.0"),
    ({"messages": [{"role": "user", "content": 3}]}, "InvalidRequest", "data.messages[0].content"),
    ({"prompt": "word " * 400}, "ContextTooLong", "context of 128 tokens"),
    ({"inputs": [{"prompt": "ok"}, {"prompt": ""}]}, "InvalidRequest", "data.inputs[1].prompt"),
])
def test_bad_requests_fail_clearly_and_the_block_keeps_serving(tester: BlockTester, data: Any, type_: str,
                                                               text: str) -> None:
    ok, err = tester.process(tester.packet(data))
    assert not ok and isinstance(err, CallbackFailed)
    assert err.type == type_ and text in err.message and err.stage == "on_preprocess"
    assert _one(tester, {"prompt": "still here"})["usage"]["completion_tokens"] >= 1


def test_parameters_update_is_validated(tester: BlockTester) -> None:
    with pytest.raises(CallbackFailed, match="parameters.temperature"):
        tester.update({"temperature": -2})
    assert tester.update({"max_tokens": 3}) == {"max_tokens": 3}
    assert _one(tester, {"prompt": "The river"})["usage"]["completion_tokens"] <= 3
    tester.update({"max_tokens": 8})


def test_health_management_and_prometheus_metrics(tester: BlockTester) -> None:
    _one(tester, {"prompt": "metrics please"})
    ok, detail = tester.health()
    assert ok and detail["status"] == "healthy" and detail["model"] == "tiny"
    m = tester.management("metrics")["metrics"]
    assert m["prompts_total"] >= 1 and m["kv_cache_capacity_bytes"] > 0
    text = tester.context.metrics.render()
    for name in ("llm_prompts_total", "llm_tokens_generated_total", "llm_kv_cache_bytes", "llm_queue_length",
                 "llm_time_to_first_token_seconds_count", "llm_tokens_per_second"):
        assert name in text
    assert tester.management("reset")["status"] == "success"
    assert tester.management("nope")["status"] == "error"
    info = tester.management("info")["info"]
    assert json.dumps(info) and info["device"] == "cpu"


def test_missing_model_path_fails_at_init() -> None:
    with pytest.raises(Exception, match="model_path"):
        BlockTester(LLMBlock)


def test_over_capacity_batch_is_refused_whole(tester: BlockTester) -> None:
    before = tester.block.engine.metrics()["cancelled_total"]
    items = [{"prompt": f"item {i}", "max_tokens": 8} for i in range(12)]  # 4 slots + 4 queued = 8 admitted
    ok, err = tester.process(tester.packet({"inputs": items}))
    assert not ok and isinstance(err, CallbackFailed) and err.type == "OverCapacity"
    for _ in range(3):  # the 8 admitted items were cancelled, so the engine has room again at once
        assert _one(tester, {"prompt": "after"})["usage"]["completion_tokens"] >= 1
    assert tester.block.engine.metrics()["cancelled_total"] >= before + 8


def test_refused_chat_turn_leaves_no_dangling_message(tester: BlockTester) -> None:
    ok, _ = tester.process(tester.packet({"message": "word " * 300}, session_id="conv-2"))
    assert not ok
    assert tester.block.utils.chat_history("conv-2") == []
    _one(tester, {"message": "short"}, session_id="conv-2")
    assert [m.role for m in tester.block.utils.chat_history("conv-2")] == ["user", "assistant"]
