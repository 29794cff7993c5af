"""`aiosd apply | get | describe | delete | tasks | wait | infer | mgmt`: specs in, answers out.

Everything goes through the daemon's API (aiosd.client); this module only reads files,
shapes requests and prints answers.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiosd.cli.output import print_json, print_kv, print_table
from aiosd.client import Client
from aiosd.config import Settings
from aiosd.errors import AiosdError, UsageError

Sub = Any
KINDS = {"component": "components", "components": "components", "comp": "components",
         "block": "blocks", "blocks": "blocks", "vdag": "vdags", "vdags": "vdags"}
FINAL = ("succeeded", "failed", "interrupted")
POLL_S = 0.1  # CLI progress poll; the server-side wait is a long poll, this only bounds a round


def _add(sub: Sub, name: str, help_: str, description: str, epilog: str,
         handler: Callable[[argparse.Namespace, Settings], int]) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_, description=description, epilog=epilog,
                                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(handler=handler)
    return p


def _kind(raw: str) -> str:
    kind = KINDS.get(raw.lower())
    if kind is None:
        raise UsageError(f"unknown kind {raw!r}; use one of: component, block")
    return kind


def read_spec_text(path: str) -> str:
    """The documents of FILE, of every *.json in DIR (sorted, components first), or of stdin ('-')."""
    if path == "-":
        return sys.stdin.read()
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.json"), key=lambda f: (0 if "component" in f.name else 1, f.name))
        if not files:
            raise UsageError(f"{path} holds no *.json files")
        return "\n".join(f.read_text(encoding="utf-8") for f in files)
    if not p.is_file():
        raise UsageError(f"{path} does not exist")
    return p.read_text(encoding="utf-8")


# ----- apply --------------------------------------------------------------------------------
async def _apply(settings: Settings, text: str, args: argparse.Namespace) -> int:
    q = []
    if args.dry_run:
        q.append("dry_run=1")
    if args.aios_example_overrides:
        q.append("policy_overrides=aios-examples")
    if args.cluster_wide:
        q.append("cluster=1")
    if args.spec_uri:
        q.append("specUri=" + urllib.parse.quote(args.spec_uri, safe=""))
    path = "/v1/apply" + ("?" + "&".join(q) if q else "")
    async with Client(settings.socket_path, timeout_s=600) as c:
        out = await c.request("POST", path, raw=text.encode(), content_type="application/json")
        task = out.get("task")
        if not args.json:
            for d in out["documents"]:
                print(f"{d['kind']} {d['id']} {d['action']}")
                if d["kind"] == "vdag":
                    from aiosd.cli.vdag_cmds import print_vdag_doc

                    print_vdag_doc(d)
                    continue
                if d["kind"] == "block" and d["placement"].get("cluster") and not args.dry_run:
                    for inst in d["placement"].get("placements", []):
                        gpus = ",".join(map(str, inst.get("gpus", []))) or "-"
                        print(f"  {inst['instance_id']} -> node {inst['node_id']} (gpus {gpus})")
                elif args.dry_run and d["kind"] == "block":
                    pl = d["placement"]
                    print(f"  placement: {len(pl['placements'])}/{pl['requested']} instance(s), "
                          f"score {pl['score']:.2f}, policy {pl['policy']}")
                    for cand in pl["candidates"]:
                        print(f"  candidate {cand['node_id']}: score {cand['score']:.2f} capacity {cand['capacity']}"
                              + (f" ({cand['reason']})" if cand["reason"] else ""))
            for w in out.get("warnings", []):
                print(f"warning: {w}", file=sys.stderr)
        if task is None or args.no_wait:
            if args.json:
                print_json(out)
            elif task is not None:
                print(f"task {task['id']} started (aiosd wait {task['id']})")
            return 0
        seen = 0
        while True:
            t = await c.post(f"/v1/tasks/{task['id']}/wait?timeout_s=1")
            if not args.json:
                for line in t["progress"][seen:]:
                    print(f"  {line['message']}", flush=True)
                seen = len(t["progress"])
            if t["state"] in FINAL:
                break
        out["task"] = t
        if args.json:
            print_json(out)
        if t["state"] != "succeeded":
            if not args.json:
                print(f"aiosd: error: task {t['id']} {t['state']}: {t.get('error')}", file=sys.stderr)
            return 1
        if not args.json:
            print("ready")
        return 0


def cmd_apply(args: argparse.Namespace, settings: Settings) -> int:
    if bool(args.file) == bool(args.spec_uri):
        raise UsageError("give documents with -f FILE|DIR|- or a stored spec with --spec-uri URI (one of them)")
    text = "\n".join(read_spec_text(f) for f in args.file) if args.file else ""
    return asyncio.run(_apply(settings, text, args))


def register_apply(sub: Sub) -> argparse.ArgumentParser:
    p = _add(sub, "apply", "apply AIOS component/block specs (create, update, or no change)",
             "Send AIOS-format documents to the daemon. Components are registered, blocks are placed on\n"
             "this node and started; the command shows progress until the instances are healthy.\n"
             "Applying the same documents twice changes nothing (\"unchanged\").",
             "examples:\n  aiosd apply -f examples/echo/component.json -f examples/echo/block.json\n"
             "  aiosd apply -f examples/echo/            # every *.json in the directory\n"
             "  cat block.json | aiosd apply -f -\n"
             "  aiosd apply -f block.json --dry-run      # validate and show the placement only\n"
             "  aiosd apply -f aios-examples/ --dry-run --aios-example-overrides\n"
             "  aiosd apply -f block.json --cluster      # the cluster's controller places it on its nodes\n"
             "  aiosd apply --spec-uri specs.echo:v1-a    # a spec from the spec store (aiosd spec push)",
             cmd_apply)
    p.add_argument("-f", "--file", action="append", metavar="FILE|DIR|-",
                   help="documents to apply (repeatable; a DIR means its *.json, components first)")
    p.add_argument("--spec-uri", metavar="URI", help="apply a spec from the spec store instead of files")
    p.add_argument("--dry-run", action="store_true", help="validate and show the placement; change nothing")
    p.add_argument("--no-wait", action="store_true", help="print the task id and return at once")
    p.add_argument("--cluster", dest="cluster_wide", action="store_true",
                   help="place the blocks across this node's cluster (the elected controller decides, every "
                        "node runs what is placed on it, instances move when a node dies) instead of on this node")
    p.add_argument("--aios-example-overrides", action="store_true",
                   help="map the policy URIs of the AIOS example specs to the built-ins (docs/blocks.md)")
    p.add_argument("--json", action="store_true", help="print the answer as JSON")
    return p


# ----- get / describe / delete --------------------------------------------------------------
def cmd_get(args: argparse.Namespace, settings: Settings) -> int:
    kind = _kind(args.kind)

    async def go() -> Any:
        async with Client(settings.socket_path) as c:
            return await c.get(f"/v1/{kind}/{args.id}" if args.id else f"/v1/{kind}")

    out = asyncio.run(go())
    if args.json:
        print_json(out)
        return 0
    items = [out] if args.id else out["items"]
    if kind == "components":
        rows = [[r["uri"], r["document"]["body"]["spec"]["values"]["containerRegistryInfo"]["containerImage"]]
                if "document" in r else [r["uri"], "-"] for r in items]
        print_table(["uri", "image"], rows)
        return 0
    headers = ["id", "component", "instances", "healthy", "min", "max"]
    if args.wide:
        headers += ["policies", "code"]
    rows = []
    for r in items:
        st = r.get("status", {})
        healthy = st.get("healthy", 0)
        n = st["instances"] if isinstance(st.get("instances"), int) else len(st.get("instances", []))
        row = [r["id"], r["componentUri"], f"{n}/{r.get('desiredInstances', '?')}", healthy,
               r["minInstances"], r["maxInstances"]]
        if args.wide:
            code = r.get("code", {})
            row += [",".join(f"{k}={v['policyRuleURI']}" for k, v in r["policies"].items()) or "-",
                    code.get("image") or code.get("blockDir") or "-"]
        rows.append(row)
    print_table(headers, rows)
    return 0


def register_get(sub: Sub) -> argparse.ArgumentParser:
    p = _add(sub, "get", "list components or blocks (or one of them)",
             "List the registered components or blocks of this node, or show one.",
             "examples:\n  aiosd get blocks\n  aiosd get block echo-1 --json\n  aiosd get components --wide",
             cmd_get)
    p.add_argument("kind", help="component(s) or block(s)")
    p.add_argument("id", nargs="?", help="one record's id (block id or component URI)")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.add_argument("--wide", action="store_true", help="more columns")
    return p


def cmd_describe(args: argparse.Namespace, settings: Settings) -> int:
    kind = _kind(args.kind)

    async def go() -> Any:
        async with Client(settings.socket_path) as c:
            return await c.get(f"/v1/{kind}/{args.id}")

    r = asyncio.run(go())
    if args.json:
        print_json(r)
        return 0
    if kind == "vdags":
        from aiosd.cli.vdag_cmds import print_describe

        print_describe(r)
        return 0
    if kind == "components":
        v = r["document"]["body"]["spec"]["values"]
        print_kv([("uri", r["uri"]), ("image", v["containerRegistryInfo"]["containerImage"]),
                  ("metadata", json.dumps(v.get("componentMetadata", {}))),
                  ("input", ", ".join(v.get("componentInputProtocol", {})) or "-"),
                  ("output", ", ".join(v.get("componentOutputProtocol", {})) or "-"),
                  ("parameters", json.dumps(v.get("componentParameters", {})))])
        return 0
    st = r.get("status", {})
    print_kv([("id", r["id"]), ("component", r["componentUri"]), ("node", r.get("nodeId", "-")),
              ("instances", (f"{st.get('healthy', 0)} healthy of {r.get('desiredInstances')} desired "
                             f"(min {r['minInstances']}, max {r['maxInstances']})")),
              ("code", json.dumps(r.get("code", {}))), ("parameters", json.dumps(r.get("parameters", {}))),
              ("autoscaler", st.get("autoscaler") or "-"),
              ("given up", ", ".join(st.get("givenUp", {})) or "-")])
    print("policies:")
    for name, pol in r["policies"].items():
        print(f"  {name}: {pol['policyRuleURI']} parameters={json.dumps(pol['parameters'])}")
    print("instances:")
    print_table(["instance", "state", "restarts", "error"],
                [[i["instance_id"], i["state"], i["restarts"], i["error"] or "-"] for i in st.get("instances", [])])
    return 0


def register_describe(sub: Sub) -> argparse.ArgumentParser:
    p = _add(sub, "describe", "show one component or block in detail",
             "Show a record with its policies, instances and their states, autoscaler decisions.",
             "examples:\n  aiosd describe block echo-1\n  aiosd describe component model.echo:1.0.0-stable",
             cmd_describe)
    p.add_argument("kind", help="component or block")
    p.add_argument("id", help="block id or component URI")
    p.add_argument("--json", action="store_true", help="print the whole record as JSON")
    return p


def cmd_delete(args: argparse.Namespace, settings: Settings) -> int:
    kind = _kind(args.kind)

    async def go() -> Any:
        async with Client(settings.socket_path, timeout_s=120) as c:
            return await c.delete(f"/v1/{kind}/{args.id}")

    out = asyncio.run(go())
    if args.json:
        print_json(out)
    else:
        print(f"{kind[:-1]} {args.id} deleted" + (f" ({out['note']})" if out.get("note") else ""))
    return 0


def register_delete(sub: Sub) -> argparse.ArgumentParser:
    p = _add(sub, "delete", "delete a block (its instances stop) or an unused component",
             "Delete a record. A block's instances are stopped and removed first.",
             "examples:\n  aiosd delete block echo-1\n  aiosd delete component model.echo:1.0.0-stable", cmd_delete)
    p.add_argument("kind", help="component or block")
    p.add_argument("id", help="block id or component URI")
    p.add_argument("--json", action="store_true", help="print the answer as JSON")
    return p


# ----- tasks / wait -------------------------------------------------------------------------
def cmd_tasks(args: argparse.Namespace, settings: Settings) -> int:
    async def go() -> Any:
        async with Client(settings.socket_path) as c:
            return await c.get("/v1/tasks")

    out = asyncio.run(go())
    if args.json:
        print_json(out)
        return 0
    print_table(["id", "kind", "target", "state", "error"],
                [[t["id"], t["kind"], t["target"], t["state"], t.get("error") or "-"] for t in out])
    return 0


def register_tasks(sub: Sub) -> argparse.ArgumentParser:
    p = _add(sub, "tasks", "list long operations (apply) and their states",
             "List the tasks of this daemon, newest first.", "examples:\n  aiosd tasks\n  aiosd tasks --json",
             cmd_tasks)
    p.add_argument("--json", action="store_true", help="print as JSON")
    return p


def cmd_wait(args: argparse.Namespace, settings: Settings) -> int:
    async def go() -> Any:
        async with Client(settings.socket_path, timeout_s=args.timeout + 10) as c:
            return await c.post(f"/v1/tasks/{args.task}/wait?timeout_s={args.timeout}")

    t = asyncio.run(go())
    for line in t["progress"]:
        print(f"  {line['message']}")
    print(f"task {t['id']} {t['state']}" + (f": {t['error']}" if t.get("error") else ""))
    return 0 if t["state"] == "succeeded" else 1


def register_wait(sub: Sub) -> argparse.ArgumentParser:
    p = _add(sub, "wait", "wait for a task to finish",
             "Wait until the task is final; exit 0 when it succeeded, 1 otherwise.",
             "examples:\n  aiosd wait t-1a2b3c4d5e6f\n  aiosd wait t-1a2b3c4d5e6f --timeout 300", cmd_wait)
    p.add_argument("task", help="task id (from `aiosd apply --no-wait` or `aiosd tasks`)")
    p.add_argument("--timeout", type=float, default=120, help="seconds to wait (default 120)")
    return p


# ----- infer / mgmt -------------------------------------------------------------------------
def _json_arg(raw: str, what: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError as e:
        raise UsageError(f"{what} is not valid JSON: {e}") from None


def cmd_infer(args: argparse.Namespace, settings: Settings) -> int:
    data = _json_arg(args.data, "--data") if args.data is not None else None
    files = []
    for f in args.file or []:
        p = Path(f)
        if not p.is_file():
            raise UsageError(f"--file {f} does not exist")
        files.append({"metadata": json.dumps({"name": p.name}), "file_data_b64": base64.b64encode(
            p.read_bytes()).decode()})
    body = {"data": data, "files": files, "session_id": args.session or ""}
    if args.block.startswith("vdag:"):
        from aiosd.cli.vdag_cmds import infer_vdag

        return infer_vdag(args, settings, body)

    async def go() -> Any:
        async with Client(settings.socket_path, timeout_s=120) as c:
            return await c.post(f"/v1/infer/block/{args.block}", body)

    out = asyncio.run(go())
    if args.json:
        print_json(out)
        return 0
    for o in out["outputs"]:
        print(json.dumps(o, indent=2))
    return 0


def register_infer(sub: Sub) -> argparse.ArgumentParser:
    p = _add(sub, "infer", "send one task to a block and print its answer",
             "Send a packet to a block: the data is checked against the block's input protocol, a\n"
             "healthy instance is chosen by the load balancer, and the outputs are printed as JSON.",
             "examples:\n  aiosd infer echo-1 --data '{\"message\": \"hello\"}'\n"
             "  aiosd infer echo-1 --data '{}' --file photo.jpg --session s1 --json", cmd_infer)
    p.add_argument("block", help="block id, or vdag:URI for a vDAG")
    p.add_argument("--data", metavar="JSON", help="the packet's data (any JSON value)")
    p.add_argument("--receipts", action="store_true", help="vdag:URI only: print the signed stage receipts too")
    p.add_argument("--file", action="append", metavar="PATH", help="attach a file (repeatable)")
    p.add_argument("--session", metavar="S", help="session id (sticky routing with a session-aware balancer)")
    p.add_argument("--json", action="store_true", help="print the whole answer as JSON")
    return p


def cmd_mgmt(args: argparse.Namespace, settings: Settings) -> int:
    data = _json_arg(args.data, "--data") if args.data else {}
    if not isinstance(data, dict):
        raise UsageError("--data must be a JSON object")
    body = {"service": args.service, "mgmtCommand": args.action, "mgmtData": data}

    async def go() -> Any:
        async with Client(settings.socket_path, timeout_s=120) as c:
            return await c.post(f"/v1/mgmt/block/{args.block}", body)

    print_json(asyncio.run(go()))
    return 0


def register_mgmt(sub: Sub) -> argparse.ArgumentParser:
    p = _add(sub, "mgmt", "send a management command to a block",
             "Management commands: `scale` (mgmtData {instances: N}, within min..max), `setParameters`\n"
             "(reaches on_update on every instance), any other action reaches management() on every\n"
             "instance (answers per instance); --service autoscaler|health talks to the block's policy.",
             "examples:\n  aiosd mgmt echo-1 scale --data '{\"instances\": 2}'\n"
             "  aiosd mgmt echo-1 setParameters --data '{\"prefix\": \">> \"}'\n"
             "  aiosd mgmt echo-1 reset\n  aiosd mgmt echo-1 get_state --service health", cmd_mgmt)
    p.add_argument("block", help="block id")
    p.add_argument("action", help="mgmtCommand")
    p.add_argument("--data", metavar="JSON", help="mgmtData (a JSON object)")
    p.add_argument("--service", default="instances", choices=["instances", "executor", "autoscaler", "health"],
                   help="which service of the block (default instances)")
    p.add_argument("--json", action="store_true", help="accepted for scripts: the answer is always JSON")
    return p


REGISTER = [register_apply, register_get, register_describe, register_delete, register_tasks, register_wait,
            register_infer, register_mgmt]

__all__ = ["REGISTER", "read_spec_text"]
_ = AiosdError  # errors raised by the client are AiosdError subclasses, printed by aiosd.cli.main
