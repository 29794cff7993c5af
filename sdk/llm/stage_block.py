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
A stage without the session's cache answers type CacheMiss (the entry replays the history); a wrong
frame answers TensorWireError; wrong shapes InvalidRequest. Settings: blockInitData.model_path and
blockInitData.layers [start, end); initSettings dtype, device, max_sessions, max_context, threads.
"""

from __future__ import annotations

import json
from typing import Any

from sdk.llm import tensor_wire
from sdk.llm.errors import CacheMiss, InvalidRequest
from sdk.llm.stage import PipelineStage
from sdk.packet import OnDataResult, PreProcessResult

OPS = ("forward", "stateless", "rebuild", "drop")


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
        x = None
        if op != "drop":
            if not packet.files:
                raise InvalidRequest("files", "needs one tensor file (tensor_wire.to_file)")
            _, x = tensor_wire.from_file(packet.files[0])
        return True, [PreProcessResult(packet=packet, extra_data=(op, session, start, x))]

    def on_data(self, entry: Any) -> tuple[bool, Any]:
        op, session, start, x = entry.extra_data
        st = self.stage
        meta = {"op": op, "session_id": session, "layers": [st.start, st.end], "last": st.last}
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
        return True, OnDataResult(output=meta, files=[tensor_wire.to_file(out, "logits" if st.last else "hidden")])

    def health(self) -> dict[str, Any]:
        return {"status": "healthy", "layers": [self.stage.start, self.stage.end]}

    def get_muxer(self) -> None:
        return None
