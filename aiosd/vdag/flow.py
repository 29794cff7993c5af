"""The vDAG data plane on one node: entry, stage hops, results. No hub: each stage's node sends its
output straight to the next stage's node (p2p `vdag.hop`), and the tail answers the entry node
(`vdag.result`).

Entry (`infer`): quota policy, head input protocol, packet stamped (`vdag::<uri>::<session>`, a
reply-to in output_ptr), sent to a node running each head stage, then waits up to the vDAG's
`maxOutputWaitTimeSeconds`; each (session, seq) is answered exactly once (first result wins).
Stage (`run_hop`): checks the previous stage's receipt against the packet, runs the block through
this node's balancer, acks, then signs its receipt and forwards the output to every next stage
(a failed hop is retried once on another node; then the entry gets an error naming stage, block
and node). A fan-in stage's branches meet on one instance (routing.choose_target), whose Muxer
joins them; receipts of the branches it held wait here and join the chain of the merged output.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import random
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published

from aiosd.specs.protocol import Protocol, check_value
from aiosd.vdag.compile import CompiledVdag, Stage
from aiosd.vdag.errors import VdagError
from aiosd.vdag.payloads import Payloads
from aiosd.vdag.receipts import Receipt, ReceiptError, check_link, open_receipt, payload_digest, sign_receipt
from aiosd.vdag.routing import choose_target, next_labels
from aiosd.vdag.stage_policies import run_postprocessing
from aiosd.vdag.wire import VDAG_MODELS, Hop, HopAck, Result, ResultAck
from federation.certs import NodeCert
from federation.envelope import Verified
from federation.errors import AuthError, AuthReason, FederationError
from federation.sansio import NodeId
from runtime.errors import InstanceBusy, NoHealthyInstance, TaskError, TaskFailed

if TYPE_CHECKING:
    from aiosd.vdag.service import VdagService

log = logging.getLogger(__name__)
DEFAULT_WAIT_S = 30.0
HOP_TIMEOUT_S = 30.0  # one stage's block must answer within this (or the deadline, if sooner)
MAX_HELD = 4096  # fan-in branches waiting here for their siblings (receipts only)
MAX_PENDING = 10_000  # tasks an entry node waits on at once
PROTOCOL_S = 5.0  # a head block's input protocol is re-read this often
TRACES = 20  # recent task traces kept per vDAG for describe
RECORD_WAIT_S = 3.0  # a hop for a vDAG whose record has not reached this node yet waits this long for it
RECORD_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class TaskRef:
    vdag: str
    session_id: str
    seq_no: int
    entry: str
    entry_addr: str
    deadline: float


class VdagFlow:
    def __init__(self, svc: VdagService) -> None:
        self.svc = svc
        self.me = svc.node_id
        ident = svc.ctx.identity
        self.key, self.cert_b, self.ca = ident.key, ident.cert.to_bytes(), ident.network.ca_public
        self.rng = random.Random()
        self.seq = itertools.count(1)
        self.pending: dict[tuple[str, int], asyncio.Future[Result]] = {}
        self.held: OrderedDict[tuple[str, int, str], list[bytes]] = OrderedDict()
        self.tasks: set[asyncio.Task[None]] = set()
        self.stats: dict[str, dict[str, Any]] = {}
        self.traces: dict[str, deque[list[dict[str, Any]]]] = {}
        self.addr = ""
        self.payloads = Payloads(self.me, None, "")
        self.quota_handles: dict[str, Any] = {}
        # peer certificates (bytes → decoded) whose CA signature a receipt check verified
        self.known_certs: dict[bytes, NodeCert] = {}
        self.protocols: dict[str, tuple[float, Protocol | None]] = {}

    async def start(self) -> None:
        m = self.svc.membership
        if m is None:
            return
        m.add_kinds(VDAG_MODELS)
        m.transport.route("vdag.hop", self._on_hop)
        m.transport.route("vdag.result", self._on_result)
        self.addr = m.addr
        self.payloads = Payloads(self.me, m.transport, m.addr)

    async def stop(self) -> None:
        for t in list(self.tasks):
            t.cancel()
        for f in self.pending.values():
            f.cancel()

    def _spawn(self, coro: Any) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    # ----- metrics ---------------------------------------------------------------------------------
    def _stat(self, uri: str) -> dict[str, Any]:
        st = self.stats.get(uri)
        if st is None:
            st = self.stats[uri] = {"requests": 0, "ok": 0, "errors": {}, "lat": deque(maxlen=2048),
                                    "t0": time.monotonic(), "hops_served": 0}
        return st

    def metrics_of(self, uri: str) -> dict[str, Any]:
        st = self._stat(uri)
        lat = sorted(st["lat"])

        def q(p: float) -> float:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 3) if lat else 0.0

        up = max(1e-9, time.monotonic() - st["t0"])
        return {"requests": st["requests"], "ok": st["ok"], "errors_by_stage": dict(st["errors"]),
                "hops_served": st["hops_served"], "fps": round(st["ok"] / up, 3),
                "latency_ms": {"p50": q(0.5), "p90": q(0.9), "p99": q(0.99)}}

    def all_metrics(self) -> dict[str, Any]:
        """The `vdags` section of /v1/metrics: per vDAG seen on this node."""
        return {uri: self.metrics_of(uri) for uri in list(self.stats)}

    def prometheus(self, node: str) -> str:
        """Per-vDAG Prometheus lines (requests and errors counted at this entry node, hops served here)."""
        lines: list[str] = []
        if not self.stats:
            return ""  # no family without samples (a Prometheus parser reads them as empty families)
        names = (("aiosd_vdag_requests_total", "counter", "requests", "vDAG requests entered at this node"),
                 ("aiosd_vdag_ok_total", "counter", "ok", "vDAG requests answered successfully"),
                 ("aiosd_vdag_hops_served_total", "counter", "hops_served", "vDAG stage hops this node served"),
                 ("aiosd_vdag_fps", "gauge", "fps", "vDAG requests per second (recent)"))
        rows = {uri: self.metrics_of(uri) for uri in list(self.stats)}
        for metric, typ, key, doc in names:
            lines.append(f"# HELP {metric} {doc}")
            lines.append(f"# TYPE {metric} {typ}")
            lines += [f'{metric}{{node="{node}",vdag="{_esc(u)}"}} {float(m[key])}' for u, m in rows.items()]
        lines.append("# HELP aiosd_vdag_errors_total vDAG requests failed, by the stage that failed")
        lines.append("# TYPE aiosd_vdag_errors_total counter")
        lines += [f'aiosd_vdag_errors_total{{node="{node}",vdag="{_esc(u)}",stage="{_esc(st)}"}} {float(n)}'
                  for u, m in rows.items() for st, n in m["errors_by_stage"].items()]
        lines.append("# HELP aiosd_vdag_latency_seconds vDAG request latency quantiles at the entry")
        lines.append("# TYPE aiosd_vdag_latency_seconds gauge")
        lines += [f'aiosd_vdag_latency_seconds{{node="{node}",vdag="{_esc(u)}",quantile="{q}"}} '
                  f'{m["latency_ms"][p] / 1000}' for u, m in rows.items()
                  for q, p in (("0.5", "p50"), ("0.9", "p90"), ("0.99", "p99"))]
        return "\n".join(lines) + "\n"

    def traces_of(self, uri: str) -> list[list[dict[str, Any]]]:
        return list(self.traces.get(uri, ()))

    # ----- entry -----------------------------------------------------------------------------------
    async def infer(self, uri: str, data: Any, files: list[dict[str, Any]], session: str, seq_no: int | None,
                    want_receipts: bool, *, data_text: str | None = None, raw: bool = False) -> dict[str, Any]:
        """One task through vDAG `uri`. `data_text`: `data` as the caller's JSON text (sent as is,
        not encoded again); `raw`: the answer carries the output packets as they are (data as JSON
        text, files as bytes) and the receipts as bytes, for a msgpack answer."""
        got = await self.svc.compiled(uri)
        if got is None:
            raise VdagError(404, "not_found", f"no vDAG {uri!r}", "uri")
        c, rec = got
        ctl = rec.get("controller") or {}
        sid = f"vdag::{uri}::{session}"
        await self._check_quota(uri, ctl, sid, session)
        await self._check_input(c, data)
        seq = next(self.seq) if seq_no is None else seq_no
        key = (sid, seq)
        if key in self.pending:
            raise VdagError(409, "duplicate", f"task (session {session!r}, seq {seq}) is already in flight", "seq_no")
        if len(self.pending) >= MAX_PENDING:
            raise VdagError(503, "busy", f"this entry node already waits on {MAX_PENDING} tasks")
        wait_s = _wait_s(ctl)
        t0 = time.perf_counter()
        task = TaskRef(uri, sid, seq, self.me, self.addr, time.time() + wait_s)
        stamp = json.dumps({"is_graph": True, "vdag": uri, "reply_to": self.me})
        text = data_text if data_text is not None else json.dumps(data)
        packet = msgpack.packb({"session_id": sid, "seq_no": seq, "data": text, "files": files,
                                "frame_ptr": "", "output_ptr": stamp, "ts": time.time()}, use_bin_type=True)
        self.payloads.wrap(packet)  # refused here (413) when over the largest payload
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self.pending[key] = fut
        st = self._stat(uri)
        st["requests"] += 1
        try:
            for head in c.heads:
                self._spawn(self._forward(task, c, None, head, packet, ()))
            try:
                res = await asyncio.wait_for(fut, wait_s)
            except TimeoutError:
                st["errors"]["(timeout)"] = st["errors"].get("(timeout)", 0) + 1
                raise VdagError(504, "timeout", f"vDAG {uri}: no answer within {wait_s:g}s "
                                "(maxOutputWaitTimeSeconds)") from None
        finally:
            self.pending.pop(key, None)
        if res.status == 200 and res.ref is not None:
            try:
                res = res.model_copy(update={"packets": await self.payloads.unwrap(b"", res.ref)})
            except VdagError as e:
                res = _error(task, 502, e.code, f"the answer of stage {res.stage!r}: {e}",
                             c.stages[res.stage], res.node) if res.stage in c.stages else res
        if res.status != 200:
            st["errors"][res.stage or "?"] = st["errors"].get(res.stage or "?", 0) + 1
            raise VdagError(res.status, res.code or "stage_failed", res.message, "stage")
        st["ok"] += 1
        took = time.perf_counter() - t0
        st["lat"].append(took)
        return self._answer(uri, session, seq, res, want_receipts, took, raw)

    def _answer(self, uri: str, session: str, seq: int, res: Result, want_receipts: bool,
                took: float, raw_packets: bool = False) -> dict[str, Any]:
        packets = msgpack.unpackb(res.packets, raw=False) if res.packets else []
        outputs = []
        for p in [] if raw_packets else packets:
            raw = p.get("data") if isinstance(p, dict) else None
            try:
                outputs.append(json.loads(raw) if raw else None)
            except ValueError:
                outputs.append(raw)
        trace = []
        for raw in res.receipts:
            body = msgpack.unpackb(msgpack.unpackb(raw, raw=False)[0], raw=False)
            trace.append({k: body[k] for k in ("label", "block", "node", "instance", "ts")})
        self.traces.setdefault(uri, deque(maxlen=TRACES)).append(trace)
        out: dict[str, Any] = {"vdag": uri, "session_id": session, "seq_no": seq,
                               "trace": trace, "latency_ms": round(took * 1000, 3)}
        if raw_packets:
            out["packets"] = packets
        else:
            out["outputs"] = outputs
        if want_receipts:
            out["receipts"] = list(res.receipts) if raw_packets else [base64.b64encode(r).decode()
                                                                       for r in res.receipts]
        return out

    async def _check_quota(self, uri: str, ctl: dict[str, Any], sid: str, session: str) -> None:
        rule = _quota_rule(ctl)
        svc = self.svc.blocks.policy_svc
        if rule is None or svc is None:
            return
        from aiosd.policies.errors import PolicyError

        ck = json.dumps([uri, rule], sort_keys=True, default=str)
        try:
            h = self.quota_handles.get(ck)
            if h is None:  # one handle per vDAG and rule: the policy's own counters live in it
                h = await svc.runner.load(
                    rule["policyRuleURI"], parameters=rule.get("parameters") or {},
                    settings=rule.get("settings") or {}, rule_id=f"{uri}/quota")
                if len(self.quota_handles) > 256:
                    self.quota_handles.clear()
                self.quota_handles[ck] = h
            out = await h.eval({"session_id": sid, "input": {"session_id": session}})
        except PolicyError as e:
            raise VdagError(429, "quota", f"vDAG {uri}: the quota policy refused (it failed: {e})") from None
        if not out.get("allowed"):
            why = out.get("reason") or out.get("message") or (
                f"session {session!r} used {out.get('used')} of {out.get('limit')} requests")
            raise VdagError(429, "quota", f"vDAG {uri}: the quota policy refused: {why}")

    async def _check_input(self, c: CompiledVdag, data: Any) -> None:
        for head in c.heads:
            proto = await self._protocol(c.stages[head].block_id)
            if proto is not None and proto.fields and isinstance(data, dict):
                problems = check_value(proto, data, "data")
                if problems:
                    raise VdagError(422, "invalid", "; ".join(str(p) for p in problems[:5]), problems[0].path)

    async def _protocol(self, block_id: str) -> Protocol | None:
        """The block's input protocol (a cluster block resolves from its spec: cached PROTOCOL_S)."""
        now = time.monotonic()
        hit = self.protocols.get(block_id)
        if hit is not None and now - hit[0] < PROTOCOL_S:
            return hit[1]
        res = await self.svc.blocks.lookup(block_id)
        proto = res.input_protocol if res is not None else None
        if len(self.protocols) > 1024:
            self.protocols.clear()
        self.protocols[block_id] = (now, proto)
        return proto

    async def _on_result(self, v: Verified) -> ResultAck:
        if not isinstance(v.body, Result):
            raise AuthError(AuthReason.BAD_BODY, "not a vdag.result")
        if v.body.node and v.body.node != v.sender and v.body.status == 200:
            raise AuthError(AuthReason.FORBIDDEN, "a result names another node than its sender")
        return ResultAck(taken=self.deliver(v.body))

    def deliver(self, res: Result) -> bool:
        fut = self.pending.get((res.session_id, res.seq_no))
        if fut is None or fut.done():
            return False
        fut.set_result(res)
        return True

    # ----- stages ----------------------------------------------------------------------------------
    async def _on_hop(self, v: Verified) -> HopAck:
        if not isinstance(v.body, Hop):
            raise AuthError(AuthReason.BAD_BODY, "not a vdag.hop")
        return await self.run_hop(v.body)

    async def run_hop(self, hop: Hop) -> HopAck:
        """Run one stage here; the answer is the ack the previous hop waits for."""
        got = await self.svc.compiled(hop.vdag)
        # A hop can outrun the vDAG's record right after an apply (it replicates to this node a moment
        # later): wait for it a bounded while before refusing the hop.
        wait_until = time.monotonic() + min(RECORD_WAIT_S, max(0.0, hop.deadline - time.time()))
        while (got is None or hop.label not in got[0].stages) and time.monotonic() < wait_until:
            await asyncio.sleep(RECORD_POLL_S)
            got = await self.svc.compiled(hop.vdag, fresh=True)
        stage = got[0].stages.get(hop.label) if got is not None else None
        if got is None or stage is None:
            return HopAck(status=404, node=self.me, message=f"vDAG {hop.vdag} has no stage {hop.label!r} here")
        c = got[0]
        try:
            raw = await self.payloads.unwrap(hop.packet, hop.ref)
        except VdagError as e:
            return HopAck(status=422, node=self.me, message=f"stage {hop.label!r}: {e}")
        try:
            packet = msgpack.unpackb(raw, raw=False)
            if not isinstance(packet, dict):
                raise TypeError("not a packet map")
            in_digest = payload_digest(packet)  # hashed once: the link check and this stage's receipt
            if hop.receipts:
                prev = open_receipt(hop.receipts[-1], self.ca, len(hop.receipts) - 1, now=time.time(),
                                    known_certs=self.known_certs)
                check_link(prev, packet, len(hop.receipts) - 1, digest=in_digest)
        except ReceiptError as e:
            return HopAck(status=422, node=self.me, message=f"stage {hop.label!r}: receipt refused: {e}")
        except (ValueError, TypeError, msgpack.UnpackException):
            return HopAck(status=422, node=self.me, message=f"stage {hop.label!r}: the packet is not a msgpack map")
        bal = self.svc.blocks.runtime.balancer
        if bal is None:
            return HopAck(status=503, node=self.me, message="the runtime is not running")
        try:
            reply = await bal.submit(stage.block_id, raw, hop.session_id, prefer=hop.instance or None,
                                     sticky=bool(stage.model_parameters.get("sessionAffinity")))
        except TaskFailed as e:
            return HopAck(status=422, node=self.me, message=f"block {stage.block_id} failed the task: {e}"[:4000])
        except (NoHealthyInstance, InstanceBusy) as e:
            return HopAck(status=503, node=self.me, message=str(e)[:4000])
        except TaskError as e:
            return HopAck(status=502, node=self.me, message=str(e)[:4000])
        self._stat(hop.vdag)["hops_served"] += 1
        log.debug("vdag hop", extra={"vdag": hop.vdag, "stage": hop.label, "from": hop.from_label or "(entry)",
                                     "node": self.me, "instance": reply.instance_id, "session": hop.session_id})
        task = TaskRef(hop.vdag, hop.session_id, hop.seq_no, hop.entry, hop.entry_addr, hop.deadline)
        self._spawn(self._after(task, c, stage, hop, packet, in_digest, reply.instance_id, reply.packets))
        return HopAck(status=200, node=self.me)

    async def _after(self, task: TaskRef, c: CompiledVdag, stage: Stage, hop: Hop, packet: dict[str, Any],
                     in_digest: str, instance: str, outputs: list[Any]) -> None:
        hkey = (task.session_id, task.seq_no, stage.label)
        if not outputs:  # a fan-in instance holds this branch until its siblings arrive
            self.held[hkey] = list(hop.receipts)
            while len(self.held) > MAX_HELD:
                self.held.popitem(last=False)
            return
        chain = list(dict.fromkeys([*self.held.pop(hkey, []), *hop.receipts]))
        stamp = packet.get("output_ptr", "")
        for out in outputs:
            try:
                out = await run_postprocessing(self.svc, c, stage, out)
            except VdagError as e:
                await self._result(task, _error(task, 502, "policy_failed", str(e), stage, self.me))
                return
            r = Receipt(task.vdag, stage.label, stage.block_id, instance, self.me, task.session_id, task.seq_no,
                        in_digest, payload_digest(out), time.time())
            receipts = (*chain, sign_receipt(self.key, self.cert_b, r))
            nxt = next_labels(stage, str(out.get("output_ptr", "")))
            out["output_ptr"] = stamp  # a policy's routing choice applies to this stage only
            if not nxt:
                try:
                    body, ref = self.payloads.wrap(msgpack.packb([out], use_bin_type=True))
                except VdagError as e:
                    await self._result(task, _error(task, e.status, e.code, str(e), stage, self.me))
                    continue
                await self._result(task, Result(vdag=task.vdag, session_id=task.session_id, seq_no=task.seq_no,
                                                status=200, stage=stage.label, block=stage.block_id, node=self.me,
                                                packets=body, ref=ref, receipts=receipts))
                continue
            raw = msgpack.packb(out, use_bin_type=True)
            await asyncio.gather(*(self._forward(task, c, stage, child, raw, receipts) for child in nxt))

    async def _forward(self, task: TaskRef, c: CompiledVdag, src: Stage | None, label: str, raw: bytes,
                       receipts: tuple[bytes, ...]) -> None:
        """Send one stage's input to a node running its block; retried once elsewhere, then an error."""
        stage = c.stages[label]
        fan_in = len(stage.parents) > 1
        tried: set[str] = set()
        last, last_node = "no node runs it (as far as this node knows)", ""
        try:
            inline, ref = self.payloads.wrap(raw)
        except VdagError as e:
            await self._result(task, _error(task, e.status, e.code, str(e), src or stage, self.me))
            return
        for _ in range(2):
            t = choose_target(self.svc.targets(stage.block_id), me=self.me, fan_in=fan_in,
                              session_id=task.session_id, seq_no=task.seq_no, rng=self.rng,
                              exclude=frozenset(tried), sticky=bool(stage.model_parameters.get("sessionAffinity")))
            if t is None:
                break
            hop = Hop(vdag=task.vdag, label=label, from_label=src.label if src else "", session_id=task.session_id,
                      seq_no=task.seq_no, packet=inline, ref=ref, entry=task.entry, entry_addr=task.entry_addr,
                      instance=t.instance if fan_in else "", deadline=task.deadline, receipts=receipts)
            left = min(HOP_TIMEOUT_S, task.deadline - time.time())
            if left <= 0:
                return  # the entry stopped waiting; it answered the caller already
            try:
                if t.node == self.me:
                    ack = await asyncio.wait_for(self.run_hop(hop), left)
                else:
                    v = await self.svc.membership.transport.request(  # type: ignore[union-attr]
                        t.addr, "vdag.hop", hop, left, to=NodeId(t.node))
                    if not isinstance(v.body, HopAck):
                        raise FederationError("answered something other than vdag.hop_ack")
                    ack = v.body
            except (FederationError, TimeoutError) as e:
                last, last_node = f"{type(e).__name__}: {e}", t.node
                tried.add(t.node)
                continue
            if ack.status == 200:
                return
            last, last_node = ack.message, t.node
            tried.add(t.node)
            if ack.status == 422:  # the block refused this input (or its receipt): another instance would too
                break
        msg = f"stage {label!r} (block {stage.block_id}) failed on node {last_node or '-'}: {last}"
        log.warning("vdag hop failed", extra={"vdag": task.vdag, "stage": label, "node": last_node, "error": last})
        await self._result(task, _error(task, 502, "stage_failed", msg, stage, last_node))

    async def _result(self, task: TaskRef, res: Result) -> None:
        if task.entry == self.me:
            self.deliver(res)
            return
        try:
            await self.svc.membership.transport.request(  # type: ignore[union-attr]
                task.entry_addr, "vdag.result", res, 10.0, to=NodeId(task.entry))
        except FederationError as e:
            log.warning("vdag result not delivered", extra={"vdag": task.vdag, "entry": task.entry, "error": str(e)})


def _error(task: TaskRef, status: int, code: str, msg: str, stage: Stage, node: str) -> Result:
    return Result(vdag=task.vdag, session_id=task.session_id, seq_no=task.seq_no, status=status, code=code,
                  message=msg[:4000], stage=stage.label, block=stage.block_id, node=node)


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def _wait_s(ctl: dict[str, Any]) -> float:
    raw = (ctl.get("initSettings") or {}).get("maxOutputWaitTimeSeconds", DEFAULT_WAIT_S)
    return float(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) and raw > 0 else DEFAULT_WAIT_S


def _quota_rule(ctl: dict[str, Any]) -> dict[str, Any] | None:
    for p in ctl.get("policies") or ():
        v = p.get("values", p) if isinstance(p, dict) else {}
        if isinstance(v, dict) and (v.get("name") in ("quotaChecker", "quotaCheckerPolicyRule", "quota")):
            return v if v.get("policyRuleURI") else None
    return None


__all__ = ["VdagFlow"]
