"""BlockTester: run a block's callbacks locally, with no daemon and no server (AIOS `BlockTester`).

AIOS's calls work as they are: `BlockTester(MyBlock).run(data, files=None)` builds the packet itself
(`create_packet(data, files, session_id, seq_no)`) and returns the outputs of on_data;
`BlockTester.init_with_context(MyBlock, context)` hands the block a context of the test's own.
The packet form of aiosd (`run_packet(packet)`, with the muxer, as the task endpoint runs it) stays.
Both drive the same TaskRunner as the endpoint, so a packet gets the same outputs and errors here as
over the socket.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from sdk.context import AllocationInfo, BlockContext
from sdk.errors import CallbackFailed, PacketError
from sdk.metrics import AIOSMetrics
from sdk.packet import AIOSFile, AIOSPacket
from sdk.runner import TaskRunner


def _runner_context(context: Any) -> BlockContext:
    """The BlockContext the runner needs (block id, metrics) for a context that may be any object."""
    if isinstance(context, BlockContext):
        return context
    block_data = getattr(context, "block_data", None)
    block_id = getattr(context, "block_id", None) or (
        block_data.get("block_id") if isinstance(block_data, dict) else None) or "test-block"
    metrics = getattr(context, "metrics", None)
    if not isinstance(metrics, AIOSMetrics):
        metrics = AIOSMetrics(str(block_id), "test-instance")
    return BlockContext(block_id=str(block_id), instance_id="test-instance", metrics=metrics)


class BlockTester:
    """`BlockTester(MyBlock).run({"x": 1})` → the outputs (AIOS); `.run_packet(packet)` → output packets."""

    def __init__(self, block_class: type[Any], context: Any = None, *,
                 block_id: str | None = None, block_data: dict[str, Any] | None = None,
                 block_init_data: dict[str, Any] | None = None,
                 block_init_settings: dict[str, Any] | None = None,
                 block_init_parameters: dict[str, Any] | None = None,
                 gpus: Sequence[int | str] = ()) -> None:
        if context is None:
            bid = block_id or os.environ.get("BLOCK_ID", "test-block")  # AIOS's TestContext reads BLOCK_ID
            context = BlockContext(
                block_id=bid, instance_id="test-instance", node_id="test-node", cluster_id="test-cluster",
                block_data=dict(block_data if block_data is not None else {"block_id": bid}),
                block_init_data=dict(block_init_data or {}),
                block_init_settings=dict(block_init_settings or {}),
                block_init_parameters=dict(block_init_parameters or {}),
                allocation_info=AllocationInfo(gpus=list(gpus), node_id="test-node", cluster_id="test-cluster"),
                metrics=AIOSMetrics(bid, "test-instance"),
            )
        self.context = context
        self.block = block_class(context)
        self.block_instance = self.block  # AIOS's attribute name
        self.runner = TaskRunner(self.block, _runner_context(context))
        self._seq = 0

    @staticmethod
    def init_with_context(block_class: type[Any], context: Any) -> BlockTester:
        """AIOS: a tester whose block gets `context` (any object with the attributes the block reads)."""
        return BlockTester(block_class, context)

    # AIOS form: data in, outputs out ----------------------------------------------------------------
    def create_packet(self, data: Any, files: Iterable[Any] | None = None, session_id: str | None = None,
                      seq_no: int | None = None) -> AIOSPacket:
        """AIOS's packet: `data` JSON-encoded; `files` as (metadata, file_data) pairs, metadata JSON-encoded
        (AIOSFile items are taken as they are); a fresh session id and seq_no 0 unless given.

        Raises:
            PacketError: `data` or a file's metadata is not JSON-serialisable, or a file is not a pair of
                (metadata, bytes); `.field` names it.
        """
        try:
            text = json.dumps(data)
        except (TypeError, ValueError) as e:
            raise PacketError("data", f"is not JSON-serialisable ({e})") from None
        fs: list[AIOSFile] = []
        for i, f in enumerate(files or ()):
            if isinstance(f, AIOSFile):
                fs.append(f)
                continue
            if not (isinstance(f, (tuple, list)) and len(f) == 2 and isinstance(f[1], (bytes, bytearray))):
                raise PacketError(f"files[{i}]", "must be a (metadata, file_data: bytes) pair or an AIOSFile")
            try:
                meta = json.dumps(f[0])
            except (TypeError, ValueError) as e:
                raise PacketError(f"files[{i}].metadata", f"is not JSON-serialisable ({e})") from None
            fs.append(AIOSFile(metadata=meta, file_data=bytes(f[1])))
        return AIOSPacket(session_id=session_id or f"test-session-{uuid.uuid4()}", seq_no=seq_no or 0, data=text,
                          files=fs, ts=time.time())

    def run(self, data: Any, files: Iterable[Any] | None = None) -> list[Any]:
        """AIOS: build a packet from `data` (+ files), run on_preprocess then on_data on each item (no muxer,
        as AIOS's tester), and return each OnDataResult's `output` (as the endpoint would encode it).

        Raises:
            PacketError: bad `data` or `files` (see create_packet).
            CallbackFailed: a callback raised or returned (False, err); `.stage` and `.type` say which.
        """
        outputs = self.runner.run_task(self.create_packet(data, files), mux=False)
        return [json.loads(p.data) for p in outputs]

    # aiosd's packet form ----------------------------------------------------------------------------
    def packet(self, data: Any = None, *, files: Sequence[bytes | AIOSFile] = (), session_id: str = "test-session",
               seq_no: int | None = None) -> AIOSPacket:
        """A packet whose `data` is the JSON of `data` (a str is used as is); seq_no counts up by default."""
        if seq_no is None:
            self._seq += 1
            seq_no = self._seq
        text = data if isinstance(data, str) else json.dumps(data)
        fs = [f if isinstance(f, AIOSFile) else AIOSFile(metadata="{}", file_data=bytes(f)) for f in files]
        return AIOSPacket(session_id=session_id, seq_no=seq_no, data=text, files=fs)

    def run_packet(self, packet: AIOSPacket) -> list[AIOSPacket]:
        """Process one packet as the task endpoint does (hooks, muxer, callbacks); its outputs ([] when held
        back by the muxer or a batcher).

        Raises:
            CallbackFailed: a callback raised or returned (False, err); `.stage` and `.type` say which.
        """
        return self.runner.run_task(packet)

    def outputs(self, packet: AIOSPacket) -> list[Any]:
        """Like run_packet(), but the outputs' `data` parsed as JSON."""
        return [json.loads(p.data) for p in self.run_packet(packet)]

    def process(self, packet: AIOSPacket) -> tuple[bool, list[AIOSPacket] | CallbackFailed]:
        """AIOS-style: (True, outputs) or (False, the failure), never raising for a callback failure."""
        try:
            return True, self.run_packet(packet)
        except CallbackFailed as e:
            return False, e

    def update(self, params: dict[str, Any]) -> Any:
        """Call on_update; the accepted parameters (raises CallbackFailed)."""
        return self.runner.update(params)

    def health(self) -> tuple[bool, Any]:
        """(healthy, detail)."""
        return self.runner.health()

    def management(self, action: str, data: Any = None) -> Any:
        """Call management(action, data) (raises CallbackFailed)."""
        return self.runner.management(action, data)
