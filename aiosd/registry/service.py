"""Service "registry": the network's registries, gossip-replicated in this node's LMDB store.

Tables and who may write them (checked on every local write and on every merge):
- `nodes`, `metrics`: a record keyed `X` (or `X/...`) only by node X (SelfKeyed);
- `tasks`, `blocks`, `clusters`: any member; every other table: origins whose certificate has the admin role.
Values are JSON objects (stored as msgpack). Record signatures are checked with the origin's
public key from its CA-verified certificate; certificates (and so roles) are learned from the
signed envelopes peers send us (replication's own, and the transport's cert cache, which SWIM
traffic fills), plus our own. A record from an origin whose certificate we have not seen yet is
rejected and comes back through anti-entropy once we have it.
Peers are membership's alive view; without a "membership" service the registry is local only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Container, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Self

import msgpack
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from aiosd.context import NodeContext, ServiceKey
from aiosd.membership.service import MEMBERSHIP_KEY, MembershipService
from aiosd.specs.filters import Predicate
from federation.certs import NodeCert, verify_cert
from federation.envelope import Verified
from federation.errors import FederationError
from federation.replication import (
    AdminOnly,
    AnyMember,
    Changed,
    InvalidWrite,
    Record,
    ReplicationConfig,
    Rule,
    SelfKeyed,
    TableRules,
)
from federation.replication.gossip import Replicator
from federation.replication.lmdb_store import LmdbRecordStore
from federation.replication.wire import AeBuckets, AeDigest, AeEntries, AeRecords, Push, ReplMessage
from federation.replication_driver import ReplicationDriver
from federation.sansio import NodeId
from federation.strict import Wire
from storage import StorageError, Table

log = logging.getLogger(__name__)

class CertProbe(Wire):
    """Asks a peer for nothing: its signed answer carries its certificate (origin keys, roles)."""
    kind: Literal["repl.cert"] = "repl.cert"
    v: Literal[1] = 1


REPL_MODELS: tuple[type[Any], ...] = (Push, AeDigest, AeBuckets, AeEntries, AeRecords)
# Cert fetches in flight at once (one per unknown origin).
MAX_CERT_FETCHES = 16
SELF_KEYED_TABLES = ("nodes", "metrics", "audit")
ADMIN_TABLES = ("components", "specs", "templates", "policies", "vdags", "inference_servers",
                "assets", "images", "users")
# blocks: owned by the applying node or the cluster leader; clusters: by the cluster's leader (any node can lead).
MEMBER_TABLES = ("tasks", "blocks", "clusters")
TABLES = tuple(sorted((*SELF_KEYED_TABLES, *ADMIN_TABLES, *MEMBER_TABLES)))
ADMIN_ROLE = "admin"
# Watchers of the change stream at once, and events queued per watcher (a slow one is cut off).
MAX_WATCHERS = 64
WATCH_QUEUE = 1024
MAX_CERTS = 4096
# Peer certificates seen (node id -> CA-signed cert bytes), so that a restarted node can check
# origin signatures at once instead of rejecting records until each origin's cert comes back.
CERTS: Table[bytes] = Table.raw("registry.certs")


class UnknownTable(KeyError):
    """The table is not one of TABLES."""


@dataclass(frozen=True, slots=True)
class Entry:
    """A live record as the API shows it."""

    table: str
    key: str
    value: dict[str, Any]
    hlc: int
    origin: str

    def to_json(self) -> dict[str, Any]:
        return {"table": self.table, "key": self.key, "value": self.value,
                "version": {"hlc": self.hlc, "origin": self.origin}}


@dataclass(frozen=True, slots=True)
class Event:
    """One change for watchers: op is "put" or "delete"."""

    op: str
    entry: Entry


def encode_value(value: Mapping[str, Any]) -> bytes:
    out: bytes = msgpack.packb(dict(value), use_bin_type=True)
    return out


def decode_value(raw: bytes) -> dict[str, Any]:
    v = msgpack.unpackb(raw, raw=False)
    return v if isinstance(v, dict) else {"value": v}


def entry_of(r: Record) -> Entry:
    return Entry(r.table, r.key, {} if r.tombstone else decode_value(r.value), r.version.hlc, r.version.origin)


class PeerCerts:
    """Node id → CA-verified certificate, as learned from verified envelopes (bounded)."""

    def __init__(self, own: NodeCert, fallback: Callable[[str], NodeCert | None] = lambda _: None,
                 on_miss: Callable[[str], None] = lambda _: None,
                 on_new: Callable[[NodeCert], None] = lambda _: None) -> None:
        self._certs: dict[str, NodeCert] = {own.node_id: own}
        self._fallback = fallback
        self._on_miss = on_miss
        self._on_new = on_new

    def learn(self, cert: NodeCert, *, announce: bool = True) -> None:
        """Keep `cert` (CA-verified by the caller) unless we hold a newer one of that node;
        `on_new` hears of a certificate we did not hold (not of the same one seen again)."""
        old = self._certs.get(cert.node_id)
        if old is None or cert.not_before >= old.not_before:
            self._certs[cert.node_id] = cert
            while len(self._certs) > MAX_CERTS:
                self._certs.pop(next(iter(self._certs)))
            if announce and (old is None or old.serial != cert.serial):
                self._on_new(cert)

    def get(self, node: str) -> NodeCert | None:
        c = self._certs.get(node)
        if c is None:
            c = self._fallback(node)
            if c is not None:
                self.learn(c)
            else:
                self._on_miss(node)
        return c

    def is_admin(self, node: NodeId) -> bool:
        c = self.get(node)
        return c is not None and ADMIN_ROLE in c.roles

    def verify(self, node: NodeId, message: bytes, sig: bytes) -> bool:
        c = self.get(node)
        if c is None:
            return False
        try:
            VerifyKey(c.public_key).verify(message, sig)
        except (BadSignatureError, ValueError):
            return False
        return True


def rules(certs: PeerCerts) -> dict[str, Rule]:
    out: dict[str, Rule] = {t: SelfKeyed() for t in SELF_KEYED_TABLES}
    out.update({t: AnyMember() for t in MEMBER_TABLES})
    out.update({t: AdminOnly(certs.is_admin) for t in ADMIN_TABLES})
    return out


def check_table(table: str) -> str:
    if table not in TABLES:
        raise UnknownTable(table)
    return table


def replication_config(settings: Any) -> ReplicationConfig:
    rs = getattr(settings, "replication", None)
    cfg = ReplicationConfig.test() if rs is not None and rs.profile == "test" else ReplicationConfig.lan()
    if rs is not None and rs.ae_interval_s is not None:
        cfg = cfg.model_copy(update={"ae_interval_s": rs.ae_interval_s})
    return cfg


class RegistryService:
    """Service "registry"; `put/get/delete/scan/watch` are the API for other roles."""

    name = "registry"

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        ident = ctx.identity
        self.node_id = NodeId(ident.node_id)
        self.config = replication_config(ctx.settings)
        self.certs = PeerCerts(ident.cert, self._transport_cert, self._cert_missing, self._cert_new)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fetching: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.authority = TableRules(rules(self.certs))
        self.records: LmdbRecordStore | None = None
        self._driver: ReplicationDriver | None = None
        self._membership: MembershipService | None = None
        self._addrs: dict[str, str] = {}
        self._watchers: set[asyncio.Queue[Event | None]] = set()
        self._stack = contextlib.AsyncExitStack()
        self.watch_dropped = 0
        self.unaddressed = 0  # replication messages dropped: no address known for the peer
        # table -> (key prefix, check): a role above that owns a record kind validates local writes
        # of it (raises ValueError naming the field), so the API cannot store what the role skips.
        self._checks: dict[str, list[tuple[str, Callable[[str, Mapping[str, Any]], None]]]] = {}

    # ----- lifecycle -------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        ident = self.ctx.identity
        self.records = await asyncio.to_thread(LmdbRecordStore, self.ctx.store, self.config.buckets)
        core = Replicator(self.node_id, self.config, self.records, ident.key.sign, self.certs.verify,
                          self.authority, random.Random(), wall_offset_s=time.time() - time.monotonic())
        self._membership = self.ctx.find(MEMBERSHIP_KEY)
        await self._load_certs()
        self._loop = asyncio.get_running_loop()
        await self._stack.__aenter__()
        try:
            self._driver = await self._stack.enter_async_context(ReplicationDriver(core, self._send))
            self._driver.subscribe(self._on_changed)
            if self._membership is not None:
                t = self._membership.transport
                self._membership.add_kinds([*REPL_MODELS, CertProbe])
                for m in REPL_MODELS:
                    t.route_oneway(m.model_fields["kind"].default, self._on_message)
                t.route("repl.cert", self._on_cert_probe)
                self._membership.subscribe(self._on_member)
                await self._refresh_peers()
        except BaseException:
            await self._stack.aclose()
            raise
        log.info("registry started", extra={"tables": len(TABLES), "peers": len(self._addrs)})
        return self

    async def __aexit__(self, *exc: object) -> None:
        for t in list(self._tasks):
            t.cancel()
        for q in list(self._watchers):
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(None)
        await self._stack.aclose()

    @property
    def driver(self) -> ReplicationDriver:
        if self._driver is None:
            raise RuntimeError("registry service is not running")
        return self._driver

    # ----- public API ------------------------------------------------------------------------
    def check_with(self, table: str, prefix: str, check: Callable[[str, Mapping[str, Any]], None]) -> None:
        """Validate local writes of `table` keys under `prefix` with `check(key, value)` (raises ValueError)."""
        self._checks.setdefault(check_table(table), []).append((prefix, check))

    def _check(self, table: str, key: str, value: Mapping[str, Any]) -> None:
        for prefix, check in self._checks.get(table, ()):
            if key.startswith(prefix):
                try:
                    check(key[len(prefix):], value)
                except ValueError as e:
                    raise InvalidWrite(f"{table}/{key}: {e}") from None

    async def put(self, table: str, key: str, value: Mapping[str, Any]) -> Entry:
        """Write a JSON object; raises UnknownTable, InvalidWrite, WriteRefused."""
        check_table(table)
        self._check(table, key, value)
        (r,) = await self.driver.write_many([(table, key, encode_value(value))])
        return entry_of(r)

    async def put_many(self, table: str, items: Mapping[str, Mapping[str, Any]]) -> int:
        """Write many records of one table with one signature and one transaction."""
        check_table(table)
        for k, v in items.items():
            self._check(table, k, v)
        records = await self.driver.write_many([(table, k, encode_value(v)) for k, v in items.items()])
        return len(records)

    async def delete(self, table: str, key: str) -> bool:
        """Delete (tombstone) a record; False when there was no live record."""
        if await self.get(table, key) is None:
            return False
        await self.driver.write_many([(table, key, None)])
        return True

    async def get(self, table: str, key: str) -> Entry | None:
        check_table(table)
        r = await asyncio.to_thread(self._store().get, table, key)
        return None if r is None or r.tombstone else entry_of(r)

    async def scan(self, table: str, filter: Predicate | None = None, limit: int | None = None) -> list[Entry]:
        """Live records of `table` in key order, those matching `filter` (a compiled filter)."""
        check_table(table)
        recs = await asyncio.to_thread(self._store().scan_table, table)
        out: list[Entry] = []
        for r in recs:
            if r.tombstone:
                continue
            e = entry_of(r)
            if filter is None or filter(e.value):
                out.append(e)
                if limit is not None and len(out) >= limit:
                    break
        return out

    @contextlib.asynccontextmanager
    async def watch(self, tables: frozenset[str] | None = None) -> AsyncIterator[AsyncIterator[Event]]:
        """Yield an iterator of changes (of `tables`, or all); it ends when the watcher falls
        WATCH_QUEUE events behind or the service stops. Raises OverflowError past MAX_WATCHERS."""
        if len(self._watchers) >= MAX_WATCHERS:
            raise OverflowError(f"more than {MAX_WATCHERS} watchers")
        q: asyncio.Queue[Event | None] = asyncio.Queue(WATCH_QUEUE)

        async def events() -> AsyncIterator[Event]:
            while (ev := await q.get()) is not None:
                if tables is None or ev.entry.table in tables:
                    yield ev

        self._watchers.add(q)
        try:
            yield events()
        finally:
            self._watchers.discard(q)

    async def digests(self) -> dict[str, Any]:
        """Per-table record counts and root hashes (equal on converged nodes)."""
        return await self.driver.run(self._store().describe)

    def stats(self) -> dict[str, Any]:
        d = self.driver
        s = d.core.stats
        return {
            "written": s.written, "merged": s.merged, "duplicates": s.duplicates,
            "rejected": {r.value: n for r, n in s.rejected.items()}, "pushes_sent": s.pushes_sent,
            "ae_rounds": s.ae_rounds, "ae_rounds_answered": s.ae_rounds_answered,
            "ae_records_merged": s.ae_records_merged, "queued": d.core.queued,
            "peers": len(d.core.peers), "send_failures": d.send_failures, "sends_dropped": d.sends_dropped,
            "unaddressed": self.unaddressed,
            "watchers": len(self._watchers), "watch_dropped": self.watch_dropped,
        }

    # ----- internals -------------------------------------------------------------------------
    def _store(self) -> LmdbRecordStore:
        if self.records is None:
            raise RuntimeError("registry service is not running")
        return self.records

    def _transport_cert(self, node: str) -> NodeCert | None:
        # The transport's verifier caches every CA-verified cert a peer presented (SWIM fills it).
        if self._membership is None:
            return None
        # Called from the core's worker thread while the loop may change the cache: copy, retry once.
        cache = self._membership.transport.verifier.certs
        for _ in range(2):
            try:
                certs = list(getattr(cache, "_d", {}).values())  # needs a public lookup by node id
            except RuntimeError:  # changed size during the copy
                continue
            return next((c for c in certs if c.node_id == node), None)
        return None

    def _on_changed(self, ch: Changed) -> None:
        ev = Event("delete" if ch.record.tombstone else "put", entry_of(ch.record))
        for q in list(self._watchers):
            try:
                q.put_nowait(ev)
            except asyncio.QueueFull:  # too slow: cut it off (it can re-list and re-watch)
                self.watch_dropped += 1
                self._watchers.discard(q)
                q.get_nowait()
                q.put_nowait(None)

    async def _on_message(self, v: Verified) -> None:
        self.certs.learn(v.cert)
        body: ReplMessage = v.body  # type: ignore[assignment]  # routed kinds are ReplMessage models
        await self.driver.deliver(NodeId(v.sender), body)

    async def _send(self, to: NodeId, msg: ReplMessage) -> None:
        if self._membership is None:
            return
        addr = self._addrs.get(to)
        if addr is None:
            # The core only starts exchanges with alive peers, so this is an answer to a node we
            # still hold suspect or dead (just resumed or restarted: exactly the one that needs
            # anti-entropy). Answer at its last known address instead of dropping the round.
            addr = next((p.addr for p in self._membership.peer_views() if p.node_id == to), None)
            if addr is None:
                self.unaddressed += 1
                return
        await self._membership.transport.send(addr, msg.kind, msg, to=to, ack=False)

    def _spawn(self, coro: Any) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    def _on_member(self, ev: Any) -> None:
        if self._driver is None:
            return
        self._spawn(self._refresh_peers())
        if getattr(ev.state, "value", ev.state) == "alive":
            self.certs.get(ev.node)  # an unknown certificate is fetched now, not on the first record

    async def _load_certs(self) -> None:
        """Certificates seen in an earlier life, re-checked (CA signature, validity, revocation)."""
        ca = self.ctx.identity.network.ca_public
        revoked: Container[str] = getattr(self._membership, "revoked", frozenset())
        now = time.time()
        stale: list[bytes] = []
        for key, raw in await asyncio.to_thread(self.ctx.store.scan, CERTS):
            try:
                cert = NodeCert.from_bytes(raw)
                verify_cert(cert, ca, now, revoked)
            except (ValueError, FederationError):  # expired, revoked or unreadable: forget it
                stale.append(key)
                continue
            self.certs.learn(cert, announce=False)
        for key in stale:
            await asyncio.to_thread(self.ctx.store.delete, CERTS, key)

    def _cert_new(self, cert: NodeCert) -> None:
        """A certificate we did not hold (maybe from a worker thread): remember it on disk."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._spawn_save_cert, cert)

    def _spawn_save_cert(self, cert: NodeCert) -> None:
        self._spawn(self._save_cert(cert))

    async def _save_cert(self, cert: NodeCert) -> None:
        try:
            await asyncio.to_thread(self.ctx.store.put, CERTS, cert.node_id, cert.to_bytes())
        except StorageError as e:  # a cache: the cert comes back from the peer after a restart
            log.warning("peer certificate not saved", extra={"peer": cert.node_id, "error": str(e)})

    def _cert_missing(self, node: str) -> None:
        """An origin without a known certificate (maybe from a worker thread): fetch it."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._fetch_cert, node)

    def _fetch_cert(self, node: str) -> None:
        if node in self._fetching or len(self._fetching) >= MAX_CERT_FETCHES or self._membership is None:
            return
        addr = dict(self._membership.alive()).get(node)
        if addr is None:
            return
        self._fetching.add(node)
        self._spawn(self._fetch_cert_from(node, addr))

    async def _fetch_cert_from(self, node: str, addr: str) -> None:
        if self._membership is None:
            return
        try:
            v = await self._membership.transport.request(addr, "repl.cert", CertProbe(), to=NodeId(node))
            self.certs.learn(v.cert)
            log.debug("peer certificate learned", extra={"peer": node})
            await self.driver.kick_anti_entropy()
        except (FederationError, OSError) as e:
            log.debug("peer certificate fetch failed", extra={"peer": node, "error": type(e).__name__})
        finally:
            self._fetching.discard(node)

    async def _on_cert_probe(self, v: Verified) -> CertProbe:
        self.certs.learn(v.cert)
        return CertProbe()

    async def _refresh_peers(self) -> None:
        if self._membership is None:
            return
        alive = [(n, a) for n, a in self._membership.alive() if n != self.node_id]
        self._addrs = dict(alive)
        await self.driver.set_peers([NodeId(n) for n, _ in alive])


REGISTRY_KEY: ServiceKey[RegistryService] = ServiceKey("registry")


def registry_service(ctx: NodeContext) -> RegistryService:
    return RegistryService(ctx)


__all__ = [
    "ADMIN_TABLES",
    "REGISTRY_KEY",
    "TABLES",
    "Entry",
    "Event",
    "PeerCerts",
    "RegistryService",
    "UnknownTable",
    "registry_service",
]
