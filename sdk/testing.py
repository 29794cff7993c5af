"""BlockTester: run a block's callbacks locally, with no daemon and no server (AIOS `BlockTester`).

It drives the same TaskRunner as the task endpoint, so a packet gets the same outputs and the same errors
here as over the socket.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sdk.context import AllocationInfo, BlockContext
from sdk.errors import CallbackFailed
from sdk.metrics import AIOSMetrics
from sdk.packet import AIOSFile, AIOSPacket
from sdk.runner import TaskRunner


class BlockTester:
    """`BlockTester(MyBlock, block_init_data={...}).run(packet)` → the output packets."""

    def __init__(self, block_class: type[Any], context: BlockContext | None = None, *,
                 block_id: str = "test-block", block_data: dict[str, Any] | None = None,
                 block_init_data: dict[str, Any] | None = None,
                 block_init_settings: dict[str, Any] | None = None,
                 block_init_parameters: dict[str, Any] | None = None,
                 gpus: Sequence[int | str] = ()) -> None:
        if context is None:
            context = BlockContext(
                block_id=block_id, instance_id="test-instance", node_id="test-node", cluster_id="test-cluster",
                block_data=dict(block_data or {}), block_init_data=dict(block_init_data or {}),
                block_init_settings=dict(block_init_settings or {}),
                block_init_parameters=dict(block_init_parameters or {}),
                allocation_info=AllocationInfo(gpus=list(gpus), node_id="test-node", cluster_id="test-cluster"),
                metrics=AIOSMetrics(block_id, "test-instance"),
            )
        self.context = context
        self.block = block_class(context)
        self.runner = TaskRunner(self.block, context)
        self._seq = 0

    def packet(self, data: Any = None, *, files: Sequence[bytes | AIOSFile] = (), session_id: str = "test-session",
               seq_no: int | None = None) -> AIOSPacket:
        """A packet whose `data` is the JSON of `data` (a str is used as is); seq_no counts up by default."""
        if seq_no is None:
            self._seq += 1
            seq_no = self._seq
        text = data if isinstance(data, str) else json.dumps(data)
        fs = [f if isinstance(f, AIOSFile) else AIOSFile(metadata="{}", file_data=bytes(f)) for f in files]
        return AIOSPacket(session_id=session_id, seq_no=seq_no, data=text, files=fs)

    def run(self, packet: AIOSPacket) -> list[AIOSPacket]:
        """Process one packet; its outputs ([] when held back by the muxer or a batcher).

        Raises:
            CallbackFailed: a callback raised or returned (False, err); `.stage` and `.type` say which.
        """
        return self.runner.run_task(packet)

    def outputs(self, packet: AIOSPacket) -> list[Any]:
        """Like run(), but the outputs' `data` parsed as JSON."""
        return [json.loads(p.data) for p in self.run(packet)]

    def process(self, packet: AIOSPacket) -> tuple[bool, list[AIOSPacket] | CallbackFailed]:
        """AIOS-style: (True, outputs) or (False, the failure), never raising for a callback failure."""
        try:
            return True, self.run(packet)
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
