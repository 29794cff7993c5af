"""HTTP routes of the vdag role: entry (`POST /v1/infer/vdag/{uri}`), records, receipts check."""

from __future__ import annotations

import base64
import binascii
import json
import time
from typing import Any

import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published
from aiohttp import web

from aiosd.api.routes import ApiProblem, Route, json_ok, read_json
from aiosd.blocks.api import MSGPACK, _read_packet
from aiosd.vdag.errors import VdagError
from aiosd.vdag.receipts import ReceiptError, verify_chain
from aiosd.vdag.service import TABLE, VdagService

MAX_SESSION = 200


def _problem(e: VdagError) -> ApiProblem:
    return ApiProblem(e.status, e.code, str(e), e.field)


def decode_chain(raw: Any) -> list[bytes]:
    """base64 receipts of a saved chain (`{"receipts": [...]}` or the list). Raises ApiProblem."""
    items = raw.get("receipts") if isinstance(raw, dict) else raw
    if not isinstance(items, list) or not items:
        raise ApiProblem(422, "invalid", "must be a non-empty list of base64 receipts", "receipts")
    out = []
    for i, r in enumerate(items):
        try:
            out.append(base64.b64decode(r, validate=True))
        except (binascii.Error, ValueError, TypeError):
            raise ApiProblem(422, "invalid", "is not base64", f"receipts[{i}]") from None
    return out


def vdag_routes(svc: VdagService) -> list[Route]:
    async def h_infer(request: web.Request) -> web.Response:
        uri = request.match_info["uri"]
        packet = await _read_packet(request)
        try:
            data = json.loads(packet["data"]) if packet["data"] else None
        except ValueError:
            raise ApiProblem(400, "bad_request", "data is not JSON text", "data") from None
        session = packet["session_id"] or "default"
        if len(session) > MAX_SESSION or "::" in session:
            raise ApiProblem(422, "invalid", f"at most {MAX_SESSION} characters, without '::'", "session_id")
        seq = packet["seq_no"] if request.query.get("seq") != "auto" and packet["seq_no"] else None
        want = request.query.get("receipts", "") in ("1", "true", "yes")
        as_msgpack = request.headers.get("Accept") == MSGPACK or request.query.get("format") == "msgpack"
        try:  # the caller's JSON text goes on as is (a 1 MiB text is not encoded again)
            out = await svc.flow.infer(uri, data, packet["files"], session, seq, want,
                                       data_text=packet["data"] or None, raw=as_msgpack)
        except VdagError as e:
            raise _problem(e) from None
        if as_msgpack:  # output packets as the instances gave them: files stay bytes
            return web.Response(body=msgpack.packb(out, use_bin_type=True), content_type=MSGPACK)
        return json_ok(out)

    async def h_list(request: web.Request) -> web.Response:
        rows = []
        for e in await svc.registry.scan(TABLE):
            v = e.value
            rows.append({"uri": e.key, "status": v.get("status"), "reason": v.get("reason", ""),
                         "stages": len((v.get("graph") or {}).get("stages") or {}),
                         "heads": (v.get("graph") or {}).get("heads"), "tails": (v.get("graph") or {}).get("tails")})
        return json_ok({"kind": "vdags", "items": rows})

    async def h_get(request: web.Request) -> web.Response:
        try:
            return json_ok(await svc.describe(request.match_info["uri"]))
        except VdagError as e:
            raise _problem(e) from None

    async def h_delete(request: web.Request) -> web.Response:
        uri = request.match_info["uri"]
        try:
            gone = await svc.delete(uri)
        except VdagError as e:
            raise _problem(e) from None
        if not gone:
            raise ApiProblem(404, "not_found", f"no vDAG {uri!r}", "uri")
        return json_ok({"kind": "vdag", "id": uri, "deleted": True})

    async def h_verify(request: web.Request) -> web.Response:
        chain = decode_chain(await read_json(request))
        try:
            got = verify_chain(chain, svc.ctx.identity.network.ca_public)
        except ReceiptError as e:
            raise ApiProblem(422, "bad_receipt", str(e), f"receipts[{e.index}]") from None
        return json_ok({"valid": True, "checked_at": time.time(), "receipts": [r.to_json() for r in got]})

    return [Route("POST", "/v1/infer/vdag/{uri}", h_infer, "one task through a vDAG (?receipts=1: the signed "
                  "stage receipts too; Accept: application/msgpack: the output packets as msgpack, files as bytes)",
                  tag="vdag"),
            Route("GET", "/v1/vdags", h_list, "the vDAGs of the network", tag="vdag"),
            Route("GET", "/v1/vdags/{uri}", h_get, "one vDAG: stages, the nodes serving each, health, metrics",
                  tag="vdag"),
            Route("DELETE", "/v1/vdags/{uri}", h_delete, "delete a vDAG", tag="vdag"),
            Route("POST", "/v1/vdag/verify", h_verify, "check a receipt chain against this network's CA",
                  tag="vdag")]


__all__ = ["decode_chain", "vdag_routes"]
