"""Fuzz the one verifier: random bytes, random msgpack, mutated and re-signed envelopes.

Properties: open_envelope raises nothing but AuthError, never accepts a mutated envelope, and
accepts a re-signed one only when every field is valid.
"""

from __future__ import annotations

from typing import Any, Literal

import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field

from federation.certs import issue_cert, pack
from federation.envelope import open_envelope, schemas_of, seal
from federation.errors import AuthError
from federation.identity import CaKey, NodeKey
from federation.replay import ReplayCache

NOW = 1_800_000_000.0
CA = CaKey.from_seed(b"\x01" * 32)
KEY = NodeKey.from_seed(b"\x02" * 32)
CERT = issue_cert(
    CA, KEY.public_bytes, network_id=CA.network_id, cluster="c", roles=["member"], ttl_s=3600, now=NOW
)


class Body(BaseModel):
    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")
    kind: Literal["fuzz.body"] = "fuzz.body"
    v: Literal[1] = 1
    n: int = Field(ge=0)
    tags: tuple[str, ...] = ()
    data: bytes = b""


SCHEMAS = schemas_of([Body])
VALID = seal(KEY, CERT, "fuzz.body", Body(n=7, tags=("a", "b"), data=b"\x00" * 40), NOW)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _open(raw: bytes) -> object:
    return open_envelope(
        raw, ca_public=CA.public_bytes, now=NOW, revoked=(), replay_cache=ReplayCache(), schemas=SCHEMAS
    )


def test_the_unmutated_envelope_is_accepted() -> None:
    assert _open(VALID)


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes_only_raise_auth_error(raw: bytes) -> None:
    try:
        _open(raw)
    except AuthError:
        pass


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


@FUZZ
@given(msgpack_values)
def test_random_msgpack_values_only_raise_auth_error(value: Any) -> None:
    try:
        _open(pack(value))
    except AuthError:
        pass


@FUZZ
@given(st.data())
def test_mutated_envelope_is_never_accepted(data: st.DataObject) -> None:
    raw = bytearray(VALID)
    op = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate", "append"]))
    i = data.draw(st.integers(0, len(raw) - 1))
    if op == "flip":
        raw[i] ^= data.draw(st.integers(1, 255))
    elif op == "insert":
        raw.insert(i, data.draw(st.integers(0, 255)))
    elif op == "delete":
        del raw[i]
    elif op == "truncate":
        del raw[i:]
    else:
        raw += data.draw(st.binary(min_size=1, max_size=8))
    assert bytes(raw) != VALID
    try:
        _open(bytes(raw))
    except AuthError:
        return
    raise AssertionError(f"mutated envelope accepted: {op} at {i}")


INNER: dict[str, Any] = msgpack.unpackb(msgpack.unpackb(VALID)[0])


@FUZZ
@given(st.sampled_from(sorted(INNER) + ["extra"]), msgpack_values)
def test_resigned_envelope_with_a_bad_field_raises_auth_error_or_is_fully_valid(
    field: str, value: Any
) -> None:
    inner = dict(INNER)
    inner[field] = value
    ib = pack(inner)
    raw = pack([ib, KEY.sign(b"aiosd-env-v1\x00" + ib)])
    try:
        v = open_envelope(
            raw, ca_public=CA.public_bytes, now=NOW, revoked=(), replay_cache=ReplayCache(), schemas=SCHEMAS
        )
    except AuthError:
        return
    # accepted: only possible when the replaced value was itself valid for that field
    assert isinstance(v.body, Body) and v.sender == KEY.node_id and abs(v.ts - NOW) <= 30
