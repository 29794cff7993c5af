"""`aiosd apply | describe | delete | tasks | wait | infer | mgmt`: specs in, answers out.

Everything goes through the daemon's API (aiosd.cli.http); this module only reads files,
shapes requests and prints answers. `aiosd get` and the record names are registry_cmds' and tables'.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import sys
import urllib.parse
from pathlib import Path
from typing import Any

from aiosd.cli import tables
from aiosd.cli.common import Env, Handler, Sub, command, json_arg, q
from aiosd.cli.output import print_json, print_table
from aiosd.errors import ApiError, UsageError

FINAL = ("succeeded", "failed", "interrupted")
APPLY_TIMEOUT_S = 600.0


def _add(sub: Sub, name: str, help_: str, description: str, epilog: str, handler: Handler) -> argparse.ArgumentParser:
    return command(sub, name, help_, description, epilog, handler, json_help=None)


def _catalog_kind(raw: str) -> str:
    kind = tables.canonical(raw)
    if kind not in tables.CATALOG:
        raise UsageError(f"unknown kind {raw!r}; use one of: component, block")
    return kind


def _split(text: str, where: str) -> list[Any]:
    """The JSON documents of TEXT (one or more, or one top-level array of them). Raises UsageError."""
    decoder = json.JSONDecoder()
    docs: list[Any] = []
    pos, n = 0, len(text)
    while True:
        while pos < n and text[pos] in " \t\r\n\ufeff":
            pos += 1
        if pos >= n:
            break
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise UsageError(f"{where}: document {len(docs) + 1} is not valid JSON: {e.msg} at line {e.lineno} "
                             f"column {e.colno}") from None
        whole = not text[pos:].strip()
        docs.extend(obj if isinstance(obj, list) and not docs and whole else [obj])
    if not docs:
        raise UsageError(f"{where} holds no JSON document")
    return docs


def read_spec_documents(path: str) -> list[tuple[str, Any]]:
    """(file, document) for FILE, every *.json in DIR (sorted, components first), or stdin ('-')."""
    if path == "-":
        return [("stdin", d) for d in _split(sys.stdin.read(), "stdin")]
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.json"), key=lambda f: (0 if "component" in f.name else 1, f.name))
        if not files:
            raise UsageError(f"{path} holds no *.json files")
    elif p.is_file():
        files = [p]
    else:
        raise UsageError(f"{path} does not exist")
    out: list[tuple[str, Any]] = []
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read {f} ({e})") from None
        out += [(str(f), d) for d in _split(text, str(f))]
    return out


def _name_files(e: ApiError, origins: list[str]) -> ApiError:
    """The daemon names `documents[i]`; say which file document i came from."""
    def where(m: re.Match[str]) -> str:
        i = int(m.group(1))
        return f"{m.group(0)} (in {origins[i]})" if 0 <= i < len(origins) else m.group(0)

    message = re.sub(r"documents\[(\d+)\]", where, str(e), count=1)
    return ApiError(e.status, e.code, message)


# ----- apply --------------------------------------------------------------------------------
def _apply_query(args: argparse.Namespace) -> str:
    query = []
    if args.dry_run:
        query.append("dry_run=1")
    if args.aios_example_overrides:
        query.append("policy_overrides=aios-examples")
    if args.cluster_wide:
        query.append("cluster=1")
    if args.spec_uri:
        query.append("specUri=" + urllib.parse.quote(args.spec_uri, safe=""))
    return "/v1/apply" + ("?" + "&".join(query) if query else "")


def _print_documents(out: dict[str, Any], dry_run: bool) -> None:
    for d in out["documents"]:
        print(f"{d['kind']} {d['id']} {d['action']}")
        if d["kind"] == "vdag":
            from aiosd.cli.vdag_cmds import print_vdag_doc

            print_vdag_doc(d)
        elif d["kind"] == "block" and d["placement"].get("cluster") and not dry_run:
            for inst in d["placement"].get("placements", []):
                gpus = ",".join(map(str, inst.get("gpus", []))) or "-"
                print(f"  {inst['instance_id']} -> node {inst['node_id']} (gpus {gpus})")
        elif dry_run and d["kind"] == "block":
            pl = d["placement"]
            print(f"  placement: {len(pl['placements'])}/{pl['requested']} instance(s), "
                  f"score {pl['score']:.2f}, policy {pl['policy']}")
            for cand in pl["candidates"]:
                print(f"  candidate {cand['node_id']}: score {cand['score']:.2f} capacity {cand['capacity']}"
                      + (f" ({cand['reason']})" if cand["reason"] else ""))
    for w in out.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)


def cmd_apply(args: argparse.Namespace, env: Env) -> int:
    if bool(args.file) == bool(args.spec_uri):
        raise UsageError("give documents with -f FILE|DIR|- or a stored spec with --spec-uri URI (one of them)")
    docs = [pair for f in args.file for pair in read_spec_documents(f)] if args.file else []
    origins = [f for f, _ in docs]
    raw = json.dumps([d for _, d in docs]).encode() if docs else b""
    try:
        out = env.call("POST", _apply_query(args), raw=raw, timeout_s=APPLY_TIMEOUT_S)
    except ApiError as e:
        raise _name_files(e, origins) from None
    if not env.json:
        _print_documents(out, args.dry_run)
    task = out.get("task")
    if task is None or args.no_wait:
        if env.json:
            print_json(out)
        elif task is not None:
            print(f"task {task['id']} started (aiosd wait {task['id']})")
        return 0
    t = _follow_task(env, task["id"], show=not env.json)
    out["task"] = t
    if env.json:
        print_json(out)
    if t["state"] != "succeeded":
        if not env.json:
            print(f"aiosd: error: task {t['id']} {t['state']}: {t.get('error')}", file=sys.stderr)
        return 1
    if not env.json:
        print("ready")
    return 0


def _follow_task(env: Env, task_id: str, *, show: bool) -> Any:
    """Long-poll the task until it is final, printing new progress lines."""
    api = env.api(timeout_s=30)
    seen = 0
    while True:
        t = api.post(f"/v1/tasks/{q(task_id)}/wait?timeout_s=1")
        if show:
            for line in t["progress"][seen:]:
                print(f"  {line['message']}", flush=True)
        seen = len(t["progress"])
        if t["state"] in FINAL:
            return t


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


# ----- delete -------------------------------------------------------------------------------
def cmd_delete(args: argparse.Namespace, env: Env) -> int:
    if tables.canonical(args.kind) == "vdags":
        out = env.call("DELETE", f"/v1/vdags/{urllib.parse.quote(args.id, safe=':')}", timeout_s=120)
        return env.show(out, lambda _: print(f"vdag {args.id} deleted"))
    kind = _catalog_kind(args.kind)
    out = env.call("DELETE", f"/v1/{kind}/{q(args.id)}", timeout_s=120)
    note = f" ({out['note']})" if out.get("note") else ""
    return env.show(out, lambda _: print(f"{kind[:-1]} {args.id} deleted{note}"))


def register_delete(sub: Sub) -> argparse.ArgumentParser:
    p = _add(sub, "delete", "delete a block (its instances stop) or an unused component",
             "Delete a record. A block's instances are stopped and removed first.",
             "examples:\n  aiosd delete block echo-1\n  aiosd delete component model.echo:1.0.0-stable", cmd_delete)
    p.add_argument("kind", help="component, block or vdag")
    p.add_argument("id", help="block id or component URI")
    p.add_argument("--json", action="store_true", help="print the answer as JSON")
    return p


# ----- tasks / wait -------------------------------------------------------------------------
def cmd_tasks(args: argparse.Namespace, env: Env) -> int:
    return env.show(env.get("/v1/tasks"), lambda out: print_table(
        ["id", "kind", "target", "state", "error"],
        [[t["id"], t["kind"], t["target"], t["state"], t.get("error") or "-"] for t in out]))


def register_tasks(sub: Sub) -> argparse.ArgumentParser:
    p = _add(sub, "tasks", "list long operations (apply) and their states",
             "List the tasks of this daemon, newest first.", "examples:\n  aiosd tasks\n  aiosd tasks --json",
             cmd_tasks)
    p.add_argument("--json", action="store_true", help="print as JSON")
    return p


def cmd_wait(args: argparse.Namespace, env: Env) -> int:
    t = env.call("POST", f"/v1/tasks/{q(args.task)}/wait?timeout_s={args.timeout}", timeout_s=args.timeout + 10)
    if env.json:
        print_json(t)
    else:
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
def cmd_infer(args: argparse.Namespace, env: Env) -> int:
    data = json_arg(args.data, "--data")
    files = []
    for f in args.file or []:
        p = Path(f)
        if not p.is_file():
            raise UsageError(f"--file {f} does not exist")
        files.append({"metadata": json.dumps({"name": p.name}), "file_data_b64": base64.b64encode(
            p.read_bytes()).decode()})
    if args.block.startswith("vdag:"):  # the vDAG entry takes the data as a JSON value
        from aiosd.cli.vdag_cmds import infer_vdag

        return infer_vdag(args, env, {"data": data, "files": files, "session_id": args.session or ""})
    # `data` travels as JSON text (as in an AIOSPacket), so any JSON value means what it says.
    body = {"data": json.dumps(data) if args.data is not None else "", "files": files,
            "session_id": args.session or ""}
    out = env.call("POST", f"/v1/infer/block/{q(args.block)}", body, timeout_s=120)
    for w in out.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    return env.show(out, lambda o: [print(json.dumps(x, indent=2)) for x in o["outputs"]])


def register_infer(sub: Sub) -> argparse.ArgumentParser:
    p = _add(sub, "infer", "send one task to a block and print its answer",
             "Send a packet to a block: the data is checked against the block's input protocol, a\n"
             "healthy instance is chosen by the load balancer, and the outputs are printed as JSON.",
             "examples:\n  aiosd infer echo-1 --data '{\"message\": \"hello\"}'\n"
             "  aiosd infer echo-1 --data '\"hi\"'                    # any JSON value\n"
             "  aiosd infer text-stats-1 --data @big.json            # from a file\n"
             "  jq -n '{text: \"...\"}' | aiosd infer text-stats-1 --data -\n"
             "  aiosd infer echo-1 --data '{}' --file photo.jpg --session s1 --json\n"
             "A field the block's input protocol marks required must be there (else exit 2); optional ones\n"
             "it names but the data leaves out are reported as warnings on stderr.", cmd_infer)
    p.add_argument("block", help="block id, or vdag:URI for a vDAG")
    p.add_argument("--data", metavar="JSON|@FILE|-",
                   help="the packet's data: any JSON value, inline, from @FILE, or - for stdin")
    p.add_argument("--receipts", action="store_true", help="vdag:URI only: print the signed stage receipts too")
    p.add_argument("--file", action="append", metavar="PATH", help="attach a file (repeatable)")
    p.add_argument("--session", metavar="S", help="session id (sticky routing with a session-aware balancer)")
    p.add_argument("--json", action="store_true", help="print the whole answer as JSON")
    return p


def _failed_instances(out: Any) -> list[str]:
    """Instances whose answer is an error: `ok: false`, or an AIOS `{"status": "error"}` result."""
    bad = []
    for iid, ans in (out.get("instances") or {}).items() if isinstance(out, dict) else []:
        result = ans.get("result") if isinstance(ans, dict) else None
        if not isinstance(ans, dict) or ans.get("ok") is False or (
                isinstance(result, dict) and result.get("status") == "error"):
            bad.append(iid)
    return bad


def cmd_mgmt(args: argparse.Namespace, env: Env) -> int:
    data = json_arg(args.data, "--data", want_object=True) or {}
    body = {"service": args.service, "mgmtCommand": args.action, "mgmtData": data}
    out = env.call("POST", f"/v1/mgmt/block/{q(args.block)}", body, timeout_s=120)
    print_json(out)
    bad = _failed_instances(out)
    if bad:
        print(f"aiosd: error: {args.action!r} failed on {len(bad)} instance(s): {', '.join(sorted(bad))}",
              file=sys.stderr)
        return 1
    return 0


def register_mgmt(sub: Sub) -> argparse.ArgumentParser:
    p = _add(sub, "mgmt", "send a management command to a block",
             "Management commands: `scale` (mgmtData {instances: N}, within min..max), `setParameters`\n"
             "(reaches on_update on every instance), any other action reaches management() on every\n"
             "instance (answers per instance); --service autoscaler|health talks to the block's policy.\n"
             "Exits 1 when an instance answers with an error (an unknown action, for example).",
             "examples:\n  aiosd mgmt echo-1 scale --data '{\"instances\": 2}'\n"
             "  aiosd mgmt echo-1 setParameters --data '{\"prefix\": \">> \"}'\n"
             "  aiosd mgmt echo-1 reset\n  aiosd mgmt echo-1 get_state --service health", cmd_mgmt)
    p.add_argument("block", help="block id")
    p.add_argument("action", help="mgmtCommand")
    p.add_argument("--data", metavar="JSON|@FILE|-", help="mgmtData (a JSON object, inline, @FILE or -)")
    p.add_argument("--service", default="instances", choices=["instances", "executor", "autoscaler", "health"],
                   help="which service of the block (default instances)")
    p.add_argument("--json", action="store_true", help="accepted for scripts: the answer is always JSON")
    return p


REGISTER = [register_apply, register_delete, register_tasks, register_wait, register_infer,
            register_mgmt]

__all__ = ["REGISTER", "read_spec_documents"]
