"""aiosd block SDK: write a block exactly as for AIOS (`from sdk import Block, ...`), serve it in an instance.

Ships into block containers on its own: imports only the standard library, aiohttp and msgpack.
The instance contract (environment, routes, bodies) is documented in `sdk.wire`.
"""

from sdk.batcher import Batcher, TimeBasedBatcher
from sdk.block import Block, InstanceConfig
from sdk.context import AllocationInfo, BlockContext, SessionsManager
from sdk.errors import Busy, CallbackFailed, ConfigError, MetricError, PacketError, SdkError
from sdk.metrics import AIOSMetrics
from sdk.muxer import Muxer
from sdk.packet import AIOSFile, AIOSPacket, FileInfo, OnDataResult, PreProcessResult
from sdk.testing import BlockTester
from sdk.wire import decode_packet, decode_reply, encode_packet

__all__ = [
    "AIOSFile",
    "AIOSMetrics",
    "AIOSPacket",
    "AllocationInfo",
    "Batcher",
    "Block",
    "BlockContext",
    "BlockTester",
    "Busy",
    "CallbackFailed",
    "ConfigError",
    "FileInfo",
    "InstanceConfig",
    "MetricError",
    "Muxer",
    "OnDataResult",
    "PacketError",
    "PreProcessResult",
    "SdkError",
    "SessionsManager",
    "TimeBasedBatcher",
    "decode_packet",
    "decode_reply",
    "encode_packet",
]
