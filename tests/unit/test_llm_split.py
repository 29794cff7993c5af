"""Split stages: 2- and 3-stage chains give the unsplit engine's greedy tokens, a restarted stage is
rebuilt by replaying the history and the tokens continue unchanged, each stage loads only its weights."""

from __future__ import annotations

import itertools
import pathlib
from collections.abc import Iterator

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch

from sdk.llm.engine import LLMEngine
from sdk.llm.errors import CacheMiss, InvalidRequest, ModelLoadError
from sdk.llm.params import SamplingParams
from sdk.llm.pipeline import SplitPipeline
from sdk.llm.stage import PipelineStage
from tests.unit.test_llm_engine import build_tiny_model

PROMPT = "The lighthouse keeper climbed"
N = 24


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return build_tiny_model(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def unsplit(model_dir: pathlib.Path) -> Iterator[tuple[list[int], list[int]]]:
    e = LLMEngine(str(model_dir), max_batch=1)
    ids = e.encode(PROMPT)
    tokens = e.submit(ids, SamplingParams(max_tokens=N, temperature=0)).result(60).token_ids
    e.close()
    yield ids, tokens


def _stages(model_dir: pathlib.Path, cuts: list[int]) -> list[PipelineStage]:
    return [PipelineStage(str(model_dir), (a, b)) for a, b in itertools.pairwise(cuts)]


def _greedy(pipe: SplitPipeline, session: str, ids: list[int], n: int) -> list[int]:
    out = []
    pipe.begin(session, ids)
    for _ in range(n):
        out.append(pipe.step(session))
        if out[-1] == 2:  # </s>: the engine stops here too
            break
    return out


@pytest.mark.parametrize("cuts", [[0, 2, 4], [0, 1, 3, 4]])
def test_chained_stages_equal_the_unsplit_engine(model_dir: pathlib.Path, cuts: list[int],
                                                 unsplit: tuple[list[int], list[int]]) -> None:
    ids, want = unsplit
    pipe = SplitPipeline(_stages(model_dir, cuts))
    assert _greedy(pipe, "s", ids, N) == want
    assert pipe.hop_bytes > 0 and pipe.replays == 0


def test_restarted_stage_replays_history_and_continues_identically(
        model_dir: pathlib.Path, unsplit: tuple[list[int], list[int]]) -> None:
    ids, want = unsplit
    pipe = SplitPipeline(_stages(model_dir, [0, 1, 3, 4]))
    pipe.begin("s", ids)
    got = [pipe.step("s") for _ in range(9)]
    pipe.replace_stage(1, PipelineStage(str(model_dir), (1, 3)))  # the middle stage "restarted": no cache
    got += [pipe.step("s") for _ in range(len(want) - 9)]
    assert got == want and pipe.replays == 1
    pipe.replace_stage(2, PipelineStage(str(model_dir), (3, 4)))  # and the tail, one more time
    pipe.stages[0].drop("s")  # the head too lost it (say: evicted)
    nxt = pipe.step("s")
    assert pipe.replays == 3 and isinstance(nxt, int)


def test_fresh_stage_answers_cache_miss(model_dir: pathlib.Path) -> None:
    head = PipelineStage(str(model_dir), (0, 2))
    with pytest.raises(CacheMiss, match="replay"):
        head.forward("s", torch.tensor([5, 6]), start=3)
    out = head.forward("s", torch.tensor([5, 6, 7]), start=0)
    assert out.shape == (3, head.stack.hidden_size) and head.cached_len("s") == 3
    with pytest.raises(CacheMiss):
        head.forward("s", torch.tensor([8]), start=2)


def test_stages_load_only_their_weights(model_dir: pathlib.Path) -> None:
    full = PipelineStage(str(model_dir), (0, 4)).stack
    head, mid, tail = (s.stack for s in _stages(model_dir, [0, 1, 3, 4]))
    assert head.embed_tokens is not None and head.lm_head is None and len(head.layers) == 1
    assert mid.embed_tokens is None and mid.lm_head is None and len(mid.layers) == 2
    assert tail.embed_tokens is None and tail.lm_head is not None and tail.norm is not None
    assert head.weight_bytes + mid.weight_bytes + tail.weight_bytes == full.weight_bytes
    assert mid.weight_bytes < full.weight_bytes / 2


def test_bad_stage_inputs_are_refused(model_dir: pathlib.Path) -> None:
    head, tail = _stages(model_dir, [0, 2, 4])
    with pytest.raises(InvalidRequest, match="token ids"):
        head.forward("s", torch.zeros(3, 64), 0)
    with pytest.raises(InvalidRequest, match="hidden states"):
        tail.forward("s", torch.zeros(3, 65), 0)
    with pytest.raises(InvalidRequest, match="context"):
        head.forward("s", torch.zeros(300, dtype=torch.long), 0)
    with pytest.raises(InvalidRequest, match="contiguous"):
        SplitPipeline([head, PipelineStage(str(model_dir), (3, 4))])
    with pytest.raises(ModelLoadError, match="range"):
        PipelineStage(str(model_dir), (2, 9))


def test_stage_frames_round_trip_through_the_wire(model_dir: pathlib.Path) -> None:
    from sdk.llm import tensor_wire

    head, tail = _stages(model_dir, [0, 2, 4])
    frame = head.forward_frame("s", tensor_wire.encode(torch.tensor([5, 6, 7])), 0)
    logits = tensor_wire.decode(tail.forward_frame("s", frame, 0))
    assert logits.shape == (tail.stack.vocab_size,) and logits.dtype == torch.float32


def test_stage_blocks_chain_over_packets_and_replay_after_a_restart(
        model_dir: pathlib.Path, unsplit: tuple[list[int], list[int]]) -> None:
    from sdk import AIOSFile, BlockTester, CallbackFailed
    from sdk.llm import tensor_wire
    from sdk.llm.stage_block import LLMStageBlock

    def stage(a: int, b: int) -> BlockTester:
        return BlockTester(LLMStageBlock, block_init_data={"model_path": str(model_dir), "layers": [a, b]},
                           block_init_settings={"max_sessions": 2})

    def call(t: BlockTester, op: str, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        pkt = t.packet({"op": op, "session_id": "s", "start": start}, files=[tensor_wire.to_file(x)])
        out = t.run(pkt)[0]
        return tensor_wire.from_file(out.files[0])[1]

    ids, want = unsplit
    head, tail = stage(0, 2), stage(2, 4)
    fed: list[int] = []
    pending = list(ids)
    got: list[int] = []
    for step in range(len(want)):
        if step == 6:  # the tail restarts: its next forward is a CacheMiss, the entry replays the history
            tail = stage(2, 4)
            h = call(head, "forward", torch.tensor(pending), len(fed))
            ok, err = tail.process(tail.packet({"op": "forward", "session_id": "s", "start": len(fed)},
                                               files=[tensor_wire.to_file(h)]))
            assert not ok and isinstance(err, CallbackFailed) and err.type == "CacheMiss"
            call(tail, "rebuild", call(head, "stateless", torch.tensor(fed)))
            logits = call(tail, "forward", h, len(fed))
        else:
            logits = call(tail, "forward", call(head, "forward", torch.tensor(pending), len(fed)), len(fed))
        tok = int(logits.argmax())
        fed += pending
        pending = [tok]
        got.append(tok)
    assert got == want
    ok, err = head.process(head.packet({"op": "forward", "session_id": "s"}, files=[AIOSFile("{}", b"x")]))
    assert not ok and isinstance(err, CallbackFailed) and err.type == "TensorWireError"
    assert head.run(head.packet({"op": "drop", "session_id": "s"}))
    assert head.block.stage.cached_len("s") == 0


def test_plan_profile_matches_the_loaded_weights(model_dir: pathlib.Path) -> None:
    import json

    from aiosd.llm.plan import profile_from_config

    prof = profile_from_config(json.loads((model_dir / "config.json").read_text()), dtype_bytes=4)
    head, mid, tail = (s.stack for s in _stages(model_dir, [0, 1, 3, 4]))
    assert mid.weight_bytes == 2 * prof.layer_bytes
    assert head.weight_bytes == prof.layer_bytes + prof.embed_bytes
    assert tail.weight_bytes == prof.layer_bytes + prof.head_bytes


def test_sessions_decode_together_in_stages_and_match_alone(model_dir: pathlib.Path) -> None:
    e = LLMEngine(str(model_dir), max_batch=2)
    prompts = [e.encode("The river begins"), e.encode("A network connects machines so")]
    want = [e.submit(p, SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)).result(60).token_ids
            for p in prompts]
    e.close()
    pipe = SplitPipeline(_stages(model_dir, [0, 2, 4]))
    got: list[list[int]] = []
    for i, p in enumerate(prompts):
        pipe.begin(f"s{i}", p)
        got.append([pipe.step(f"s{i}")])
    for step in range(11):
        if step == 5:
            pipe.replace_stage(1, PipelineStage(str(model_dir), (2, 4)))  # a restart: falls back, replays
        for g, tok in zip(got, pipe.step_many(["s0", "s1"])):
            g.append(tok)
    assert got == want and pipe.replays == 2
    with pytest.raises(InvalidRequest, match="once per batch"):
        pipe.stages[0].forward_batch([("s0", torch.tensor([1]), 3), ("s0", torch.tensor([1]), 3)])
