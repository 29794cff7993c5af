"""The split-model entry over chained stage blocks (the vDAG's hops run in process here): greedy and seeded
tokens equal the unsplit engine's, a stage that restarts mid-generation is rebuilt by replaying the
history and the tokens continue unchanged; the split documents chain the ranges; bad input is refused."""

from __future__ import annotations

import asyncio
import json
import pathlib
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from aiosd.llm.oai import OpenAIError
from aiosd.llm.split import SplitError, cuts_of, split_documents, split_info, vdag_uri
from aiosd.llm.split_entry import SplitEntry
from aiosd.vdag.errors import VdagError
from sdk import AIOSFile, BlockTester, CallbackFailed
from sdk.llm.engine import LLMEngine, eos_ids_of, load_tokenizer
from sdk.llm.params import SamplingParams
from sdk.llm.stage_block import LLMStageBlock, sample_params
from tests.unit.test_llm_engine import build_tiny_model

PROMPT = "The lighthouse keeper climbed"
N = 20
ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return build_tiny_model(tmp_path_factory.getbasetemp())


class Chain:
    """Stage blocks called in order as the vDAG's hops call them: each output packet is the next input."""

    def __init__(self, model_dir: pathlib.Path, cuts: list[tuple[int, int]]) -> None:
        self.model_dir, self.cuts = model_dir, cuts
        self.stages = [self.stage(i) for i in range(len(cuts))]
        self.calls = 0
        self.kill_at: tuple[int, int] | None = None  # (call number, stage index) restarted before that call

    def stage(self, i: int) -> BlockTester:
        return BlockTester(LLMStageBlock, block_init_data={"model_path": str(self.model_dir),
                                                           "layers": list(self.cuts[i])},
                           block_init_settings={"max_sessions": 2, "max_context": 128})

    async def infer(self, uri: str, data: dict[str, Any], files: list[dict[str, Any]], session: str) -> dict[str, Any]:
        self.calls += 1
        if self.kill_at is not None and self.calls == self.kill_at[0]:
            self.stages[self.kill_at[1]] = self.stage(self.kill_at[1])  # restarted: its caches are gone
        text, fs = json.dumps(data), [AIOSFile(f["metadata"], f["file_data"]) for f in files]
        for i, t in enumerate(self.stages):
            ok, out = t.process(t.packet(text, files=fs))
            if not ok:
                assert isinstance(out, CallbackFailed)
                raise VdagError(502, "stage_failed", f"stage 's{i}' failed: {out.type}: {out}", "stage")
            assert isinstance(out, list)
            text, fs = out[0].data, list(out[0].files)
        return {"outputs": [json.loads(text)]}


def _engine_tokens(model_dir: pathlib.Path, params: SamplingParams) -> tuple[list[int], list[int], str]:
    e = LLMEngine(str(model_dir), max_batch=1, max_context=128)
    ids = e.encode(PROMPT)
    done = e.submit(ids, params).result(60)
    e.close()
    return ids, done.token_ids, done.text


def _run(chain: Chain, model_dir: pathlib.Path, ids: list[int], params: SamplingParams) -> dict[str, Any]:
    tok = load_tokenizer(str(model_dir))
    entry = SplitEntry(chain.infer, replay_window_s=5, retry_every_s=0.01)

    async def go() -> dict[str, Any]:
        out = await entry.generate("m:1.0-stable", ids, params, tok, eos_ids_of(2, tok), 128)
        await asyncio.sleep(0)  # the drop runs
        return out

    return asyncio.run(go())


def test_greedy_split_equals_unsplit_and_survives_a_restarted_stage(model_dir: pathlib.Path) -> None:
    params = SamplingParams(max_tokens=N, temperature=0, ignore_eos=True)
    ids, want, text = _engine_tokens(model_dir, params)
    chain = Chain(model_dir, [(0, 1), (1, 3), (3, 4)])
    out = _run(chain, model_dir, ids, params)
    assert out["token_ids"] == want and out["text"] == text and out["replays"] == 0
    assert out["usage"] == {"prompt_tokens": len(ids), "completion_tokens": N, "total_tokens": len(ids) + N}
    for stage in (1, 2):  # the middle, then the tail restart mid-generation
        chain = Chain(model_dir, [(0, 1), (1, 3), (3, 4)])
        chain.kill_at = (8, stage)
        out = _run(chain, model_dir, ids, params)
        assert out["token_ids"] == want and out["replays"] == 1


def test_seeded_sampling_is_the_same_with_a_failover(model_dir: pathlib.Path) -> None:
    params = SamplingParams(max_tokens=N, temperature=0.9, top_p=0.95, seed=7, ignore_eos=True)
    ids = load_tokenizer(str(model_dir))(PROMPT)["input_ids"]
    calm = _run(Chain(model_dir, [(0, 2), (2, 4)]), model_dir, ids, params)["token_ids"]
    chain = Chain(model_dir, [(0, 2), (2, 4)])
    chain.kill_at = (5, 1)
    assert _run(chain, model_dir, ids, params)["token_ids"] == calm
    other = _run(Chain(model_dir, [(0, 2), (2, 4)]), model_dir, ids,
                 SamplingParams(max_tokens=N, temperature=0.9, top_p=0.95, seed=8, ignore_eos=True))["token_ids"]
    assert other != calm


def test_a_stage_that_stays_down_ends_in_503_and_bad_input_in_400(model_dir: pathlib.Path) -> None:
    tok = load_tokenizer(str(model_dir))

    async def down(uri: str, data: dict[str, Any], files: list[dict[str, Any]], session: str) -> dict[str, Any]:
        raise VdagError(502, "stage_failed", "stage 's1' failed on node n2: ConnectionRefused", "stage")

    async def refuse(uri: str, data: dict[str, Any], files: list[dict[str, Any]], session: str) -> dict[str, Any]:
        raise VdagError(502, "stage_failed", "block b failed the task: InvalidRequest: start: exceed the context",
                        "stage")

    p = SamplingParams(max_tokens=3, temperature=0)
    with pytest.raises(OpenAIError) as e:
        asyncio.run(SplitEntry(down, replay_window_s=0.05, retry_every_s=0.01).generate("m", [5, 6], p, tok,
                                                                                         frozenset(), 128))
    assert e.value.status == 503 and e.value.code == "stage_unavailable"
    with pytest.raises(OpenAIError) as e:
        asyncio.run(SplitEntry(refuse).generate("m", [5, 6], p, tok, frozenset(), 128))
    assert e.value.status == 400 and e.value.code == "context_length_exceeded"
    with pytest.raises(OpenAIError, match="context is 4 tokens"):
        asyncio.run(SplitEntry(down).generate("m", [1, 2, 3, 4, 5], p, tok, frozenset(), 4))
    with pytest.raises(ValueError, match="data.sample"):
        sample_params({"temperature": -1})


def test_split_documents_chain_the_ranges() -> None:
    comp = json.loads((ROOT / "examples/llm-stage/component.json").read_text())
    ranges = cuts_of([2, 1, 1])
    assert ranges == [(0, 2), (2, 3), (3, 4)]
    docs = split_documents(comp, "tiny", "/m", ranges, max_context=128, replicas=2)
    blocks = [d["body"]["spec"]["values"] for d in docs[1:-1]]
    assert [b["blockInitData"]["layers"] for b in blocks] == [[0, 2], [2, 3], [3, 4]]
    assert all(b["minInstances"] == 2 for b in blocks)
    vdag = docs[-1]["body"]["spec"]["values"]
    assert [c["inputs"][0]["nodeLabel"] for c in vdag["graph"]["connections"]] == ["s0", "s1"]
    info = split_info({"controller": vdag["controller"]})
    assert info is not None and info["layers"] == [[0, 2], [2, 3], [3, 4]] and vdag_uri("tiny") == "tiny:1.0-stable"
    assert split_info({"controller": {"initSettings": {}}}) is None
    for bad, field in (([(0, 2), (3, 4)], "contiguous"), ([(1, 4)], "cover"), ([(0, 0), (0, 4)], "empty")):
        with pytest.raises(SplitError, match=field):
            split_documents(comp, "tiny", "/m", bad)
    with pytest.raises(SplitError, match="name"):
        split_documents(comp, "bad name!", "/m", ranges)


def test_cli_llm_split_prints_the_documents(tmp_path: pathlib.Path) -> None:
    from tests.daemons import cli

    cfg = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
           "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512, "tie_word_embeddings": False}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    r = cli("llm", "split", str(tmp_path), "--stages", "3", "--name", "m", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["stages"] == [[0, 2], [2, 3], [3, 4]] and out["blocks"] == ["m-s0", "m-s1", "m-s2"]
    assert out["vdag"] == "m:1.0-stable" and len(out["documents"]) == 5
    planned = json.loads(cli("llm", "split", str(tmp_path), "--stages", "2", "--nodes", "a=1:100,b=1:100",
                             "--json", check=True).stdout)
    assert planned["stages"][0][0] == 0 and planned["stages"][-1][1] == 4 and len(planned["stages"]) == 2
    bad = cli("llm", "split", str(tmp_path), "--stages", "9")
    assert bad.returncode == 2 and "--stages" in bad.stderr


def test_session_affinity_routes_a_session_to_one_node() -> None:
    import random

    from aiosd.vdag.routing import Target, choose_target

    ts = [Target(f"n{i}", f"i{i}", "") for i in range(4)]
    rng = random.Random(3)
    for sid in ("a", "b", "c"):
        picks = {choose_target(ts, me="n9", fan_in=False, session_id=sid, seq_no=seq, rng=rng, sticky=True)
                 for seq in range(20)}
        assert len(picks) == 1  # every step of the session: the same node (its caches)
    spread = {choose_target(ts, me="n9", fan_in=False, session_id="a", seq_no=s, rng=rng) for s in range(40)}
    assert len(spread) > 1  # without affinity: random
    here = choose_target(ts, me="n2", fan_in=False, session_id="a", seq_no=1, rng=rng, sticky=True)
    assert here == Target("n2", "", "")
    first = choose_target(ts, me="n9", fan_in=False, session_id="a", seq_no=1, rng=rng, sticky=True)
    assert first is not None
    other = choose_target(ts, me="n9", fan_in=False, session_id="a", seq_no=1, rng=rng, sticky=True,
                          exclude=frozenset({first.node}))
    assert other is not None and other.node != first.node
