"""Local API of the membership service: nodes, node removal, join tokens, doctor.

Handlers validate, call the service and shape JSON; protocol and trust live in the service.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import psutil  # type: ignore[import-untyped,unused-ignore]  # no stubs installed
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from aiosd.api.routes import ApiProblem, Route, json_ok, read_model
from aiosd.membership.service import TOKENS, MembershipService
from aiosd.membership.wire import JoinHello, JoinHelloAnswer
from federation.errors import AuthError, FederationError
from federation.tokens import MAX_TOKEN_TTL_S, TokenRecord, create_token, revoke_token
from federation.transport import request_open

_ID = r"^[a-z0-9][a-z0-9._-]{0,63}$"


class NodeView(BaseModel):
    node_id: str
    addr: str
    state: str
    incarnation: int
    cluster: str
    roles: list[str]
    ca: bool
    revoked: bool
    self_: bool = Field(alias="self")

    model_config = ConfigDict(populate_by_name=True)


class NodesResponse(BaseModel):
    node_id: str
    nodes: list[NodeView]


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cluster: str | None = Field(None, pattern=_ID)
    ttl_s: int = Field(3600, ge=1, le=MAX_TOKEN_TTL_S)
    uses: int = Field(1, ge=1, le=100_000)


class TokenCreated(BaseModel):
    token: str
    token_id: str
    cluster: str
    expires: int
    uses: int
    seeds: list[str]


class TokenInfo(BaseModel):
    token_id: str
    cluster: str
    created_at: int
    expires: int
    uses_total: int
    uses_left: int
    revoked: bool
    state: str
    used_by: list[str]


class TokenList(BaseModel):
    tokens: list[TokenInfo]


class PeerSessionView(BaseModel):
    peer: str
    addr: str
    initiator: bool
    cipher: str
    session_id: str
    age_s: float
    last_rekey_age_s: float
    epoch_out: int
    epoch_in: int
    frames_out: int
    cert_expires: int


class SessionsView(BaseModel):
    """`GET /v1/sessions`: the p2p transport's encrypted sessions (what `aiosd doctor` shows per peer)."""

    cipher: str
    handshakes_ok: int
    handshake_failures: dict[str, int]
    frames_dropped: dict[str, int]
    sessions_opened: int
    sessions_closed: int
    rekeys: int
    peers: list[PeerSessionView]


def sessions_view(svc: MembershipService) -> SessionsView:
    return SessionsView.model_validate(dataclasses.asdict(svc.transport.sessions_report()))


class Removed(BaseModel):
    node_id: str
    revoked_at: int
    reached: int


def _info(r: TokenRecord, now: float) -> TokenInfo:
    state = ("revoked" if r.revoked else "expired" if now >= r.expires else
             "used up" if r.uses_left <= 0 else "active")
    return TokenInfo(token_id=r.token_id, cluster=r.cluster, created_at=r.created_at, expires=r.expires,
                     uses_total=r.uses_total, uses_left=r.uses_left, revoked=r.revoked, state=state,
                     used_by=list(r.used_by))


class MembershipHandlers:
    """The membership HTTP handlers (nodes, join tokens, doctor, sessions) over one `MembershipService`."""

    def __init__(self, svc: MembershipService) -> None:
        self.svc = svc

    def require_ca(self) -> Any:
        ca = self.svc.ctx.identity.ca
        if ca is None:
            raise ApiProblem(409, "not_ca", "this node does not hold the network CA; run this on the first "
                             "node (the one `aiosd init` created)")
        return ca

    async def nodes(self, _: web.Request) -> web.Response:
        me = self.svc.ctx.identity.node_id
        out = [NodeView(node_id=m.node, addr=m.addr, state=m.state.value, incarnation=m.incarnation,
                        cluster=m.meta.get("cluster", ""), roles=[r for r in m.meta.get("roles", "").split(",") if r],
                        ca=m.meta.get("ca") == "1", revoked=m.node in self.svc.revoked, self_=m.node == me)
               for m in self.svc.swim.members()]
        return web.Response(text=NodesResponse(node_id=me, nodes=out).model_dump_json(by_alias=True),
                            content_type="application/json")

    async def remove_node(self, request: web.Request) -> web.Response:
        node_id = request.match_info["id"]
        if node_id == self.svc.ctx.identity.node_id:
            raise ApiProblem(409, "self", "a node cannot remove itself; run `aiosd node remove` on another admin")
        known = self.svc.swim.member(node_id)  # type: ignore[arg-type]  # a str from the URL
        if known is None and node_id not in self.svc.revoked:
            raise ApiProblem(404, "unknown_node", f"no node {node_id} in this network's member list", "id")
        try:
            sr = await self.svc.revoke(node_id, "node", "removed by admin")
        except AuthError:
            raise ApiProblem(403, "not_admin", "this node's certificate has no admin role; "
                             "run it on an admin node") from None
        reached = sum(1 for n, _ in self.svc.alive() if n not in (node_id, self.svc.ctx.identity.node_id))
        return json_ok(Removed(node_id=node_id, revoked_at=sr.revocation.revoked_at, reached=reached))

    async def token_create(self, request: web.Request) -> web.Response:
        body = await read_model(request, TokenCreate)
        ca = self.require_ca()
        cluster = body.cluster or self.svc.ctx.identity.cert.cluster
        seeds = [self.svc.addr]
        token, record = create_token(self.svc.ctx.identity.network.network_id, ca.fingerprint, seeds, cluster,
                                     body.ttl_s, body.uses, time.time())
        await asyncio.to_thread(self.svc.ctx.store.put, TOKENS, record.token_id, record)
        return json_ok(TokenCreated(token=token, token_id=record.token_id, cluster=cluster, expires=record.expires,
                                    uses=record.uses_total, seeds=seeds), status=201)

    async def token_list(self, _: web.Request) -> web.Response:
        self.require_ca()
        now = time.time()
        rows = await asyncio.to_thread(self.svc.ctx.store.scan, TOKENS)
        return json_ok(TokenList(tokens=sorted((_info(r, now) for _, r in rows), key=lambda t: t.created_at)))

    async def token_revoke(self, request: web.Request) -> web.Response:
        self.require_ca()
        tid = request.match_info["id"]

        def rev(txn: Any) -> TokenRecord | None:
            r = txn.get(TOKENS, tid)
            if r is not None:
                r = revoke_token(r)
                txn.put(TOKENS, tid, r)
            return r  # type: ignore[no-any-return]  # Table-typed get

        r = await asyncio.to_thread(self.svc.ctx.store.update, rev)
        if r is None:
            raise ApiProblem(404, "unknown_token", f"no token {tid} on this node (see `aiosd token list`)", "id")
        return json_ok(_info(r, time.time()))

    async def doctor(self, _: web.Request) -> web.Response:
        return web.json_response(await diagnose(self.svc))

    async def sessions(self, _: web.Request) -> web.Response:
        return json_ok(sessions_view(self.svc))

    def routes(self) -> list[Route]:
        return [
            Route("GET", "/v1/nodes", self.nodes, "every member of the network and its state", response=NodesResponse,
                  tag="membership"),
            Route("DELETE", "/v1/nodes/{id}", self.remove_node, "revoke a node's certificate network-wide",
                  response=Removed, tag="membership"),
            Route("POST", "/v1/tokens", self.token_create, "create a join token", request=TokenCreate,
                  response=TokenCreated, tag="membership", status=201),
            Route("GET", "/v1/tokens", self.token_list, "list join tokens (no secrets)", response=TokenList,
                  tag="membership"),
            Route("DELETE", "/v1/tokens/{id}", self.token_revoke, "revoke a join token", response=TokenInfo,
                  tag="membership"),
            Route("GET", "/v1/doctor", self.doctor, "why nodes might not see each other", tag="membership"),
            Route("GET", "/v1/sessions", self.sessions, "encrypted p2p sessions per peer, handshake failures by reason",
                  response=SessionsView, tag="membership"),
        ]


def membership_routes(svc: MembershipService) -> list[Route]:
    return MembershipHandlers(svc).routes()


async def _hello(addr: str) -> dict[str, Any]:
    t0 = time.time()
    try:
        ans = await request_open(addr, JoinHello(), JoinHelloAnswer, timeout_s=2.0)
    except FederationError as e:
        return {"addr": addr, "ok": False, "error": str(e)}
    t1 = time.time()
    return {"addr": addr, "ok": True, "node_id": ans.node_id, "network_id": ans.network_id,
            "rtt_ms": round((t1 - t0) * 1000, 2), "skew_s": round(ans.time - (t0 + t1) / 2, 3),
            "can_admit": ans.can_admit}


async def diagnose(svc: MembershipService) -> dict[str, Any]:
    """What doctor reports: interfaces, addresses, mDNS, seeds, clock skew, cert expiry, problems."""
    s = svc.settings
    ident = svc.ctx.identity
    now = time.time()
    problems: list[dict[str, str]] = []
    ifaces = [{"name": n, "addrs": [a.address for a in addrs if a.family.name == "AF_INET"]}
              for n, addrs in psutil.net_if_addrs().items()]
    me = ident.node_id
    peers = [(m.node, m.addr) for m in svc.swim.members() if m.node != me and m.state.value == "alive"][:32]
    seed_res, peer_res = await asyncio.gather(asyncio.gather(*(_hello(a) for a in svc.seeds[:16])),
                                              asyncio.gather(*(_hello(a) for _, a in peers)))
    for r in seed_res:
        if not r["ok"]:
            problems.append({"what": f"seed {r['addr']} does not answer ({r['error']})",
                             "fix": "check that aiosd runs there, the address/port, and firewalls (p2p port)"})
        elif r["network_id"] != ident.network.network_id:
            problems.append({"what": f"seed {r['addr']} belongs to another network ({r['network_id']})",
                             "fix": "remove it from discovery.seeds"})
    for r in peer_res:
        if r["ok"] and abs(r["skew_s"]) > 5:
            problems.append({"what": f"clock of {r['node_id']} is off by {r['skew_s']} s",
                             "fix": "run NTP (chrony/systemd-timesyncd) on both machines; > 30 s breaks messages"})
    # A node that knows no seed and no other member is a single-node network: normal, not a problem
    # (the advice to grow it is a note).
    alone = not svc.seeds and not s.discovery.mdns and not any(m.node != me for m in svc.swim.members())
    notes: list[dict[str, str]] = []
    host = svc.addr.rsplit(":", 1)[0]
    if host.startswith("127.") and s.p2p.host in ("0.0.0.0", ""):
        (notes if alone else problems).append({
            "what": "no LAN address found; peers on other machines cannot reach this node",
            "fix": "set p2p.advertise = \"IP:PORT\" in the config"})
    if alone:
        notes.append({"what": "a single-node network: no seeds, mDNS off, no other member",
                      "fix": "to add a machine: `aiosd token create` here, then `aiosd join TOKEN` there"})
    elif not svc.seeds and not s.discovery.mdns and len(peers) == 0:
        problems.append({"what": "no seeds and mDNS is off, and no other member is alive: this node cannot "
                                 "find anyone", "fix": "add discovery.seeds, run with --mdns, or re-join"})
    left = ident.cert.expires - now
    if left < 7 * 86400:
        problems.append({"what": f"this node's certificate expires in {int(left)} s",
                         "fix": "keep the node joined (it renews itself) or re-join with a new token"})
    disc = svc.discovery
    return {
        "node_id": me, "network_id": ident.network.network_id,
        "p2p": {"listen": f"{s.p2p.host}:{svc.transport.port}", "advertise": svc.addr},
        "interfaces": ifaces,
        "mdns": {"enabled": s.discovery.mdns, "interfaces": disc.interfaces if disc else [],
                 "candidates_seen": len(disc.known) if disc else 0},
        "seeds": seed_res, "peers": peer_res,
        "members": {st: sum(1 for m in svc.swim.members() if m.state.value == st)
                    for st in ("alive", "suspect", "dead", "left")},
        "cert": {"expires": ident.cert.expires, "expires_in_s": int(left), "renew_at": int(svc.renew_at(ident.cert))},
        "envelopes": {k: v for k, v in svc.transport.metrics().items() if v},
        "sessions": sessions_view(svc).model_dump(mode="json"),
        "problems": problems, "notes": notes,
    }


__all__ = ["MembershipHandlers", "NodesResponse", "SessionsView", "TokenCreate", "TokenCreated", "TokenList", "diagnose",
           "membership_routes", "sessions_view"]
