"""LLMEngine on the tiny random Llama built by examples/llm/make_tiny_model.py (offline, seconds).

Greedy tokens equal plain transformers generate; concurrent sessions batch and still equal it; sampling
is seeded; stop strings, cancel, capacity and context limits behave as documented.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import queue
import threading
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch

from sdk.llm.engine import LLMEngine
from sdk.llm.errors import ContextTooLong, InvalidRequest, ModelLoadError, OverCapacity
from sdk.llm.generation import Completion
from sdk.llm.params import Message, SamplingParams
from tests.waiting import eventually

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROMPTS = ["The river begins", "A network connects machines so", "To bake bread, mix", "Numbers: one, two"]
GREEDY = SamplingParams(max_tokens=16, temperature=0.0)
# One torch thread: the 2 shared cores are oversubscribed and OpenMP spinning makes 2 threads ~6x slower.
torch.set_num_threads(1)


def build_tiny_model(base: pathlib.Path) -> pathlib.Path:
    """Build (once per test session) the tiny model into base/tiny-llama."""
    out = base / "tiny-llama"
    if not (out / "model.safetensors").exists():
        os.environ["HF_HUB_OFFLINE"] = "1"
        spec = importlib.util.spec_from_file_location("make_tiny_model", ROOT / "examples/llm/make_tiny_model.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        mod.build(out)
    return out


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return build_tiny_model(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def engine(model_dir: pathlib.Path) -> Iterator[LLMEngine]:
    e = LLMEngine(str(model_dir), max_batch=4, max_queue=8, threads=1)
    yield e
    e.close()


@pytest.fixture(scope="module")
def reference(model_dir: pathlib.Path) -> dict[str, list[int]]:
    """Greedy ids from plain transformers generate for each prompt."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()  # type: ignore[no-untyped-call]  # untyped upstream
    out: dict[str, list[int]] = {}
    for p in PROMPTS:
        ids = tok(p, return_tensors="pt").input_ids
        gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, do_sample=False,
                             pad_token_id=tok.pad_token_id)
        out[p] = gen[0, ids.shape[1]:].tolist()
    return out


def test_greedy_equals_transformers_generate(engine: LLMEngine, reference: dict[str, list[int]]) -> None:
    for p in PROMPTS:
        done = engine.generate(p, GREEDY)
        assert done.token_ids == reference[p]
        eos = bool(done.token_ids) and done.token_ids[-1] in engine.eos_ids
        assert done.finish_reason == ("stop" if eos else "length")
        assert done.usage.completion_tokens == len(reference[p]) == (len(done.token_ids))
        assert done.usage.prompt_tokens == len(engine.encode(p))


def test_concurrent_sessions_batch_and_keep_their_tokens(engine: LLMEngine,
                                                         reference: dict[str, list[int]]) -> None:
    handles = [engine.submit(engine.encode(p), GREEDY) for p in PROMPTS * 2]  # 8 requests, 4 slots
    results = [h.result(60) for h in handles]
    assert [r.token_ids for r in results] == [reference[p] for p in PROMPTS * 2]


def test_stream_deltas_join_to_the_decoded_text(engine: LLMEngine) -> None:
    handle = engine.submit(engine.encode(PROMPTS[0]), GREEDY)
    deltas = list(handle.stream(60))
    assert handle.final is not None
    assert "".join(d.text for d in deltas) == handle.final.text
    assert handle.final.text == engine.tokenizer.decode(handle.final.token_ids, skip_special_tokens=True)


def test_seeded_sampling_is_reproducible(engine: LLMEngine) -> None:
    p = SamplingParams(max_tokens=12, temperature=1.0, top_p=0.9, top_k=40, seed=7)
    a = engine.generate(PROMPTS[1], p).token_ids
    concurrent = [engine.submit(engine.encode(PROMPTS[1]), p) for _ in range(3)]
    assert all(h.result(60).token_ids == a for h in concurrent)
    other = engine.generate(PROMPTS[1], SamplingParams(max_tokens=12, temperature=1.0, seed=8)).token_ids
    assert other != a
    top1 = engine.generate(PROMPTS[1], SamplingParams(max_tokens=12, temperature=1.0, top_k=1, seed=3))
    assert top1.token_ids == engine.generate(PROMPTS[1], SamplingParams(max_tokens=12, temperature=0)).token_ids


def test_stop_string_truncates_and_ends(engine: LLMEngine) -> None:
    texts = {p: engine.generate(p, SamplingParams(max_tokens=16, temperature=0)).text for p in PROMPTS}
    prompt, full = max(texts.items(), key=lambda kv: len(kv[1]))
    stop = full[5:8]
    cut = full.find(stop)
    assert len(stop) == 3 and 0 <= cut <= 5
    handle = engine.submit(engine.encode(prompt), SamplingParams(max_tokens=16, temperature=0, stop=(stop,)))
    deltas = "".join(d.text for d in handle.stream(60))
    assert handle.final is not None and handle.final.finish_reason == "stop"
    assert handle.final.text == full[:cut] == deltas


def test_prompt_longer_than_context_names_the_limit(engine: LLMEngine) -> None:
    with pytest.raises(ContextTooLong) as e:
        engine.submit(list(range(10, 10 + engine.context)), GREEDY)
    assert e.value.limit == engine.context == 256 and "256 tokens" in str(e.value)
    with pytest.raises(InvalidRequest, match="^prompt: "):
        engine.submit([], GREEDY)
    with pytest.raises(InvalidRequest, match="token ids"):
        engine.submit([10**6], GREEDY)


def test_generation_stops_at_the_context_end(model_dir: pathlib.Path) -> None:
    e = LLMEngine(str(model_dir), max_batch=1, max_queue=0, max_context=24)
    try:
        ids = e.encode(PROMPTS[0])
        done = e.submit(ids, SamplingParams(max_tokens=100, temperature=0)).result(60)
        assert done.finish_reason == "length" and len(ids) + done.usage.completion_tokens == 24 + 1
    finally:
        e.close()


def test_over_capacity_is_refused_at_once_and_others_still_served(model_dir: pathlib.Path) -> None:
    e = LLMEngine(str(model_dir), max_batch=2, max_queue=1, start=False)  # no thread: nothing drains
    try:
        held = [e.submit(e.encode(p), GREEDY) for p in PROMPTS[:3]]
        with pytest.raises(OverCapacity, match="over capacity"):
            e.submit(e.encode(PROMPTS[3]), GREEDY)
        assert e.metrics()["rejected_total"] == 1 and e.metrics()["queue_length"] == 3
        finals: dict[int, Any] = {}
        for _ in range(200):  # drive the engine by hand: 3 requests of <= 16 tokens need < 40 steps
            if len(finals) == len(held):
                break
            e.step()
            for i, h in enumerate(held):
                while i not in finals:
                    try:
                        ev = h.next_event(0)
                    except queue.Empty:
                        break
                    if isinstance(ev, Completion):
                        finals[i] = ev
        assert sorted(finals) == [0, 1, 2]
        assert all(f.finish_reason in ("stop", "length") and f.usage.completion_tokens >= 1 for f in finals.values())
        assert e.metrics()["queue_length"] == 0 and e.metrics()["running"] == 0
    finally:
        e.close()


def test_cancel_frees_the_kv_cache(engine: LLMEngine) -> None:
    handle = engine.submit(engine.encode(PROMPTS[0]), SamplingParams(max_tokens=200, temperature=0))
    first = handle.next_event(60)
    assert type(first).__name__ == "Delta"
    handle.cancel()
    done = handle.result(60)
    assert done.finish_reason == "cancelled" and done.usage.completion_tokens < 200
    m = engine.metrics()
    assert m["running"] == 0 and m["cancelled_total"] >= 1
    assert m["kv_cache_bytes"] == engine.cache.bytes_per_token * sum(engine.cache.lengths)
    assert all(n == 0 for s, n in enumerate(engine.cache.lengths) if s not in engine._idle.values())


def test_chat_session_reuses_its_cache_on_the_next_turn(engine: LLMEngine) -> None:
    turns = [Message("system", "You are terse."), Message("user", "hello")]
    before = engine.metrics()["reused_tokens_total"]
    first = engine.chat(turns, GREEDY, session_id="chat-1")
    turns += [Message("assistant", first.text), Message("user", "and then?")]
    second = engine.chat(turns, GREEDY, session_id="chat-1")
    reused = engine.metrics()["reused_tokens_total"] - before
    assert reused >= first.usage.prompt_tokens  # the whole first prompt came from the cache
    fresh = engine.chat(turns, GREEDY)  # no session: computed from scratch, same answer
    assert fresh.token_ids == second.token_ids
    assert engine.drop_session("chat-1") and not engine.drop_session("chat-1")


def test_metrics_report_latency_throughput_and_cache(engine: LLMEngine) -> None:
    engine.generate(PROMPTS[0], GREEDY)
    m: dict[str, Any] = engine.metrics()
    for key in ("ttft_s_p50", "tpot_s_p50", "tokens_per_s", "queue_length", "running", "kv_cache_bytes",
                "kv_cache_capacity_bytes", "prompts_total", "tokens_generated_total"):
        assert key in m
    assert m["ttft_s_p50"] > 0 and m["tpot_s_p50"] > 0 and m["tokens_per_s"] > 0
    assert m["kv_cache_capacity_bytes"] == engine.cache.bytes_per_token * 4 * 256


def test_many_threads_submitting_at_once(engine: LLMEngine, reference: dict[str, list[int]]) -> None:
    out: dict[int, list[int]] = {}

    def run(i: int) -> None:
        out[i] = engine.generate(PROMPTS[i % 4], GREEDY).token_ids

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert out == {i: reference[PROMPTS[i % 4]] for i in range(6)}


def test_bad_checkpoint_directory_is_a_clear_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ModelLoadError, match="no config.json"):
        LLMEngine(str(tmp_path))


async def test_async_stream_and_a_client_that_leaves_frees_the_slot(engine: LLMEngine) -> None:
    from sdk.llm.aio import stream_events

    ids = engine.encode(PROMPTS[0])
    events = [ev async for ev in stream_events(lambda notify: engine.submit(ids, GREEDY, notify=notify))]
    assert isinstance(events[-1], Completion)
    assert "".join(e.text for e in events[:-1] if not isinstance(e, Completion)) == events[-1].text
    long = SamplingParams(max_tokens=200, temperature=0, ignore_eos=True)
    agen = stream_events(lambda notify: engine.submit(ids, long, notify=notify))
    async for _ in agen:
        break  # the client disconnects after its first delta
    await agen.aclose()
    await eventually(lambda: engine.metrics()["running"] == 0, timeout_s=30)  # noticed at its next step
    m = engine.metrics()
    assert m["running"] == 0 and m["cancelled_total"] >= 1


def test_hundred_sessions_over_capacity_queue_with_a_bound_then_refuse(model_dir: pathlib.Path) -> None:
    e = LLMEngine(str(model_dir), max_batch=8, max_queue=32, threads=1, start=False)  # all arrive at once
    try:
        accepted, refused = [], 0
        for i in range(100):
            try:
                accepted.append(e.submit(e.encode(PROMPTS[i % 4]), SamplingParams(max_tokens=2, temperature=0)))
            except OverCapacity:
                refused += 1
        assert len(accepted) == 40 and refused == 60  # 8 slots + 32 waiting, then refused at once
        e.start()
        assert all(h.result(120).usage.completion_tokens >= 1 for h in accepted)
        assert e.metrics()["rejected_total"] == refused
        assert e.generate(PROMPTS[0], GREEDY).usage.completion_tokens >= 1  # and it serves on
    finally:
        e.close()
