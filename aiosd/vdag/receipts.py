"""Signed stage receipts: which node ran which stage of a vDAG task, on what input, giving what output.

A receipt is msgpack `[body, sig, cert]`: body = msgpack map {v, vdag, label, block, instance,
node, session, seq, in, out, ts}; sig = ed25519(node key, DOMAIN + body); cert = the node's
certificate (so anyone holding the network CA's public key checks it offline). `in`/`out` are
`payload_digest` of the stage's input and output packets. The next stage checks the last receipt
against the packet it received (`check_link`); `verify_chain` checks a saved chain. Pure: no IO,
time passed in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published

from federation.certs import NodeCert, check_cert_state, verify_cert
from federation.errors import AuthError
from federation.identity import NodeKey, verify_signature

DOMAIN = b"aiosd-vdag-receipt-v1\x00"
MAX_RECEIPT_BYTES = 4096
_FIELDS = ("vdag", "label", "block", "instance", "node", "session", "seq", "in", "out", "ts")


class ReceiptError(ValueError):
    """A receipt is malformed, forged, altered, or does not link to its neighbour."""

    def __init__(self, index: int, message: str) -> None:
        self.index = index
        super().__init__(f"receipts[{index}]: {message}")


def payload_digest(packet: Mapping[str, Any]) -> str:
    """sha256 over a packet's data and its files' bytes (metadata included), hex."""
    h = hashlib.sha256()
    data = packet.get("data", "")
    h.update(data.encode() if isinstance(data, str) else bytes(data or b""))
    for f in packet.get("files") or ():
        if isinstance(f, Mapping):
            meta = f.get("metadata", "")
            h.update(b"\x00" + (meta.encode() if isinstance(meta, str) else b""))
            raw = f.get("file_data", b"")
            h.update(b"\x00" + (raw if isinstance(raw, bytes) else b""))
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class Receipt:
    vdag: str
    label: str
    block: str
    instance: str
    node: str
    session: str
    seq: int
    input: str
    output: str
    ts: float

    def to_json(self) -> dict[str, Any]:
        return {"vdag": self.vdag, "label": self.label, "block": self.block, "instance": self.instance,
                "node": self.node, "session": self.session, "seq": self.seq, "in": self.input,
                "out": self.output, "ts": self.ts}


def sign_receipt(key: NodeKey, cert_bytes: bytes, r: Receipt) -> bytes:
    body = msgpack.packb({"v": 1, **r.to_json()}, use_bin_type=True)
    return bytes(msgpack.packb([body, key.sign(DOMAIN + body), cert_bytes], use_bin_type=True))


def open_receipt(raw: bytes, ca_public: bytes, index: int = 0, now: float | None = None,
                 known_certs: MutableMapping[bytes, NodeCert] | None = None) -> Receipt:
    """Decode and check one receipt (certificate against the CA at `now`, or at the receipt's own
    time when None, and the signature). `known_certs`: certificate bytes → the decoded certificate,
    for those whose CA signature was already checked (neither decoded nor CA-checked again; their
    time and revocation are still checked); this adds the ones it checks.
    Raises ReceiptError."""
    if len(raw) > MAX_RECEIPT_BYTES:
        raise ReceiptError(index, f"larger than {MAX_RECEIPT_BYTES} bytes")
    try:
        body, sig, cert_b = msgpack.unpackb(raw, raw=False)
        fields = msgpack.unpackb(body, raw=False)
        known = known_certs.get(cert_b) if known_certs is not None and isinstance(cert_b, bytes) else None
        cert = known if known is not None else NodeCert.from_bytes(cert_b)
        r = Receipt(*(fields[k] for k in _FIELDS))
    except (ValueError, TypeError, KeyError, msgpack.UnpackException) as e:
        raise ReceiptError(index, f"malformed ({type(e).__name__})") from None
    if not isinstance(body, bytes) or not isinstance(sig, bytes) or fields.get("v") != 1:
        raise ReceiptError(index, "malformed (version or field types)")
    at = r.ts if now is None else now
    try:
        if known is not None:
            check_cert_state(cert, at, frozenset())
        else:
            verify_cert(cert, ca_public, at)
            if known_certs is not None and len(known_certs) < 4096:
                known_certs[cert_b] = cert
    except AuthError as e:
        raise ReceiptError(index, f"certificate refused: {e}") from None
    if cert.node_id != r.node:
        raise ReceiptError(index, f"signed by node {cert.node_id}, but names node {r.node}")
    if not verify_signature(cert.public_key, DOMAIN + body, sig):
        raise ReceiptError(index, "bad signature (forged or altered)")
    return r


def check_link(prev: Receipt, received: Mapping[str, Any], index: int = 0, digest: str | None = None) -> None:
    """The packet a stage received is the output the previous stage signed (`digest`: its
    payload_digest when the caller has it already). Raises ReceiptError."""
    got = payload_digest(received) if digest is None else digest
    if prev.output != got:
        raise ReceiptError(index, f"stage {prev.label!r} signed output {prev.output[:16]}..., "
                                  f"but the packet received digests to {got[:16]}...")


def verify_chain(chain: Sequence[bytes], ca_public: bytes) -> list[Receipt]:
    """Check every receipt and that they belong to one task; each stage's input is some earlier
    stage's output (fan-in stages list every branch before them). Raises ReceiptError."""
    out: list[Receipt] = []
    outputs: set[str] = set()
    for i, raw in enumerate(chain):
        r = open_receipt(raw, ca_public, i)
        if out and (r.session, r.seq, r.vdag) != (out[0].session, out[0].seq, out[0].vdag):
            raise ReceiptError(i, "belongs to another task (session, seq or vDAG differ)")
        if out and r.input not in outputs:
            raise ReceiptError(i, f"stage {r.label!r} input {r.input[:16]}... is no earlier stage's output")
        outputs.add(r.output)
        out.append(r)
    return out


__all__ = ["Receipt", "ReceiptError", "check_link", "open_receipt", "payload_digest", "sign_receipt",
           "verify_chain"]
