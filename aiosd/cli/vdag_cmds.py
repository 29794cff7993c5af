"""`aiosd vdag list|describe|delete|verify`, and the vDAG halves of `apply`, `infer`, `describe`, `delete`.

`aiosd apply -f vdag.json` goes through the normal apply path (createvDAG documents are handed to
the vdag role); `aiosd infer vdag:URI` and `aiosd describe|delete vdag URI` land here.
`aiosd vdag verify FILE` checks a saved receipt chain offline, with the network CA of this node's
data dir (or --ca-public HEX): no daemon needed.
"""

from __future__ import annotations

import argparse
import json
import urllib.parse
from pathlib import Path
from typing import Any

from aiosd.cli.common import Env, Sub, command
from aiosd.cli.output import print_json, print_kv, print_table
from aiosd.errors import AiosdError, UsageError


def _q(uri: str) -> str:
    return urllib.parse.quote(uri, safe=":")


def print_vdag_doc(d: dict[str, Any]) -> None:
    """One vDAG line of `aiosd apply`: its status, assignment and compiled graph."""
    g = d.get("graph") or {}
    print(f"  status {d.get('status')}; heads {', '.join(g.get('heads', []))}; tails {', '.join(g.get('tails', []))}")
    for label, s in (g.get("stages") or {}).items():
        print(f"  {label} -> block {s['block_id']}" + (f" -> {', '.join(s['children'])}" if s["children"] else ""))


def infer_vdag(args: argparse.Namespace, env: Env, body: dict[str, Any]) -> int:
    uri = args.block.removeprefix("vdag:")
    path = f"/v1/infer/vdag/{_q(uri)}" + ("?receipts=1" if getattr(args, "receipts", False) else "")
    out = env.post(path, body, timeout_s=600)
    if env.json or getattr(args, "receipts", False):
        print_json(out)
        return 0
    for o in out["outputs"]:
        print(json.dumps(o, indent=2))
    return 0


def print_describe(r: dict[str, Any]) -> None:
    m = r.get("metrics") or {}
    print_kv([("uri", r["uri"]), ("status", r.get("status")), ("health", r.get("health")),
              ("heads", ", ".join((r.get("graph") or {}).get("heads", []))),
              ("tails", ", ".join((r.get("graph") or {}).get("tails", []))),
              ("requests", m.get("requests", 0)), ("latency p50 ms", (m.get("latency_ms") or {}).get("p50"))])
    print_table(["STAGE", "BLOCK", "NEXT", "SERVED BY"],
                [[s["label"], s["block_id"], ",".join(s["children"]) or "-",
                  ",".join(sorted({x["node"] for x in s["serving"]})) or "(none: degraded)"] for s in r["stages"]])
    for t in (r.get("trace") or [])[-1:]:
        print("last task: " + " -> ".join(f"{h['label']}@{h['node']}" for h in t))


def cmd_vdag(args: argparse.Namespace, env: Env) -> int:
    if args.action == "verify":
        return _verify(args, env)
    if args.action == "list":
        out = env.get("/v1/vdags")
        if env.json:
            print_json(out)
        else:
            print_table(["URI", "STATUS", "STAGES"], [[r["uri"], r["status"], r["stages"]] for r in out["items"]])
        return 0
    if not args.uri:
        raise UsageError(f"aiosd vdag {args.action} needs a vDAG URI")
    if args.action == "describe":
        return env.show(env.get(f"/v1/vdags/{_q(args.uri)}"), print_describe)
    out = env.call("DELETE", f"/v1/vdags/{_q(args.uri)}")
    return env.show(out, lambda _: print(f"vdag {args.uri} deleted"))


def _verify(args: argparse.Namespace, env: Env) -> int:
    import base64
    import binascii

    from aiosd.identity_files import load_identity
    from aiosd.vdag.receipts import ReceiptError, verify_chain

    if not args.uri:
        raise UsageError("aiosd vdag verify needs FILE (the JSON answer of `aiosd infer vdag:URI --receipts`)")
    try:
        doc = json.loads(Path(args.uri).read_text())
        raw = doc.get("receipts") if isinstance(doc, dict) else doc
        chain = [base64.b64decode(r, validate=True) for r in (raw or [])]
    except (OSError, ValueError, TypeError, binascii.Error) as e:
        raise UsageError(f"{args.uri}: not a saved receipt chain ({e})") from None
    if not chain:
        raise UsageError(f"{args.uri}: holds no receipts")
    ca = bytes.fromhex(args.ca_public) if args.ca_public else load_identity(env.data_dir).network.ca_public
    try:
        got = verify_chain(chain, ca)
    except ReceiptError as e:
        raise AiosdError(f"receipt chain refused: {e}") from None
    if env.json:
        print_json({"valid": True, "receipts": [r.to_json() for r in got]})
    else:
        for r in got:
            print(f"ok  {r.label:<20} block {r.block} instance {r.instance} node {r.node}")
        print(f"valid: {len(got)} receipt(s), signed by {len({r.node for r in got})} node(s) of this network")
    return 0


def register_vdag(sub: Sub) -> argparse.ArgumentParser:
    p = command(sub, "vdag", "vDAGs: list, describe, delete, verify a receipt chain",
                "vDAGs are applied with `aiosd apply -f vdag.json` and run with `aiosd infer vdag:URI`.",
                "examples:\n  aiosd vdag list\n  aiosd vdag describe text-pipeline:1.0-stable\n"
                "  aiosd infer vdag:text-pipeline:1.0-stable --data '{\"text\": \"hi\"}' --receipts > out.json\n"
                "  aiosd vdag verify out.json\n  aiosd vdag delete text-pipeline:1.0-stable", cmd_vdag)
    p.add_argument("action", choices=["list", "describe", "delete", "verify"])
    p.add_argument("uri", nargs="?", metavar="URI|FILE", help="vDAG URI (describe, delete) or receipts file (verify)")
    p.add_argument("--ca-public", metavar="HEX", help="verify: the network CA's public key (default: this data dir's)")
    return p


REGISTER = [register_vdag]

__all__ = ["REGISTER", "infer_vdag", "print_describe", "print_vdag_doc"]
