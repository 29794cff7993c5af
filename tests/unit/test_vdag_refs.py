"""Large payloads by reference: bounded, expiring store; fetched bytes checked; a missing one named."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from aiosd.vdag.errors import VdagError
from aiosd.vdag.payloads import Payloads
from aiosd.vdag.refs import RefStore, check_payload
from aiosd.vdag.wire import PayloadRef


def test_store_expires_and_stays_bounded() -> None:
    s = RefStore(max_bytes=1000, ttl_s=10)
    a = s.put(b"a" * 600, now=0)
    assert s.get(a, now=5) == b"a" * 600
    b = s.put(b"b" * 600, now=1)  # over the bound: the oldest goes
    assert s.get(a, now=2) is None and s.get(b, now=2) is not None and s.size == 600 and s.evicted == 1
    assert s.get(b, now=11.5) is None and s.size == 0  # expired
    assert s.put(b"c", now=0) == hashlib.sha256(b"c").hexdigest()


def test_check_payload_names_what_differs() -> None:
    d = hashlib.sha256(b"xyz").hexdigest()
    assert check_payload(b"xyz", d, 3) is None
    assert "bytes fetched" in str(check_payload(b"xy", d, 3))
    assert "sha256" in str(check_payload(b"xyq", d, 3))


def test_wrap_unwrap_and_a_reference_to_nothing() -> None:
    p = Payloads("n1", None, "127.0.0.1:1", threshold=100)
    assert p.wrap(b"small") == (b"small", None)
    inline, ref = p.wrap(b"z" * 500)
    assert inline == b"" and ref is not None and ref.size == 500 and ref.holder == "n1"
    assert asyncio.run(p.unwrap(inline, ref)) == b"z" * 500
    ghost = PayloadRef(sha256="0" * 64, size=10, holder="n1", holder_addr="127.0.0.1:1")
    with pytest.raises(VdagError) as e:
        asyncio.run(p.unwrap(b"", ghost))
    assert e.value.status == 422 and "does not exist" in str(e.value) and e.value.field == "ref"
    elsewhere = PayloadRef(sha256="0" * 64, size=10, holder="n2", holder_addr="127.0.0.1:1")
    with pytest.raises(VdagError, match="does not exist at node n2"):
        asyncio.run(p.unwrap(b"", elsewhere))
