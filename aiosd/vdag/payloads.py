"""The driver of refs.py: keeps large packets on this node and fetches referenced ones from peers."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aiosd.vdag.errors import VdagError
from aiosd.vdag.refs import MAX_REF_BYTES, REF_THRESHOLD, RefStore, check_payload
from aiosd.vdag.wire import FetchPayload, PayloadRef
from federation.envelope import Verified
from federation.errors import AuthError, AuthReason, FederationError
from federation.sansio import NodeId

if TYPE_CHECKING:
    from federation.transport import Transport

FETCH_TIMEOUT_S = 30.0


class Payloads:
    def __init__(self, me: str, transport: Transport | None, addr: str, threshold: int = REF_THRESHOLD) -> None:
        self.me = me
        self.transport = transport
        self.addr = addr
        self.threshold = threshold
        self.store = RefStore()
        self.counters = {"refs_made": 0, "refs_fetched": 0, "ref_bytes_fetched": 0}
        if transport is not None:
            transport.route_raw("vdag.fetch", self._serve)

    async def _serve(self, v: Verified) -> bytes:
        if not isinstance(v.body, FetchPayload):
            raise AuthError(AuthReason.BAD_BODY, "not a vdag.fetch")
        data = self.store.get(v.body.sha256, time.monotonic())
        if data is None:
            raise LookupError(v.body.sha256)
        return data

    def wrap(self, raw: bytes) -> tuple[bytes, PayloadRef | None]:
        """(inline bytes, None), or (b"", a reference to `raw` kept here) when it is large."""
        if len(raw) <= self.threshold:
            return raw, None
        if len(raw) > MAX_REF_BYTES:
            raise VdagError(413, "too_large", f"a packet of {len(raw)} bytes is over the {MAX_REF_BYTES}-byte limit",
                            "data")
        digest = self.store.put(raw, time.monotonic())
        self.counters["refs_made"] += 1
        return b"", PayloadRef(sha256=digest, size=len(raw), holder=self.me, holder_addr=self.addr or "-")

    async def unwrap(self, raw: bytes, ref: PayloadRef | None) -> bytes:
        """The packet bytes: inline, or fetched from the holder and checked. Raises VdagError(422)."""
        if ref is None:
            return raw
        if ref.holder == self.me:  # kept here under the digest this node computed: not hashed again
            data = self.store.get(ref.sha256, time.monotonic())
            if data is not None and len(data) == ref.size:
                return data
        elif self.transport is None:
            data = None
        else:
            try:
                data = await self.transport.request_raw(ref.holder_addr, "vdag.fetch", FetchPayload(sha256=ref.sha256),
                                                        max_bytes=ref.size, timeout_s=FETCH_TIMEOUT_S,
                                                        to=NodeId(ref.holder))
            except FederationError as e:
                raise VdagError(422, "bad_reference", f"payload {ref.sha256[:16]}... does not exist at node "
                                f"{ref.holder} (expired, or never there): {e}", "ref") from None
            data = bytes(data)  # the transport may answer a bytearray (a filled buffer); callers test for bytes
            self.counters["refs_fetched"] += 1
            self.counters["ref_bytes_fetched"] += len(data)
        if data is None:
            raise VdagError(422, "bad_reference", f"payload {ref.sha256[:16]}... does not exist at node {ref.holder} "
                            "(expired, or never there)", "ref")
        why = check_payload(data, ref.sha256, ref.size)
        if why is not None:
            raise VdagError(422, "bad_reference", f"payload from node {ref.holder} refused: {why}", "ref")
        return data


__all__ = ["Payloads"]
