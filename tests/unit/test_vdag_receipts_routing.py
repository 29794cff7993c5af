"""Receipts (sign, check, chain, forged/altered/foreign refused) and routing decisions (sans-IO)."""

from __future__ import annotations

import random

import pytest

from aiosd.vdag.compile import PolicyRef, Stage
from aiosd.vdag.receipts import (
    Receipt,
    ReceiptError,
    check_link,
    open_receipt,
    payload_digest,
    sign_receipt,
    verify_chain,
)
from aiosd.vdag.routing import Target, choose_target, next_labels
from aiosd.vdag.stage_policies import route_by_field
from federation.certs import NodeCert, issue_cert
from federation.identity import CaKey, NodeKey

NOW = 1_800_000_000.0


def node(ca: CaKey) -> tuple[NodeKey, bytes]:
    key = NodeKey.generate()
    cert = issue_cert(ca, key.public_bytes, network_id=ca.network_id, cluster="default", roles=["member"],
                      ttl_s=3600, now=NOW)
    return key, cert.to_bytes()


def receipt(key: NodeKey, label: str, inp: str, out: str) -> Receipt:
    return Receipt("v:1-t", label, "blk-" + label, label + "-0", str(key.node_id), "vdag::v:1-t::s", 7, inp, out,
                   NOW + 10)


def test_chain_verifies_and_every_tampering_is_refused() -> None:
    ca = CaKey.generate()
    (k1, c1), (k2, c2) = node(ca), node(ca)
    p0 = {"data": '{"text": "hi"}', "files": []}
    p1 = {"data": '{"text": "hi-a"}', "files": [{"metadata": "{}", "file_data": b"\x00\x01"}]}
    p2 = {"data": '{"text": "hi-a-b"}', "files": []}
    r1 = sign_receipt(k1, c1, receipt(k1, "a", payload_digest(p0), payload_digest(p1)))
    r2 = sign_receipt(k2, c2, receipt(k2, "b", payload_digest(p1), payload_digest(p2)))
    got = verify_chain([r1, r2], ca.public_bytes)
    assert [r.label for r in got] == ["a", "b"] and got[1].node == str(k2.node_id)
    check_link(open_receipt(r1, ca.public_bytes), p1)
    with pytest.raises(ReceiptError, match="digests to"):  # the packet was altered between stages
        check_link(open_receipt(r1, ca.public_bytes), {**p1, "files": [{"metadata": "{}", "file_data": b"\x00"}]})
    altered = bytearray(r2)
    altered[30] ^= 1
    with pytest.raises(ReceiptError) as e:
        verify_chain([r1, bytes(altered)], ca.public_bytes)
    assert e.value.index == 1
    # signed by k1 but naming k2's node: forged
    forged = sign_receipt(k1, c1, receipt(k2, "b", payload_digest(p1), payload_digest(p2)))
    with pytest.raises(ReceiptError, match="names node"):
        verify_chain([r1, forged], ca.public_bytes)
    # another network's CA
    with pytest.raises(ReceiptError, match="certificate refused"):
        verify_chain([r1], CaKey.generate().public_bytes)
    # a stage whose input is no earlier output
    loose = sign_receipt(k2, c2, receipt(k2, "b", "0" * 64, payload_digest(p2)))
    with pytest.raises(ReceiptError, match="no earlier stage"):
        verify_chain([r1, loose], ca.public_bytes)
    with pytest.raises(ReceiptError, match="malformed"):
        open_receipt(b"\x93junk", ca.public_bytes)


def test_routing_local_first_fan_in_stable_and_conditional() -> None:
    ts = [Target("n2", "b-0", "a2"), Target("n3", "b-1", "a3"), Target("n1", "b-2", "")]
    rng = random.Random(1)
    assert choose_target(ts, me="n1", fan_in=False, session_id="s", seq_no=1, rng=rng) == Target("n1", "", "")
    remote = choose_target(ts, me="n9", fan_in=False, session_id="s", seq_no=1, rng=rng, exclude=frozenset({"n1", "n2"}))
    assert remote is not None and remote.node == "n3" and remote.instance == ""
    # fan-in: every sender, whatever its view order, picks the same instance for one task
    picks = {choose_target(random.sample(ts, 3), me=m, fan_in=True, session_id="s", seq_no=42, rng=rng)
             for m in ("n1", "n2", "n3")}
    assert len(picks) == 1
    spread = {choose_target(ts, me="n1", fan_in=True, session_id="s", seq_no=i, rng=rng) for i in range(50)}
    assert len(spread) == 3
    assert choose_target(ts, me="n1", fan_in=False, session_id="s", seq_no=1, rng=rng,
                         exclude=frozenset({"n1", "n2", "n3"})) is None
    st = Stage("c", "B", children=("big", "small", "sub/p"), postprocessing=PolicyRef("x"))
    assert next_labels(st, "") == ["big", "small", "sub/p"]
    assert next_labels(st, '{"next": ["small"]}') == ["small"]
    assert next_labels(st, '{"next": ["sub"]}') == ["sub/p"]
    assert next_labels(st, '{"is_graph": true}') == ["big", "small", "sub/p"]
    params = {"field": "m.size", "routes": {"long": "big", "short": "small"}}
    assert route_by_field(params, {"m": {"size": "long"}}) == ["big"]
    assert route_by_field(params, {"m": {}}) == []
    assert route_by_field({**params, "default": "small"}, {"x": 1}) == ["small"]


def test_known_certificates_skip_only_the_ca_check() -> None:
    ca = CaKey.generate()
    k1, c1 = node(ca)
    good = sign_receipt(k1, c1, receipt(k1, "a", "1" * 64, "2" * 64))
    known: dict[bytes, NodeCert] = {}
    open_receipt(good, ca.public_bytes, known_certs=known)
    assert set(known) == {c1}
    altered = bytearray(good)
    altered[30] ^= 1
    with pytest.raises(ReceiptError):  # the signature is still checked
        open_receipt(bytes(altered), ca.public_bytes, known_certs=known)
    with pytest.raises(ReceiptError, match="certificate refused"):  # and the certificate's time
        open_receipt(good, ca.public_bytes, now=NOW + 10**7, known_certs=known)
