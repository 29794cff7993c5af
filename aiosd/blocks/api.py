"""HTTP edge of the block service: apply, registries, inference and management.

Bodies are checked here (size, decode, the block's input protocol) before anything reaches the
block service or an instance; every rejection names its field. Inference answers JSON by default,
msgpack when the request says `Accept: application/msgpack` or `?format=msgpack`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import inspect
import json
import time
from typing import Any

import aiohttp
import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published
from aiohttp import web

from aiosd.api.routes import MAX_BODY_BYTES, ApiProblem, Route, json_ok, read_json, read_query
from aiosd.blocks.catalog import RecordKind
from aiosd.blocks.errors import BlockError
from aiosd.blocks.forward import TaskForward
from aiosd.blocks.query import ApplyQuery, DryRunQuery, InferQuery, ListQuery
from aiosd.blocks.service import BlockService
from aiosd.controller.errors import ClusterRefused, PlacementError
from aiosd.errors import describe_type
from aiosd.policies.errors import PolicyError, PolicyVetoed
from aiosd.specs import Protocol, SpecError, check_value
from runtime import InstanceState
from runtime.errors import InstanceBusy, NoHealthyInstance, TaskError, TaskFailed

MAX_FORWARD_BYTES = 900 << 10  # a forwarded task travels in one signed envelope (1 MiB)
MSGPACK = "application/msgpack"
MGMT_TIMEOUT_S = 30.0
PARAMETER_COMMANDS = frozenset({"setParameters", "set_parameters", "update_parameters", "parameters"})
SCALE_COMMANDS = frozenset({"scale", "set_instances"})


def _kind(request: web.Request) -> RecordKind:
    return RecordKind(request.path.split("/")[2])


def spec_problem(e: SpecError) -> ApiProblem:
    return ApiProblem(422, "invalid", str(e), e.paths[0] if e.paths else None)


def _mgmt_body(body: Any) -> tuple[str, str, dict[str, Any]]:
    """(service, mgmtCommand, mgmtData) of a mgmt request body, each checked."""
    if not isinstance(body, dict):
        raise ApiProblem(422, "invalid", "must be an object {service, mgmtCommand, mgmtData}", "body")
    service = body.get("service", "instances")
    cmd = body.get("mgmtCommand")
    data = body.get("mgmtData", {})
    if not isinstance(service, str):
        raise ApiProblem(422, "invalid", "must be a string", "service")
    if not isinstance(cmd, str) or not cmd:
        raise ApiProblem(422, "invalid", "is required: a non-empty string", "mgmtCommand")
    if not isinstance(data, dict):
        raise ApiProblem(422, "invalid", "must be an object", "mgmtData")
    return service, cmd, data


class SpecHandlers:
    """The block service's HTTP handlers (apply, records, infer, mgmt) over one `BlockService`."""

    def __init__(self, svc: BlockService) -> None:
        self.svc = svc

    async def apply(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            raise ApiProblem(413, "too_large", f"body is larger than {MAX_BODY_BYTES} bytes")
        q = await read_query(request, ApplyQuery)
        text = await request.read()
        spec_uri = q.specUri
        if spec_uri:  # a spec from the spec store (aiosd spec push), applied like a body
            stored = self.svc.policy_svc.specs.get(spec_uri) if self.svc.policy_svc is not None else None
            if stored is None:
                raise ApiProblem(404, "not_found", f"no spec {spec_uri[:200]!r} in the spec store; "
                                 "push it with `aiosd spec push`", "specUri")
            text = json.dumps(stored.specData).encode()
        if not text.strip():
            raise ApiProblem(400, "bad_request", "the request needs a body: one or more AIOS JSON documents")
        dry, cluster, wait_s = q.dry_run, q.cluster, q.wait
        try:
            out = await self.svc.apply(text, dry_run=dry, overrides=q.policy_overrides or None, cluster=cluster)
        except SpecError as e:
            raise spec_problem(e) from None
        except ClusterRefused as e:
            raise ApiProblem(e.status, e.code, str(e)) from None
        except PlacementError as e:
            raise ApiProblem(409, "no_room", str(e), "placement") from None
        except PolicyVetoed as e:
            raise ApiProblem(403, "vetoed", str(e)) from None
        except PolicyError as e:
            raise ApiProblem(422, "policy", str(e), "policyRulesSpec") from None
        task = out.get("task")
        if task is not None and wait_s > 0:
            out["task"] = (await self.svc.tasks.wait(task["id"], wait_s)).model_dump(mode="json")
        return json_ok(out)

    async def list_records(self, request: web.Request) -> web.Response:
        kind = _kind(request)
        rows = await self.svc.registry.list(kind)
        if kind is RecordKind.BLOCK:
            counts: dict[str, list[int]] = {}
            for s in self.svc.runtime.sup.status():
                c = counts.setdefault(s.block_id, [0, 0])
                c[0] += 1
                c[1] += s.state is InstanceState.HEALTHY
            for r in rows:
                total, healthy = counts.get(str(r.get("id")), [0, 0])
                r["status"] = {"instances": total, "healthy": healthy}
        if not (await read_query(request, ListQuery)).full:  # ?full=1: the whole records (`aiosd get --json`)
            for r in rows:
                r.pop("document", None)
        return json_ok({"kind": kind.value, "items": rows})

    async def get_record(self, request: web.Request) -> web.Response:
        kind, key = _kind(request), request.match_info["id"]
        rec = await self.svc.registry.get(kind, key)
        if rec is None:
            raise ApiProblem(404, "not_found", f"no {kind.value[:-1]} {key!r}", "id")
        if kind is RecordKind.BLOCK:
            rows = [s.to_json() for s in self.svc.runtime.sup.status() if s.block_id == key]
            st = self.svc.loop_state(key)
            rec["status"] = {
                "instances": rows,
                "healthy": sum(1 for r in rows if r["state"] == InstanceState.HEALTHY.value),
                "autoscaler": st.last_decision if st else "", "givenUp": dict(st.given_up) if st else {},
            }
        return json_ok(rec)

    async def delete_record(self, request: web.Request) -> web.Response:
        kind, key = _kind(request), request.match_info["id"]
        try:
            return json_ok(await self.svc.delete(kind, key))
        except KeyError:
            raise ApiProblem(404, "not_found", f"no {kind.value[:-1]} {key!r}", "id") from None
        except SpecError as e:
            raise ApiProblem(409, "in_use", str(e), "id") from None
        except ClusterRefused as e:
            raise ApiProblem(e.status, e.code, str(e)) from None
        except PolicyVetoed as e:
            raise ApiProblem(403, "vetoed", str(e)) from None

    async def infer(self, request: web.Request) -> web.Response:
        bid = request.match_info["id"]
        fmt = (await read_query(request, InferQuery)).format
        t0 = time.perf_counter()
        warnings: list[str] = []
        instance_id, packets = await run_task(self.svc, bid, await _read_packet(request),
                                              json_body=request.content_type != MSGPACK, warnings=warnings)
        return _infer_answer(request, bid, instance_id, packets, t0, warnings, fmt)

    async def mgmt(self, request: web.Request) -> web.Response:
        bid = request.match_info["id"]
        res = await self.svc.lookup(bid)
        if res is None:
            raise ApiProblem(404, "not_found", f"no block {bid!r}", "id")
        service, cmd, data = _mgmt_body(await read_json(request))
        if cmd in SCALE_COMMANDS:
            return await self._scale(bid, data)
        if self.svc.resolved(bid) is None:  # a cluster block with no instance here
            raise _not_here(self.svc, bid)
        try:
            checked = await self.svc.precheck("block_mgmt", {"block_id": bid, "service": service, "mgmtCommand": cmd,
                                                             "mgmtData": data}, ("mgmtData",))
        except PolicyVetoed as e:
            raise ApiProblem(403, "vetoed", str(e)) from None
        data = checked["mgmtData"]
        if not isinstance(data, dict):
            raise ApiProblem(403, "vetoed", "the block_mgmt pre-check rewrote mgmtData into a non-object")
        if service in ("autoscaler", "health"):
            return await self._policy_mgmt(bid, service, cmd, data)
        if cmd in PARAMETER_COMMANDS:
            return json_ok(await _set_parameters(self.svc, bid, data))
        answers = await _each_instance(self.svc, bid, "/mgmt", {"mgmt_action": cmd, "mgmt_data": data})
        return json_ok({"block_id": bid, "mgmtCommand": cmd, "instances": answers})

    async def _scale(self, bid: str, data: dict[str, Any]) -> web.Response:
        n = data.get("instances")
        if not isinstance(n, int) or isinstance(n, bool):
            raise ApiProblem(422, "invalid", "must be an integer (the instance count)", "mgmtData.instances")
        try:
            return json_ok(await self.svc.scale(bid, n))
        except SpecError as e:
            raise spec_problem(e) from None
        except ClusterRefused as e:
            raise ApiProblem(e.status, e.code, str(e)) from None
        except PolicyVetoed as e:
            raise ApiProblem(403, "vetoed", str(e)) from None
        except BlockError as e:
            raise ApiProblem(409, "runtime_refused", str(e)) from None

    async def _policy_mgmt(self, bid: str, service: str, cmd: str, data: dict[str, Any]) -> web.Response:
        """A management command to the block's autoscaler or health policy."""
        st = self.svc.loop_state(bid)
        handle = (st.autoscaler if service == "autoscaler" else st.health) if st else None
        if handle is None:
            raise ApiProblem(404, "not_found", f"block {bid!r} has no {service} policy", "service")
        try:
            result = handle.management(cmd, data)
            if inspect.isawaitable(result):  # a published policy, in the sandbox
                result = await result
            return json_ok({"block_id": bid, "service": service, "result": result})
        except PolicyError as e:
            raise ApiProblem(422, "policy", str(e), "mgmtCommand") from None

    async def dry_run(self, request: web.Request) -> web.Response:
        q = await read_query(request, DryRunQuery)
        text = await request.read()
        if not text.strip():
            raise ApiProblem(400, "bad_request", "the request needs a body: component and/or block documents")
        try:
            out = await self.svc.apply(text, dry_run=True, overrides=q.policy_overrides or None)
        except SpecError as e:
            raise spec_problem(e) from None
        except PolicyError as e:
            raise ApiProblem(422, "policy", str(e), "policyRulesSpec") from None
        blocks = [d for d in out["documents"] if d["kind"] == "block"]
        return json_ok({"blocks": [{"id": d["id"], "placement": d["placement"]} for d in blocks]})

    def routes(self) -> list[Route]:
        routes = [Route("POST", "/v1/apply", self.apply, "apply AIOS documents (?dry_run=1, ?wait=S, "
                        "?policy_overrides=aios-examples, ?cluster=1: placed by the cluster's controller, ?specUri=URI: a stored spec "
                        "instead of a body)", tag="specs", query=ApplyQuery),
                  Route("POST", "/v1/allocate/dry-run", self.dry_run, "placement a block would get, changing nothing",
                        tag="specs", query=DryRunQuery),
                  Route("POST", "/v1/infer/block/{id}", self.infer, "one task to a block (JSON or msgpack packet)",
                        tag="specs", query=InferQuery),
                  Route("POST", "/v1/mgmt/block/{id}", self.mgmt, "management command {service, mgmtCommand, mgmtData}",
                        tag="specs")]
        for kind in RecordKind:
            routes += [Route("GET", f"/v1/{kind.value}", self.list_records, f"list {kind.value}", tag="specs",
                             query=ListQuery),
                       Route("GET", f"/v1/{kind.value}/{{id}}", self.get_record, f"one of the {kind.value}", tag="specs"),
                       Route("DELETE", f"/v1/{kind.value}/{{id}}", self.delete_record, f"delete one of the {kind.value}",
                             tag="specs")]
        return routes


def spec_routes(svc: BlockService) -> list[Route]:
    return SpecHandlers(svc).routes()


async def run_task(svc: BlockService, bid: str, packet: dict[str, Any], *, json_body: bool = True,
                   warnings: list[str] | None = None) -> tuple[str, Any]:
    """Run one task (a packet from `_read_packet`) on block `bid`: at a local instance, or forwarded to
    a node that runs one. Answers (instance id, output packets); input-protocol warnings are appended to
    `warnings`. Raises: ApiProblem (404, 422, 503...). Also the seam the OpenAI endpoint (aiosd.llm) calls."""
    res = svc.resolved(bid)
    remote: set[str] = set()
    relay = False
    if svc.forwarder is not None and (res is None or not svc.runtime.sup.healthy(bid)):
        # A cluster block with no healthy instance here: checked here, run at a node that has one
        # (in this cluster; or, for a block another cluster places, at any node of that cluster).
        remote = svc.hosts_of(bid)
        if not remote:
            remote = await svc.hosts_elsewhere(bid)
            relay = bool(remote)
        if res is None and remote:
            res = await svc.lookup(bid)
    if res is None:
        raise _not_here(svc, bid)
    data = _packet_data(packet, json_body=json_body)
    if warnings is not None:
        warnings += _input_warnings(res.input_protocol, data)
    else:
        _input_warnings(res.input_protocol, data)
    if remote:
        assert svc.forwarder is not None  # remote is empty without one
        raw = packet.pop("_raw", None) or msgpack.packb(packet, use_bin_type=True)
        if len(raw) > MAX_FORWARD_BYTES:
            raise ApiProblem(413, "too_large", f"a task forwarded to another node carries at most "
                             f"{MAX_FORWARD_BYTES} bytes; send it to a node that runs block {bid}")
        ans = await svc.forwarder.forward(remote, TaskForward(block_id=bid, packet=raw,
                                                              session_id=packet["session_id"], relay=relay))
        if ans.status >= 400:
            raise ApiProblem(ans.status, ans.code or "error", ans.message)
        return ans.instance_id, msgpack.unpackb(ans.packets, raw=False)
    lb = res.policy("loadBalancer")
    sticky = lb is not None and "sticky" in lb.uri or (lb is not None and "session" in lb.uri)
    bal = svc.runtime.balancer
    if bal is None:
        raise ApiProblem(503, "not_ready", "the runtime is not running")
    try:  # a published loadBalancer policy chooses; built-in ones run natively in the balancer
        prefer = await svc.choose_instance(bid, res, {k: v for k, v in packet.items() if k not in ("_raw", "files")})
    except PolicyError as e:
        raise ApiProblem(502, "policy_failed", f"the block's loadBalancer policy failed: {e}") from None
    # A msgpack body that decoded to a packet as-is goes to the instance as the same bytes.
    wire: bytes | dict[str, Any] = packet.pop("_raw", None) or packet
    try:
        reply = await bal.submit(bid, wire, packet["session_id"] or None, sticky=sticky, prefer=prefer)
    except TaskFailed as e:
        raise ApiProblem(422, "task_failed", str(e), "data") from None
    except (NoHealthyInstance, InstanceBusy) as e:
        raise ApiProblem(503, "unavailable", str(e)) from None
    except TaskError as e:
        raise ApiProblem(502, "instance_error", str(e)) from None
    return reply.instance_id, reply.packets


def _packet_data(packet: dict[str, Any], *, json_body: bool) -> Any:
    """The packet's data as a value. `data` is JSON text; in a JSON body a string that is not JSON text
    is that string (`{"data": "hi"}`), re-encoded so the instance reads JSON text as always."""
    try:
        return json.loads(packet["data"]) if packet["data"] else None
    except ValueError:
        if not json_body:
            raise ApiProblem(400, "bad_request", "data is not JSON text", "data") from None
        packet["data"] = json.dumps(packet["data"])
        return json.loads(packet["data"])


def _input_warnings(proto: Protocol, data: Any) -> list[str]:
    """Refuse data that lacks a field the input protocol marks required or has a wrong type; warn about
    the optional fields it names that the data leaves out."""
    if not proto.fields:
        return []
    if not isinstance(data, dict):
        names = ", ".join(sorted(proto.fields))
        return [f"data is {describe_type(data)}, but the block's input protocol names fields ({names})"]
    problems = check_value(proto, data, "data")
    if problems:
        raise ApiProblem(422, "invalid", "; ".join(str(p) for p in problems[:5]), problems[0].path)
    missing = sorted(set(proto.fields) - set(data))
    return [f"data.{name} is not given (the input protocol names it; it is optional)" for name in missing]


def _infer_answer(request: web.Request, bid: str, instance_id: str, packets: Any, t0: float,
                  warnings: list[str] | None = None, fmt: str | None = None) -> web.Response:
    """The answer to an inference: msgpack when asked for, else JSON with the outputs decoded."""
    packets = packets if isinstance(packets, list | tuple) else []
    if request.headers.get("Accept") == MSGPACK or fmt == "msgpack":
        body = msgpack.packb({"block_id": bid, "instance_id": instance_id, "packets": packets}, use_bin_type=True)
        return web.Response(body=body, content_type=MSGPACK)
    outputs = []
    for p in packets:
        raw = p.get("data") if isinstance(p, dict) else None
        try:
            outputs.append(json.loads(raw) if isinstance(raw, str | bytes) and raw else raw)
        except ValueError:
            outputs.append(raw)
    answer: dict[str, Any] = {"block_id": bid, "instance_id": instance_id, "outputs": outputs,
                              "latency_ms": round((time.perf_counter() - t0) * 1000, 3)}
    if warnings:
        answer["warnings"] = warnings
    return json_ok(answer)


def _not_here(svc: BlockService, bid: str) -> ApiProblem:
    """404 for a block this node does not serve; names the nodes that run it when it is a cluster block."""
    ctl = svc.controller
    insts = ctl.view().blocks.get(bid, {}) if ctl is not None else {}
    if not insts:
        return ApiProblem(404, "not_found", f"no block {bid!r}", "id")
    nodes = sorted({i.node_id for i in insts.values()})
    if ctl is not None and bid not in ctl.view().specs:
        return ApiProblem(409, "reserve_only", f"block {bid!r} is placed by the cluster without a spec (a "
                          "reservation): nothing runs it; apply it with `aiosd apply --cluster` to serve tasks", "id")
    if svc.node_id in nodes:  # placed here, but nothing healthy to answer with (yet)
        why = svc.follower.failing().get(bid) if svc.follower is not None else None
        if why:  # it fails (a spec this node cannot run, a crash loop): not "come back later"
            return ApiProblem(409, "failing", f"block {bid!r} is placed on this node but none of its instances "
                              f"here is healthy: {why}", "id")
        return ApiProblem(503, "not_running", f"block {bid!r} is placed on this node but none of its instances "
                          "here is healthy yet (starting); try again shortly", "id")
    return ApiProblem(404, "not_here", f"block {bid!r} runs on node(s) {', '.join(nodes)}, not on this "
                      "one, and this node could not forward the task; send the request there", "id")


async def _read_packet(request: web.Request) -> dict[str, Any]:
    """The AIOSPacket of an infer request: msgpack as the instance contract has it, or JSON with
    `data` as any JSON value and files as base64 (`file_data_b64`)."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise ApiProblem(413, "too_large", f"body is larger than {MAX_BODY_BYTES} bytes")
    raw = await request.read()
    passthrough = False
    if request.content_type == MSGPACK:
        try:
            doc = msgpack.unpackb(raw, raw=False)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            raise ApiProblem(400, "bad_msgpack", "body is not a msgpack map") from None
        passthrough = isinstance(doc, dict) and isinstance(doc.get("data"), str) and \
            set(doc) <= {"session_id", "seq_no", "data", "files", "frame_ptr", "output_ptr", "ts"}
    else:
        try:
            doc = json.loads(raw) if raw else {}
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiProblem(400, "bad_json", f"body is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ApiProblem(422, "invalid", "must be an object (an AIOSPacket)", "body")
    data = doc.get("data")
    if not isinstance(data, str | bytes):
        data = json.dumps(data) if data is not None else ""
    elif isinstance(data, bytes):
        data = data.decode(errors="replace")
    sid = doc.get("session_id", "")
    if not isinstance(sid, str) or len(sid) > 256:
        raise ApiProblem(422, "invalid", "must be a string of at most 256 characters", "session_id")
    seq = doc.get("seq_no", 0)
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise ApiProblem(422, "invalid", "must be an integer", "seq_no")
    files = []
    raw_files = doc.get("files", [])
    if not isinstance(raw_files, list):
        raise ApiProblem(422, "invalid", "must be a list", "files")
    for i, f in enumerate(raw_files):
        if not isinstance(f, dict):
            raise ApiProblem(422, "invalid", "must be an object {metadata, file_data}", f"files[{i}]")
        meta = f.get("metadata", "")
        meta = meta if isinstance(meta, str) else json.dumps(meta)
        if isinstance(f.get("file_data"), bytes):
            blob = f["file_data"]
        elif isinstance(f.get("file_data_b64"), str):
            try:
                blob = base64.b64decode(f["file_data_b64"], validate=True)
            except (binascii.Error, ValueError):
                raise ApiProblem(422, "invalid", "is not base64", f"files[{i}].file_data_b64") from None
        else:
            raise ApiProblem(422, "invalid", "needs file_data (bytes, msgpack) or file_data_b64 (JSON)",
                             f"files[{i}]")
        files.append({"metadata": meta, "file_data": blob})
    out: dict[str, Any] = {"session_id": sid, "seq_no": seq, "data": data, "files": files,
                           "frame_ptr": str(doc.get("frame_ptr", "")), "output_ptr": str(doc.get("output_ptr", "")),
                           "ts": time.time()}
    if passthrough and all("file_data" in f for f in raw_files):
        out["_raw"] = raw  # checked above: the instance gets exactly what was validated
    return out


async def _set_parameters(svc: BlockService, bid: str, data: dict[str, Any]) -> dict[str, Any]:
    res = svc.resolved(bid)
    assert res is not None  # checked by the caller
    comp = svc.component(res.component_uri)
    merged = {**res.parameters, **data}
    if comp is not None:
        problems = check_value(comp.protocols["parameters"], merged, "mgmtData")
        if problems:
            raise ApiProblem(422, "invalid", "; ".join(str(p) for p in problems[:5]), problems[0].path)
    answers = await _each_instance(svc, bid, "/setParameters", data)
    await svc.set_parameters(bid, merged)
    return {"block_id": bid, "mgmtCommand": "setParameters", "parameters": merged, "instances": answers}


async def _each_instance(svc: BlockService, bid: str, path: str, body: Any) -> dict[str, Any]:
    """POST `body` to every healthy instance of the block; answers by instance id."""
    targets = svc.runtime.sup.healthy(bid)
    if not targets:
        raise ApiProblem(503, "unavailable", f"block {bid!r} has no healthy instance on this node")

    async def one(ep_path: str) -> Any:
        conn = aiohttp.UnixConnector(path=ep_path)
        try:
            async with (aiohttp.ClientSession(connector=conn) as s, asyncio.timeout(MGMT_TIMEOUT_S),
                        s.post("http://localhost" + path, json=body) as r):
                try:
                    return await r.json(content_type=None)
                except ValueError:
                    return {"ok": False, "error": {"type": f"HTTP{r.status}", "message": await r.text()}}
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            return {"ok": False, "error": {"type": type(e).__name__, "message": str(e)}}

    results = await asyncio.gather(*(one(str(ep.socket)) for _, ep in targets))
    return {iid: r for (iid, _), r in zip(targets, results, strict=True)}


__all__ = ["SpecHandlers", "spec_problem", "spec_routes"]
