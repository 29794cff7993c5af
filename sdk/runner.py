"""Runs one task through a block's callbacks, synchronously: hooks → muxer → on_preprocess → on_data.

Shared by the task endpoint (called in a worker thread) and BlockTester (called inline), so both give
the same answers. It checks the shape of every callback result and turns failures into CallbackFailed;
it does no I/O and knows nothing of HTTP.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from sdk.context import BlockContext
from sdk.errors import CallbackFailed
from sdk.muxer import Muxer
from sdk.packet import AIOSFile, AIOSPacket, OnDataResult, PreProcessResult

log = logging.getLogger(__name__)

PacketHook = Callable[[AIOSPacket], "AIOSPacket | None"]
_FAILED_WORD = {"on_preprocess": "PreprocessFailed", "on_data": "OnDataFailed", "on_update": "UpdateFailed"}


def _ok_value(stage: str, result: Any, block_id: str) -> Any:
    """Unpack an AIOS `(ok, value)` result; raise CallbackFailed for (False, err) or another shape."""
    if not (isinstance(result, (tuple, list)) and len(result) == 2 and isinstance(result[0], bool)):
        raise CallbackFailed(stage, "BadCallbackResult",
                             f"{stage} must return (ok: bool, value), got {type(result).__name__}", block_id)
    ok, value = result
    if not ok:
        raise CallbackFailed(stage, _FAILED_WORD.get(stage, "CallbackFailed"), str(value), block_id)
    return value


class TaskRunner:
    """The callback pipeline of one block instance (thread-safe as far as the block itself is)."""

    def __init__(self, block: Any, context: BlockContext,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.block = block
        self.context = context
        self.block_id = context.block_id
        self.metrics = context.metrics
        self._clock = clock
        self.metrics.register_counter("callback_errors", "callback calls that failed", labels=("stage",))
        # vDAG pre-processing hooks run before the muxer; none exist yet (returning None holds the task back).
        self.hooks: list[PacketHook] = []
        get_muxer = getattr(block, "get_muxer", None)
        muxer = self._call("get_muxer", get_muxer) if callable(get_muxer) else None
        if muxer is not None and not isinstance(muxer, Muxer):
            raise CallbackFailed("get_muxer", "BadCallbackResult",
                                 f"get_muxer must return a Muxer or None, got {type(muxer).__name__}", self.block_id)
        self.muxer: Muxer | None = muxer

    def _call(self, stage: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as e:  # the block's code failed: this task answers with an error, the instance lives
            log.warning("block callback raised", exc_info=True,
                        extra={"block_id": self.block_id, "stage": stage, "error_type": type(e).__name__})
            self._count_error(stage)
            raise CallbackFailed(stage, type(e).__name__, str(e), self.block_id) from e

    def _count_error(self, stage: str) -> None:
        self.metrics.increment_counter("callback_errors", labels={"stage": stage})

    def _checked(self, stage: str, result: Any) -> Any:
        try:
            return _ok_value(stage, result, self.block_id)
        except CallbackFailed:
            self._count_error(stage)
            raise

    def run_task(self, packet: AIOSPacket, started: float | None = None, *, mux: bool = True) -> list[AIOSPacket]:
        """Process one task; its output packets ([] when held back). `mux=False` skips the hooks and the
        muxer (AIOS's BlockTester calls on_preprocess directly).

        Raises:
            CallbackFailed: a callback raised, returned (False, err), or returned a wrong shape.
        """
        t0 = self._clock() if started is None else started
        current: AIOSPacket | None = packet
        for hook in self.hooks if mux else ():
            current = hook(current) if current is not None else None
        if current is not None and self.muxer is not None and mux:
            current = self.muxer.add(current)
        outputs: list[AIOSPacket] = []
        if current is not None:
            for item in self._preprocess(current):
                outputs.extend(self._on_data(item, current))
        self.metrics.record_stage("end_to_end", self._clock() - t0)
        return outputs

    def _preprocess(self, packet: AIOSPacket) -> list[Any]:
        fn = getattr(self.block, "on_preprocess", None)
        if not callable(fn):  # a block without on_preprocess gets its packet as the single item
            return [PreProcessResult(packet=packet, extra_data=None)]
        t = self._clock()
        value = self._checked("on_preprocess", self._call("on_preprocess", fn, packet))
        if isinstance(value, PreProcessResult):
            value = [value]
        if not isinstance(value, (list, tuple)):
            self._count_error("on_preprocess")
            raise CallbackFailed("on_preprocess", "BadCallbackResult",
                                 f"on_preprocess must return (True, [PreProcessResult, ...]), "
                                 f"got a {type(value).__name__}", self.block_id)
        self.metrics.record_stage("on_preprocess", self._clock() - t)
        return list(value)

    def _on_data(self, item: Any, source: AIOSPacket) -> list[AIOSPacket]:
        t = self._clock()
        value = self._checked("on_data", self._call("on_data", self.block.on_data, item))
        results: list[Any] = [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]
        origin = item.packet if isinstance(item, PreProcessResult) and isinstance(item.packet, AIOSPacket) else source
        outputs = [self._output(r, origin) for r in results]
        self.metrics.record_stage("on_data", self._clock() - t)
        return outputs

    def _output(self, result: Any, origin: AIOSPacket) -> AIOSPacket:
        if not isinstance(result, OnDataResult):
            self._count_error("on_data")
            raise CallbackFailed("on_data", "BadCallbackResult",
                                 "on_data must return (True, OnDataResult(output=...)), (True, None) or "
                                 f"(False, error); got a {type(result).__name__}", self.block_id)
        try:
            data = json.dumps(result.output)
        except (TypeError, ValueError) as e:
            self._count_error("on_data")
            raise CallbackFailed("on_data", "BadCallbackResult",
                                 f"OnDataResult.output is not JSON-serialisable: {e}", self.block_id) from None
        files = list(result.files or [])
        if not all(isinstance(f, AIOSFile) for f in files):
            self._count_error("on_data")
            raise CallbackFailed("on_data", "BadCallbackResult", "OnDataResult.files must be AIOSFile items",
                                 self.block_id)
        return AIOSPacket(session_id=origin.session_id, seq_no=origin.seq_no, data=data, files=files,
                          frame_ptr=origin.frame_ptr, output_ptr=origin.output_ptr, ts=time.time())

    # -- control callbacks ------------------------------------------------------------------------------
    def update(self, params: dict[str, Any]) -> Any:
        """on_update(params) → the accepted parameters (the params themselves when the block has no on_update).

        Raises:
            CallbackFailed: on_update raised or returned (False, err).
        """
        fn = getattr(self.block, "on_update", None)
        if not callable(fn):
            return params
        return self._checked("on_update", self._call("on_update", fn, params))

    def health(self) -> tuple[bool, Any]:
        """(healthy, detail): unhealthy when health() raises or returns a falsy value."""
        fn = getattr(self.block, "health", None)
        if not callable(fn):
            return True, {"status": "healthy"}
        try:
            detail = fn()
        except Exception as e:  # owned unit of work: one health check
            log.warning("block health check raised", exc_info=True, extra={"block_id": self.block_id})
            return False, {"type": type(e).__name__, "message": str(e)}
        return bool(detail), detail

    def management(self, action: str, data: Any) -> Any:
        """management(action, data) → its result.

        Raises:
            CallbackFailed: the block has no management() or it raised.
        """
        fn = getattr(self.block, "management", None)
        if not callable(fn):
            raise CallbackFailed("management", "NotImplemented", "this block has no management()", self.block_id)
        return self._call("management", fn, action, data)
