"""LAN discovery over mDNS: announce `_aiosd._tcp.local.` and deliver candidate peers.

A candidate is only an address to try: it grants no trust (the envelope/cert checks do). Off
unless enabled, and only on the IPv4 addresses named in `interfaces` (never "all" implicitly),
so development runs and tests never multicast on a real interface. Async zeroconf API only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from federation.sansio import NodeId

log = logging.getLogger(__name__)

SERVICE_TYPE = "_aiosd._tcp.local."
_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
# Peers choose the names we see: the pending-resolution queue and the known map are capped.
MAX_PENDING = 256
MAX_KNOWN = 1024
RESOLVE_TIMEOUT_MS = 3000  # one mDNS query round trip on a busy LAN, with retries inside


@dataclass(frozen=True, slots=True)
class Candidate:
    """A peer seen on the LAN: where to try to reach it and what it claims to be."""

    addr: str
    port: int
    node_id: NodeId
    network_id: str


def candidate_from_info(info: AsyncServiceInfo) -> Candidate | None:
    """The candidate a resolved service describes, or None when its records are unusable."""
    props = info.properties or {}
    nid = props.get(b"node_id")
    net = props.get(b"network_id")
    if not isinstance(nid, bytes) or not isinstance(net, bytes):
        return None
    node_id, network_id = nid.decode("ascii", "replace"), net.decode("ascii", "replace")
    if not _ID.match(node_id) or not _ID.match(network_id):
        return None
    addrs = info.parsed_addresses(IPVersion.V4Only)
    if not addrs or not info.port or not 0 < info.port < 65536:
        return None
    return Candidate(addr=addrs[0], port=info.port, node_id=NodeId(node_id), network_id=network_id)


class Discovery:
    """Announce this node and browse for others (async context manager; no-op when disabled)."""

    def __init__(
        self,
        node_id: NodeId,
        network_id: str,
        port: int,
        interfaces: Sequence[str],
        enabled: bool,
        on_candidate: Callable[[Candidate], None],
        *,
        only_network: bool = True,
    ) -> None:
        if enabled and not interfaces:
            raise ValueError("interfaces: name the IPv4 addresses to announce on (e.g. ['192.168.1.5'])")
        self.node_id, self.network_id, self.port = node_id, network_id, port
        self.interfaces = list(interfaces)
        self.enabled = enabled
        self.on_candidate = on_candidate
        self.only_network = only_network
        self.known: OrderedDict[str, Candidate] = OrderedDict()
        self.dropped = 0
        self._pending: asyncio.Queue[str] = asyncio.Queue(maxsize=MAX_PENDING)
        self._queued: set[str] = set()
        self._azc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._resolver: asyncio.Task[None] | None = None
        self._info: AsyncServiceInfo | None = None

    @property
    def instance_name(self) -> str:
        return f"{self.node_id}.{SERVICE_TYPE}"

    async def __aenter__(self) -> Self:
        if not self.enabled:
            log.info("mdns discovery disabled")
            return self
        azc = AsyncZeroconf(interfaces=self.interfaces, ip_version=IPVersion.V4Only)
        self._azc = azc
        try:
            self._info = AsyncServiceInfo(
                SERVICE_TYPE,
                self.instance_name,
                port=self.port,
                properties={"node_id": self.node_id, "network_id": self.network_id, "v": "1"},
                server=f"aiosd-{self.node_id}.local.",
                parsed_addresses=self.interfaces,
            )
            # Registration probes then announces (~1.7 s); we do not wait for it to finish.
            await azc.async_register_service(self._info)
            self._resolver = asyncio.create_task(self._resolve_loop(), name="mdns-resolver")
            self._browser = AsyncServiceBrowser(azc.zeroconf, SERVICE_TYPE, handlers=[self._on_change])
        except BaseException:
            await self.close()
            raise
        log.info("mdns discovery started", extra={"interfaces": ",".join(self.interfaces), "port": self.port})
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop browsing, say goodbye (unregister), close zeroconf; idempotent."""
        browser, self._browser = self._browser, None
        if browser is not None:
            await browser.async_cancel()
        resolver, self._resolver = self._resolver, None
        if resolver is not None:
            resolver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await resolver
        azc, self._azc = self._azc, None
        if azc is not None:
            if self._info is not None:
                with contextlib.suppress(Exception):  # already gone or never registered: nothing to undo
                    await azc.async_unregister_service(self._info)
            await azc.async_close()

    # ServiceBrowser calls handlers by keyword: the parameter names are part of the contract.
    def _on_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if name == self.instance_name:
            return
        if state_change is ServiceStateChange.Removed:
            gone = self.known.pop(name, None)
            if gone is not None:
                log.debug("mdns peer gone", extra={"peer": gone.node_id})
            return
        if name in self._queued:
            return
        try:
            self._pending.put_nowait(name)
        except asyncio.QueueFull:
            self.dropped += 1
            return
        self._queued.add(name)

    async def _resolve_loop(self) -> None:
        while True:
            name = await self._pending.get()
            self._queued.discard(name)
            azc = self._azc
            if azc is None:
                return
            try:
                info = AsyncServiceInfo(SERVICE_TYPE, name)
                if not await info.async_request(azc.zeroconf, RESOLVE_TIMEOUT_MS):
                    continue
                cand = candidate_from_info(info)
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad peer record must not stop discovery
                log.warning("mdns resolve failed", exc_info=True, extra={"service": name[:100]})
                continue
            if cand is None or cand.node_id == self.node_id:
                continue
            if self.only_network and cand.network_id != self.network_id:
                continue
            if self.known.get(name) == cand:
                continue
            self.known[name] = cand
            if len(self.known) > MAX_KNOWN:
                self.known.popitem(last=False)
            log.debug("mdns candidate", extra={"peer": cand.node_id, "addr": cand.addr, "port": cand.port})
            try:
                self.on_candidate(cand)
            except Exception:
                log.exception("mdns candidate callback failed")


__all__ = ["SERVICE_TYPE", "Candidate", "Discovery", "candidate_from_info"]
