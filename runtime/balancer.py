"""Local load balancer: pick one of a block's healthy instances and send it the task.

Default policy: least outstanding requests (ties rotate), session-sticky when asked
(bounded LRU of session → instance). Which instances are healthy comes from an
InstanceSource (the supervisor); this module never starts or stops anything.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published

from runtime.client import InstanceClient
from runtime.errors import InstanceBusy, NoHealthyInstance, TaskError, TaskFailed
from runtime.spec import Endpoint

log = logging.getLogger(__name__)

MAX_STICKY_SESSIONS = 100_000  # session → instance map; FIFO/LRU eviction, sessions come from users
DEFAULT_TASK_TIMEOUT_S = 30.0


class InstanceSource(Protocol):
    def healthy(self, block_id: str) -> Sequence[tuple[str, Endpoint]]:
        """(instance_id, endpoint) of the block's healthy local instances."""
        ...


@dataclass(frozen=True, slots=True)
class TaskReply:
    instance_id: str
    packets: list[Any]


class Balancer:
    """`await balancer.submit(block_id, packet, session_id)` → TaskReply."""

    def __init__(self, source: InstanceSource, client: InstanceClient, *,
                 task_timeout_s: float = DEFAULT_TASK_TIMEOUT_S, max_sticky: int = MAX_STICKY_SESSIONS) -> None:
        self._source = source
        self._client = client
        self._timeout_s = task_timeout_s
        self._outstanding: dict[str, int] = {}
        self._sticky: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._max_sticky = max_sticky
        self._rr = 0
        self.sticky_evictions = 0
        self.retries = 0
        self.served: dict[str, int] = {}  # instance id → tasks answered (for ps / tests)

    def outstanding(self, instance_id: str) -> int:
        return self._outstanding.get(instance_id, 0)

    def pick(self, block_id: str, session_id: str | None = None, sticky: bool = False,
             exclude: str | None = None, prefer: str | None = None) -> tuple[str, Endpoint]:
        """Choose an instance (`prefer`: the one a load-balancer policy chose, while it is healthy).
        Raises NoHealthyInstance."""
        candidates = [c for c in self._source.healthy(block_id) if c[0] != exclude]
        if not candidates:
            raise NoHealthyInstance(block_id)
        if prefer is not None:
            for c in candidates:
                if c[0] == prefer:
                    return c
        if sticky and session_id is not None:
            key = (block_id, session_id)
            held = self._sticky.get(key)
            if held is not None:
                for c in candidates:
                    if c[0] == held:
                        self._sticky.move_to_end(key)
                        return c
        n = len(candidates)
        self._rr = (self._rr + 1) % n
        best = candidates[self._rr]
        best_load = self._outstanding.get(best[0], 0)
        for i in range(1, n):
            c = candidates[(self._rr + i) % n]
            load = self._outstanding.get(c[0], 0)
            if load < best_load:
                best, best_load = c, load
        if sticky and session_id is not None:
            self._sticky[(block_id, session_id)] = best[0]
            if len(self._sticky) > self._max_sticky:
                self._sticky.popitem(last=False)
                self.sticky_evictions += 1
        return best

    async def submit(self, block_id: str, packet: bytes | Mapping[str, Any], session_id: str | None = None,
                     *, sticky: bool = False, prefer: str | None = None) -> TaskReply:
        """Send one task (msgpack bytes, or a packet map to encode) to one healthy instance.

        A transport failure (refused or dropped connection: the instance died) is retried once on
        another healthy instance, as ARCHITECTURE §6 asks of a stage; so delivery is at-least-once.
        Raises: NoHealthyInstance, InstanceBusy, TaskFailed, TaskError (transport failure / timeout).
        """
        body = packet if isinstance(packet, bytes) else msgpack.packb(packet, use_bin_type=True)
        iid, ep = self.pick(block_id, session_id, sticky, prefer=prefer)
        try:
            return await self._send(block_id, iid, ep, body)
        except TimeoutError:
            raise TaskError(f"instance {iid!r} of block {block_id!r} did not answer within "
                            f"{self._timeout_s:g}s") from None
        except aiohttp.ClientError as e:
            log.debug("instance transport failed", extra={"block": block_id, "instance": iid, "error": repr(e)})
            self._client.forget(ep)  # its pooled connections are dead
            self.retries += 1
            try:
                iid2, ep2 = self.pick(block_id, session_id, sticky=False, exclude=iid)
            except NoHealthyInstance:
                raise TaskError(f"instance {iid!r} of block {block_id!r} is unreachable ({e!r}) "
                                "and the block has no other healthy instance") from None
        try:
            return await self._send(block_id, iid2, ep2, body)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise TaskError(f"instances {iid!r} and {iid2!r} of block {block_id!r} failed: {e!r}") from e

    async def _send(self, block_id: str, iid: str, ep: Endpoint, body: bytes) -> TaskReply:
        self._outstanding[iid] = self._outstanding.get(iid, 0) + 1
        try:
            raw = await self._client.task(ep, body, self._timeout_s)
        finally:
            left = self._outstanding[iid] - 1
            if left:
                self._outstanding[iid] = left
            else:
                del self._outstanding[iid]
        if raw.status == 503:
            raise InstanceBusy(block_id, iid)
        try:
            doc = msgpack.unpackb(raw.body, raw=False)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            doc = None
        if raw.status == 200 and isinstance(doc, dict) and doc.get("ok") is True:
            self.served[iid] = self.served.get(iid, 0) + 1
            packets = doc.get("packets")
            return TaskReply(iid, packets if isinstance(packets, list) else [])
        err = doc.get("error") if isinstance(doc, dict) else None
        if isinstance(err, dict):
            raise TaskFailed(block_id, str(err.get("type", "Error")), str(err.get("message", "")),
                             str(err.get("stage", "")))
        raise TaskFailed(block_id, f"HTTP{raw.status}", raw.body[:200].decode(errors="replace"))
