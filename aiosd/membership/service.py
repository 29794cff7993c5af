"""The "membership" service: p2p transport + SWIM driver + discovery + admission, renewal, revocation.

Composes what federation/ provides for one daemon: the signed Transport on the p2p port, the SWIM
driver (seeds from settings, the join token and the peers seen last time), mDNS candidates (they
only feed join; a certificate grants trust), join-token admission on CA holders, certificate
renewal before expiry, and revocations spread by broadcast plus digest anti-entropy. API routes
live in membership_api.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal, Self, TypeVar

import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published
import psutil  # type: ignore[import-untyped,unused-ignore]  # no stubs installed
from pydantic import BaseModel

from aiosd.api.status import PeerView
from aiosd.context import NodeContext, ServiceKey
from aiosd.identity_files import write_cert
from aiosd.membership.wire import (
    MAX_REVOCATIONS,
    P2P_MODELS,
    JoinHello,
    JoinHelloAnswer,
    RenewAnswer,
    RenewRequest,
    RevocationsRequest,
    RevokeBroadcast,
    SignedRevocation,
    check_revocation,
    digest,
    sign_revocation,
)
from federation.certs import NodeCert, Revocation, RevocationSet, issue_cert, pack
from federation.discovery import Candidate, Discovery
from federation.envelope import Verified, schemas_of
from federation.errors import AuthError, AuthReason, FederationError, TokenError, TokenReason
from federation.membership import MemberChanged, MemberState, Swim, SwimConfig
from federation.membership.messages import SWIM_TYPES
from federation.replay import ReplayCache
from federation.sansio import NodeId
from federation.swim_driver import SwimDriver
from federation.tokens import JOIN_MAX_SKEW_S, JoinAnswer, JoinRequest, TokenRecord, admit
from federation.transport import Transport, TransportSettings
from storage import Table

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


def _strict_table(name: str, model: type[M]) -> Table[M]:
    """Like Table.model, but decodes arrays as tuples (our wire models are strict)."""
    def dec(raw: bytes) -> M:
        return model.model_validate(msgpack.unpackb(raw, raw=False, use_list=False))

    return Table(name, lambda v: pack(v.model_dump()), dec)


TOKENS: Table[TokenRecord] = _strict_table("membership.tokens", TokenRecord)
REVOCATIONS: Table[SignedRevocation] = _strict_table("membership.revocations", SignedRevocation)
STATE: Table[Any] = Table.msgpack("membership.state")  # keys: seeds, peers, inc
MAX_REMEMBERED_PEERS = 64  # addresses tried on the next start (a cold start recovers by itself)


def swim_config(settings: Any) -> SwimConfig:
    """The SWIM config of a profile plus overrides.

    lan = memberlist LAN with probe 0.5 s / timeout 0.25 s / suspicion mult 3 (memberlist: 1 s /
    0.5 s / 4): at N=5 memberlist's own timers need 5.9 s (p50) to declare a crash dead, over our
    5 s promise; these give p50 2.5 s, max 4.5 s over 200 simulator seeds, at twice the probe traffic
    (a few hundred bytes/s per node)."""
    m = settings.membership
    base = {"lan": SwimConfig.lan(), "wan": SwimConfig.wan(), "test": SwimConfig.test()}[m.profile]
    over: dict[str, Any] = {}
    if m.profile == "lan":
        over.update(probe_interval_s=0.5, probe_timeout_s=0.25, suspicion_mult=3)
    for name in ("probe_interval_s", "probe_timeout_s", "suspicion_mult"):
        if getattr(m, name) is not None:
            over[name] = getattr(m, name)
    return dataclasses.replace(base, **over)


def advertise_address(host: str, port: int, advertise: str | None) -> str:
    """host:port peers should dial: the configured one, the bound host, or the first LAN IPv4."""
    if advertise:
        return advertise
    if host not in ("0.0.0.0", "", "::"):
        return f"{host}:{port}"
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family.name == "AF_INET" and not a.address.startswith("127."):
                return f"{a.address}:{port}"
    return f"127.0.0.1:{port}"


class MembershipService:
    """Service "membership": who is in the network and alive; see the module docstring."""

    name = "membership"

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.cfg = swim_config(ctx.settings)
        self.revoked = RevocationSet()
        self._signed: dict[str, SignedRevocation] = {}
        self._join_nonces = ReplayCache(max_skew_s=JOIN_MAX_SKEW_S, max_entries=10_000)
        self._subs: list[Callable[[MemberChanged], None]] = []
        self._stack = contextlib.AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []
        self._peers_dirty = asyncio.Event()
        self._ae_wake = asyncio.Event()
        self._driver: SwimDriver | None = None
        self._transport: Transport | None = None
        self.discovery: Discovery | None = None
        self.addr = ""
        self.seeds: list[str] = []
        self._mdns_seeds: list[str] = []
        self.counters: dict[str, int] = {"revocations_rejected": 0, "renewals": 0, "joins_admitted": 0}

    # ----- public surface for other roles --------------------------------------------------------
    @property
    def transport(self) -> Transport:
        if self._transport is None:
            raise RuntimeError("membership service is not running")
        return self._transport

    @property
    def swim(self) -> Swim:
        if self._driver is None:
            raise RuntimeError("membership service is not running")
        return self._driver.swim

    @property
    def is_ca(self) -> bool:
        return self.ctx.identity.ca is not None

    def subscribe(self, callback: Callable[[MemberChanged], None]) -> None:
        """Call `callback(MemberChanged)` on the loop for every change in our view."""
        self._subs.append(callback)

    def alive(self) -> list[tuple[str, str]]:
        """(node_id, addr) of every alive member, us included."""
        return [(m.node, m.addr) for m in self.swim.members() if m.state == MemberState.ALIVE]

    def peer_views(self) -> list[PeerView]:
        me = self.ctx.identity.node_id
        return [PeerView(node_id=m.node, addr=m.addr, state=m.state.value)
                for m in self.swim.members() if m.node != me]

    def add_kinds(self, models: Iterable[type[BaseModel]]) -> None:
        """Let the transport decode these p2p kinds (roles started after membership add their own)."""
        self._schemas.update(schemas_of(models))

    # ----- lifecycle ---------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        ident, s = self.ctx.identity, self.settings
        store = self.ctx.store
        signed = await asyncio.to_thread(store.scan, REVOCATIONS)
        for _, sr in signed:
            self._remember(sr)
        state = dict(await asyncio.to_thread(store.scan, STATE))
        schemas = self._schemas = schemas_of([*SWIM_TYPES, *P2P_MODELS])
        ts = TransportSettings(host=s.p2p.host, port=s.p2p.port)
        try:
            await self._stack.__aenter__()
            transport = Transport(ident.key, ident.cert, ident.network.ca_public, schemas, ts, revoked=self.revoked)
            self._transport = await self._stack.enter_async_context(transport)
            self.addr = advertise_address(s.p2p.host, transport.port, s.p2p.advertise)
            # Incarnation: above anything a previous life reached (ms clock; stored floor if the clock stepped back).
            inc = max(int(time.time() * 1000), int(state.get(b"inc", 0)) + 1)
            await asyncio.to_thread(store.put, STATE, "inc", inc)
            swim = Swim(ident.key.node_id, self.addr, self.cfg, random.Random(), meta=self._meta(), incarnation=inc)
            self._driver = await self._stack.enter_async_context(
                SwimDriver(swim, transport, banned=self.revoked.__contains__))
            self._driver.subscribe(self._on_change)
            self._routes_p2p(transport)
            remembered = list((state.get(b"peers") or {}).values())
            self.seeds = list(dict.fromkeys([*s.discovery.seeds, *(state.get(b"seeds") or []), *remembered]))[:64]
            self._driver.join(self.seeds)
            if s.discovery.mdns:
                host = self.addr.rsplit(":", 1)[0]
                ifaces = s.discovery.mdns_interfaces or [host]
                self.discovery = await self._stack.enter_async_context(Discovery(
                    ident.key.node_id, ident.network.network_id, transport.port, ifaces, True, self._on_candidate))
            tg = await self._stack.enter_async_context(asyncio.TaskGroup())
            self._tasks = [tg.create_task(self._persist_loop(), name="membership-persist"),
                           tg.create_task(self._renew_loop(), name="membership-renew"),
                           tg.create_task(self._anti_entropy_loop(), name="membership-revocations")]
        except BaseException:
            await self._stack.aclose()
            raise
        log.info("membership started", extra={"addr": self.addr, "seeds": len(self.seeds),
                                              "mdns": s.discovery.mdns, "profile": s.membership.profile})
        return self

    async def __aexit__(self, *exc: object) -> None:
        for t in self._tasks:
            t.cancel()
        try:
            if self._driver is not None:
                await self._driver.leave(self.settings.membership.leave_grace_s)
                await asyncio.to_thread(self._save_peers)
        finally:
            await self._stack.aclose()
            log.info("membership stopped")

    # ----- views, persistence ------------------------------------------------------------------
    def _meta(self) -> dict[str, str]:
        cert = self.ctx.identity.cert
        meta = {"cluster": cert.cluster, "roles": ",".join(cert.roles), "rv": digest(list(self._signed))}
        if self.is_ca:
            meta["ca"] = "1"
        return meta

    def _on_change(self, ev: MemberChanged) -> None:
        self._peers_dirty.set()
        if ev.state == MemberState.ALIVE:
            self._ae_wake.set()
        for cb in list(self._subs):
            try:
                cb(ev)
            except Exception:
                log.exception("membership subscriber failed", extra={"peer": ev.node})

    def _on_candidate(self, c: Candidate) -> None:
        """An mDNS candidate is only an address to try (its certificate decides trust)."""
        addr = f"{c.addr}:{c.port}"
        if self._driver is not None and self.swim.member(c.node_id) is None:
            log.info("mdns candidate", extra={"peer": c.node_id, "addr": addr})
            # join() replaces the core's seed list: keep the configured seeds, newest candidates last.
            self._mdns_seeds = [a for a in self._mdns_seeds if a != addr][-31:] + [addr]
            self._driver.join(list(dict.fromkeys([*self.seeds[:32], *self._mdns_seeds])))

    def _save_peers(self) -> None:
        me = self.ctx.identity.node_id
        peers = {m.node: m.addr for m in self.swim.members() if m.node != me and m.state == MemberState.ALIVE}
        if peers:
            self.ctx.store.put(STATE, "peers", dict(list(peers.items())[:MAX_REMEMBERED_PEERS]))

    async def _persist_loop(self) -> None:
        while True:
            await self._peers_dirty.wait()
            self._peers_dirty.clear()
            await asyncio.to_thread(self._save_peers)
            await asyncio.sleep(5.0)  # coalesce: at most one write per 5 s

    # ----- admission (CA holders) --------------------------------------------------------------
    def _routes_p2p(self, t: Transport) -> None:
        t.route_open(JoinHello, self._on_hello)
        t.route_open(JoinRequest, self._on_join)
        t.route("membership.renew", self._on_renew)
        t.route("membership.revocations_get", self._on_revocations_get)
        t.route_oneway("membership.revoke", self._on_revoke)

    async def _on_hello(self, _: JoinHello) -> JoinHelloAnswer:
        ident = self.ctx.identity
        return JoinHelloAnswer(ca_public=ident.network.ca_public, network_id=ident.network.network_id,
                               node_id=ident.node_id, can_admit=self.is_ca, time=time.time())

    async def _on_join(self, req: JoinRequest) -> JoinAnswer:
        ca = self.ctx.identity.ca
        if ca is None:
            raise FederationError("this seed does not hold the network CA and cannot admit; "
                                  "use a token created on a CA node")
        now = time.time()
        if not self._join_nonces.check_and_add(req.nonce, req.ts, now):
            raise TokenError(TokenReason.WRONG_SECRET, "this join request was already used")

        def spend(txn: Any) -> TokenRecord:
            record = txn.get(TOKENS, req.token_id)
            if record is None:
                raise TokenError(TokenReason.UNKNOWN_TOKEN)
            updated = admit(record, req, now, revoked=self.revoked)
            txn.put(TOKENS, req.token_id, updated)
            return updated

        record = await asyncio.to_thread(self.ctx.store.update, spend)
        cert = issue_cert(ca, req.node_public, network_id=ca.network_id, cluster=record.cluster,
                          roles=record.roles, ttl_s=self.settings.membership.cert_ttl_s, now=now)
        self.counters["joins_admitted"] += 1
        log.info("node admitted", extra={"peer": cert.node_id, "token": record.token_id, "left": record.uses_left})
        seeds = [self.addr, *(a for n, a in self.alive() if a != self.addr)][:16]
        return JoinAnswer(ca_public=ca.public_bytes, cert=cert.to_bytes(), seeds=tuple(seeds))

    # ----- certificate renewal -----------------------------------------------------------------
    def renew_at(self, cert: NodeCert) -> float:
        """2/3 into the cert's real life (issued = not_before + backdate)."""
        issued = min(cert.not_before + 300, cert.expires)
        return issued + (cert.expires - issued) * 2 / 3

    async def _on_renew(self, v: Verified) -> RenewAnswer:
        ca = self.ctx.identity.ca
        if ca is None:
            raise AuthError(AuthReason.FORBIDDEN, "not a CA holder")
        c = v.cert
        cert = issue_cert(ca, c.public_key, network_id=ca.network_id, cluster=c.cluster, roles=c.roles,
                          ttl_s=self.settings.membership.cert_ttl_s, now=time.time())
        log.info("certificate renewed for peer", extra={"peer": c.node_id, "expires": cert.expires})
        return RenewAnswer(cert=cert.to_bytes())

    async def renew_now(self) -> NodeCert:
        """Get a fresh certificate (locally when we hold the CA, else from an alive CA holder).

        Raises:
            FederationError: no CA holder answered.
        """
        ident = self.ctx.identity
        if ident.ca is not None:
            cert = issue_cert(ident.ca, ident.key.public_bytes, network_id=ident.ca.network_id,
                              cluster=ident.cert.cluster, roles=ident.cert.roles,
                              ttl_s=self.settings.membership.cert_ttl_s, now=time.time())
        else:
            cert = await self._renew_remote()
        await asyncio.to_thread(write_cert, self.ctx.data_dir, cert)
        self.transport.set_cert(cert)
        self.ctx.identity = dataclasses.replace(ident, cert=cert)
        self.counters["renewals"] += 1
        log.info("certificate renewed", extra={"expires": cert.expires})
        return cert

    async def _renew_remote(self) -> NodeCert:
        holders = [(m.node, m.addr) for m in self.swim.members()
                   if m.state == MemberState.ALIVE and m.meta.get("ca") == "1" and m.node != self.swim.self_id]
        for node, addr in holders:
            try:
                v = await self.transport.request(addr, "membership.renew", RenewRequest(), to=node)
            except FederationError as e:
                log.warning("certificate renewal failed", extra={"peer": node, "error": str(e)})
                continue
            if not isinstance(v.body, RenewAnswer):
                continue
            cert = NodeCert.from_bytes(v.body.cert)
            if cert.public_key != self.ctx.identity.key.public_bytes:
                continue
            return cert
        raise FederationError("no CA holder answered the certificate renewal")

    async def _renew_loop(self) -> None:
        while True:
            cert = self.ctx.identity.cert
            wait = self.renew_at(cert) - time.time()
            if wait <= 0:
                try:
                    await self.renew_now()
                    continue
                except FederationError as e:
                    left = cert.expires - time.time()
                    log.warning("certificate renewal failed", extra={"error": str(e), "expires_in_s": int(left)})
                    # Retry while the cert lives: often enough never to lapse, at most every 30 s (one
                    # warning each), so a CA holder that is down does not flood the log.
                    wait = max(1.0, min(30.0, left / 10))
            await asyncio.sleep(min(max(wait, 1.0), self.settings.membership.renew_check_s))

    # ----- revocation -------------------------------------------------------------------------
    def _remember(self, sr: SignedRevocation) -> bool:
        subject = sr.revocation.subject
        if subject in self._signed or len(self._signed) >= MAX_REVOCATIONS:
            return False
        self._signed[subject] = sr
        self.revoked.add(sr.revocation)
        return True

    async def _accept(self, entries: tuple[SignedRevocation, ...], source: str) -> list[SignedRevocation]:
        new: list[SignedRevocation] = []
        ca_public = self.ctx.identity.network.ca_public
        for sr in entries:
            if sr.revocation.subject in self._signed:
                continue
            try:
                check_revocation(sr, ca_public)
            except AuthError as e:
                self.counters["revocations_rejected"] += 1
                log.debug("revocation rejected", extra={"source": source, "reason": e.reason.value})
                continue
            if self._remember(sr):
                new.append(sr)
                log.info("revocation applied", extra={"subject": sr.revocation.subject,
                                                      "kind": sr.revocation.subject_kind, "by": sr.revocation.by})
        if new:
            def put(txn: Any) -> None:
                for sr in new:
                    txn.put(REVOCATIONS, sr.revocation.subject, sr)

            await asyncio.to_thread(self.ctx.store.update, put)
            if self._driver is not None:
                self._driver.set_meta(self._meta())
                for sr in new:
                    if sr.revocation.subject_kind == "node":
                        self._driver.declare_dead(NodeId(sr.revocation.subject), NodeId(self.ctx.identity.node_id))
        return new

    async def revoke(self, subject: str, subject_kind: Literal["node", "cert", "token"], reason: str = "") -> SignedRevocation:
        """Revoke a node (or token) network-wide: store, apply, broadcast to every alive member.

        Raises:
            AuthError(FORBIDDEN): this node's certificate has no admin role.
        """
        ident = self.ctx.identity
        if "admin" not in ident.cert.roles:
            raise AuthError(AuthReason.FORBIDDEN, "this node is not an admin")
        r = Revocation(subject=subject, subject_kind=subject_kind,
                       revoked_at=int(time.time()), by=ident.node_id, reason=reason[:200])
        sr = self._signed.get(subject) or sign_revocation(ident.key, ident.cert, r)
        await self._accept((sr,), "self")
        await self._broadcast((sr,))
        return sr

    async def _broadcast(self, entries: tuple[SignedRevocation, ...]) -> None:
        me = self.ctx.identity.node_id
        body = RevokeBroadcast(entries=entries)
        targets = [(n, a) for n, a in self.alive() if n != me and n not in self.revoked]

        async def one(node: str, addr: str) -> None:
            with contextlib.suppress(FederationError):
                await self.transport.send(addr, body.kind, body, 2.0, to=NodeId(node))

        await asyncio.gather(*(one(n, a) for n, a in targets[:256]))

    async def _on_revoke(self, v: Verified) -> None:
        if isinstance(v.body, RevokeBroadcast):
            new = await self._accept(v.body.entries, v.sender)
            if new:  # first sight: pass it on (flooding; each node forwards once per entry)
                await self._broadcast(tuple(new))

    async def _on_revocations_get(self, v: Verified) -> RevokeBroadcast:
        return RevokeBroadcast(entries=tuple(self._signed.values()))

    async def _anti_entropy_loop(self) -> None:
        """Fetch the revocation list from members whose `rv` digest differs from ours."""
        asked: dict[str, str] = {}
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.cfg.push_pull_interval_s):
                    await self._ae_wake.wait()
            self._ae_wake.clear()
            mine = digest(list(self._signed))
            for m in self.swim.members():
                rv = m.meta.get("rv")
                if m.state != MemberState.ALIVE or rv is None or rv == mine or asked.get(m.node) == rv:
                    continue
                if len(asked) > 4096:
                    asked.clear()
                asked[m.node] = rv
                try:
                    v = await self.transport.request(m.addr, "membership.revocations_get", RevocationsRequest(),
                                                     2.0, to=m.node)
                except FederationError:
                    continue
                if isinstance(v.body, RevokeBroadcast):
                    await self._accept(v.body.entries, v.sender)
                mine = digest(list(self._signed))


MEMBERSHIP_KEY: ServiceKey[MembershipService] = ServiceKey("membership")


def membership_service(ctx: NodeContext) -> MembershipService:
    return MembershipService(ctx)


__all__ = ["MEMBERSHIP_KEY", "REVOCATIONS", "STATE", "TOKENS", "MembershipService", "advertise_address", "membership_service",
           "swim_config"]
