"""LLMStageBlock: one split stage served over block packets, for a vDAG that chains the stages.

Task: `data` = {"op": "forward" | "stateless" | "rebuild" | "drop", "session_id": str, "start": int}
and files[0] = a tensor_wire file: token ids [T] (int64) on the first stage, else hidden states [T, hidden].
    forward    continue the session at `start` (0 starts it); answers the output file ("hidden", or on
               the last stage "logits" [vocab], float32)
    stateless  run the file's whole sequence from position 0 without touching any cache (replays
               upstream of a restarted stage)
    rebuild    replace the session's cache with the file's sequence (Petals-style replay); answers the
               output like forward
    drop       free the session's cache (no file)
The output's data repeats op, session_id and start (and `sample`), so the next stage of a vDAG reads
them as its own task. `sample` = {temperature, top_p, top_k, seed} on a forward: the last stage samples
the next token itself and answers {"token": id} without a file (the tail samples; a seeded draw uses a
generator seeded from (seed, position), so a replayed step draws the same token).
A stage without the session's cache answers type CacheMiss (the entry replays the history); a wrong
frame answers TensorWireError; wrong shapes InvalidRequest. Settings: blockInitData.model_path and
blockInitData.layers [start, end); initSettings dtype, device, max_sessions, max_context, threads.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from sdk.llm import tensor_wire
from sdk.llm.errors import CacheMiss, InvalidRequest
from sdk.llm.params import SamplingParams
from sdk.llm.sampling import make_generator, sample_rows
from sdk.llm.stage import PipelineStage
from sdk.packet import OnDataResult, PreProcessResult

OPS = ("forward", "stateless", "rebuild", "drop")
SEED_STRIDE = 1_000_003  # seeded draws: generator seed = seed * stride + position (mod 2**63)


def sample_params(obj: Any) -> SamplingParams:
    """`data.sample` as SamplingParams (greedy when temperature is 0). Raises InvalidRequest."""
    if not isinstance(obj, dict):
        raise InvalidRequest("data.sample", "must be an object {temperature, top_p, top_k, seed}")
    try:
        t, p, k = float(obj.get("temperature", 0.0)), float(obj.get("top_p", 1.0)), int(obj.get("top_k", 0))
        seed = int(obj.get("seed") or 0)
    except (TypeError, ValueError):
        raise InvalidRequest("data.sample", "temperature/top_p are numbers, top_k/seed integers") from None
    if not (0 <= t <= 2 and 0 < p <= 1 and k >= 0 and seed >= 0):
        raise InvalidRequest("data.sample", "needs 0 <= temperature <= 2, 0 < top_p <= 1, top_k >= 0, seed >= 0")
    return SamplingParams(temperature=t, top_p=p, top_k=k, seed=seed)


def sample_at(logits: torch.Tensor, params: SamplingParams, position: int) -> int:
    """The token at `position` drawn from float32 logits [vocab]; the same for the same (seed, position)."""
    gen = None if params.greedy else make_generator(((params.seed or 0) * SEED_STRIDE + position) & (2**63 - 1),
                                                    logits.device)
    return sample_rows(logits[None], [params], [gen])[0]


class LLMStageBlock:
    """AIOS block contract around PipelineStage."""

    def __init__(self, context: Any) -> None:
        init = {**context.block_init_parameters, **context.block_init_data}
        settings = dict(context.block_init_settings)
        path, layers = init.get("model_path"), init.get("layers")
        if not isinstance(path, str) or not path:
            raise InvalidRequest("blockInitData.model_path", "must name a checkpoint directory")
        if not (isinstance(layers, list) and len(layers) == 2 and all(isinstance(v, int) for v in layers)):
            raise InvalidRequest("blockInitData.layers", "must be [start, end) as two integers")
        if "threads" in settings:
            import torch

            torch.set_num_threads(int(settings["threads"]))
        self.stage = PipelineStage(path, (layers[0], layers[1]), dtype=str(settings.get("dtype", "float32")),
                                   device=str(settings.get("device", "cpu")),
                                   max_sessions=int(settings.get("max_sessions", 8)),
                                   max_context=settings.get("max_context"))
        self.metrics = context.metrics
        context.metrics.register_counter("llm_stage_cache_misses_total", "forwards refused for a missing cache")

    def on_preprocess(self, packet: Any) -> tuple[bool, Any]:
        try:
            data = json.loads(packet.data) if packet.data else {}
        except ValueError as e:
            raise InvalidRequest("data", f"not JSON ({e})") from None
        if not isinstance(data, dict):
            raise InvalidRequest("data", "must be a JSON object {op, session_id, start}")
        op = data.get("op", "forward")
        if op not in OPS:
            raise InvalidRequest("data.op", f"must be one of {', '.join(OPS)}, got {op!r}")
        session = data.get("session_id")
        if op != "stateless" and (not isinstance(session, str) or not session):
            raise InvalidRequest("data.session_id", "must be a non-empty string")
        start = data.get("start", 0)
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise InvalidRequest("data.start", "must be an integer >= 0")
        sample = data.get("sample")
        if sample is not None:
            sample_params(sample)
        x = None
        if op != "drop":
            if not packet.files:
                raise InvalidRequest("files", "needs one tensor file (tensor_wire.to_file)")
            _, x = tensor_wire.from_file(packet.files[0])
        return True, [PreProcessResult(packet=packet, extra_data=(op, session, start, x, sample))]

    def on_data(self, entry: Any) -> tuple[bool, Any]:
        op, session, start, x, sample = entry.extra_data
        st = self.stage
        meta: dict[str, Any] = {"op": op, "session_id": session, "start": start, "layers": [st.start, st.end],
                                "last": st.last}
        if sample is not None:
            meta["sample"] = sample
        if op == "drop":
            st.drop(session)
            return True, OnDataResult(output=meta)
        if op == "stateless":
            out = st.stateless(x)
        elif op == "rebuild":
            st.drop(session)
            out = st.forward(session, x, 0)
        else:
            try:
                out = st.forward(session, x, start)
            except CacheMiss:
                self.metrics.increment_counter("llm_stage_cache_misses_total")
                raise
        meta["cached"] = st.cached_len(session) if session else 0
        if st.last and sample is not None and op in ("forward", "rebuild"):
            meta["token"] = sample_at(out, sample_params(sample), start + int(x.shape[0]))
            return True, OnDataResult(output=meta)
        return True, OnDataResult(output=meta, files=[tensor_wire.to_file(out, "logits" if st.last else "hidden")])

    def health(self) -> dict[str, Any]:
        return {"status": "healthy", "layers": [self.stage.start, self.stage.end]}

    def get_muxer(self) -> None:
        return None
