"""`aiosd policy push|list|describe|delete|run|mgmt`, `aiosd template push|list`, `aiosd spec push|list`.

Archives are packed here (a directory becomes a deterministic tar.gz) and sent as bytes; every
check (archive shape, manifest, signature) happens in the daemon.
"""

from __future__ import annotations

import argparse
import json
import urllib.parse
from pathlib import Path
from typing import Any

from aiosd.cli.common import Env, Handler, Sub, command, json_arg
from aiosd.cli.common import q as _q
from aiosd.cli.output import print_json, print_kv, print_table
from aiosd.errors import UsageError

_TIMEOUT_S = 60.0


def _json_arg(text: str | None, flag: str) -> Any:
    return json_arg(text, flag, want_object=True)


def _read_doc(path: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except OSError as e:
        raise UsageError(f"cannot read {path} ({e.strerror})") from None
    except ValueError as e:
        raise UsageError(f"{path} is not valid JSON ({e})") from None


# ----- policy --------------------------------------------------------------------------------
def cmd_push(args: argparse.Namespace, env: Env) -> int:
    from aiosd.policies.archive import pack_dir
    from aiosd.policies.errors import PolicyArchiveError

    src = Path(args.path)
    try:
        data = pack_dir(src) if src.is_dir() else src.read_bytes()
    except PolicyArchiveError as e:
        raise UsageError(str(e)) from None
    except OSError as e:
        raise UsageError(f"cannot read {src} ({e.strerror})") from None
    query = {"uri": args.uri}
    if args.description is not None:
        query["description"] = args.description
    if args.tags is not None:
        query["tags"] = args.tags
    rec = env.call("POST", "/v1/policies?" + urllib.parse.urlencode(query), raw=data,
                   content_type="application/octet-stream", timeout_s=_TIMEOUT_S)
    return env.show(rec, lambda r: print(f"published {r['uri']} (sha256 {r['archive_sha256'][:16]}, "
                                         f"{r['archive_size']} bytes, signed by {r['publisher']})"))


def cmd_list(args: argparse.Namespace, env: Env) -> int:
    found = env.get("/v1/policies", timeout_s=_TIMEOUT_S)
    rows = [r for r in found["policies"] if args.all or r["source"] == "published"]

    def human(_: object) -> None:
        print_table(["uri", "source", "sha256", "publisher", "description"],
                    [[r["uri"], r["source"], (r.get("archive_sha256") or "-")[:12], r.get("publisher") or "-",
                      (r.get("description") or "")[:50]] for r in rows])

    return env.show({"policies": rows}, human)


def cmd_describe(args: argparse.Namespace, env: Env) -> int:
    rec = env.get("/v1/policies/" + _q(args.uri), timeout_s=_TIMEOUT_S)

    def human(_: object) -> None:
        pairs = [(k, json.dumps(v) if isinstance(v, dict | list) else v) for k, v in rec.items() if k != "signature"]
        print_kv(pairs)

    return env.show(rec, human)


def cmd_delete(args: argparse.Namespace, env: Env) -> int:
    out = env.call("DELETE", "/v1/policies/" + _q(args.uri), timeout_s=_TIMEOUT_S)
    return env.show(out, lambda _: print(f"deleted {out['deleted']}"))


def cmd_run(args: argparse.Namespace, env: Env) -> int:
    body: dict[str, Any] = {"input": _json_arg(args.input, "--input") or {}}
    for key in ("parameters", "settings"):
        v = _json_arg(getattr(args, key), f"--{key}")
        if v is not None:
            body[key] = v
    if args.timeout is not None:
        body["timeout_s"] = args.timeout
    out = env.call("POST", f"/v1/policies/{_q(args.uri)}/run", body, timeout_s=_TIMEOUT_S)
    return env.show(out, lambda o: print_json(o["result"]))


def cmd_mgmt(args: argparse.Namespace, env: Env) -> int:
    body: dict[str, Any] = {"action": args.action, "data": _json_arg(args.data, "--data") or {}}
    for key in ("parameters", "settings"):
        v = _json_arg(getattr(args, key), f"--{key}")
        if v is not None:
            body[key] = v
    out = env.call("POST", f"/v1/policies/{_q(args.uri)}/management", body, timeout_s=_TIMEOUT_S)
    return env.show(out, lambda o: print_json(o["result"]))


# ----- template / spec -----------------------------------------------------------------------
def cmd_template_push(args: argparse.Namespace, env: Env) -> int:
    rec = env.call("POST", "/v1/templates", _read_doc(args.file), timeout_s=_TIMEOUT_S)
    return env.show(rec, lambda _: print(f"stored template {rec['templateUri']} (policy {rec['templatePolicyRuleUri']})"))


def cmd_template_list(args: argparse.Namespace, env: Env) -> int:
    found = env.get("/v1/templates", timeout_s=_TIMEOUT_S)

    def human(_: object) -> None:
        print_table(["template", "policy", "name"],
                    [[t["templateUri"], t["templatePolicyRuleUri"], t.get("templateName", "")] for t in found["templates"]])

    return env.show(found, human)


def cmd_spec_push(args: argparse.Namespace, env: Env) -> int:
    doc = _read_doc(args.file)
    if isinstance(doc, dict) and "specData" in doc:
        rec = dict(doc)
        if args.uri:
            rec["specUri"] = args.uri
    else:
        if not args.uri:
            raise UsageError("--uri is required when FILE is a plain spec document")
        rec = {"specUri": args.uri, "specType": args.type, "specData": doc,
               "specName": args.uri.split(":", 1)[0], "specDescription": args.description or ""}
    out = env.call("POST", "/v1/specs", rec, timeout_s=_TIMEOUT_S)
    return env.show(out, lambda _: print(f"stored spec {out['specUri']} ({out['specType']})"))


def cmd_spec_list(args: argparse.Namespace, env: Env) -> int:
    found = env.get("/v1/specs", timeout_s=_TIMEOUT_S)

    def human(_: object) -> None:
        print_table(["spec", "type", "description"],
                    [[s["specUri"], s["specType"], s.get("specDescription", "")[:60]] for s in found["specs"]])

    return env.show(found, human)


# ----- governance ----------------------------------------------------------------------------
def cmd_gov_show(args: argparse.Namespace, env: Env) -> int:
    found = env.get("/v1/governance", timeout_s=_TIMEOUT_S)

    def human(_: object) -> None:
        print_table(["action", "policy"], sorted(found["actionsPolicyMap"].items()))

    return env.show(found, human)


def _gov_update(env: Env, action: str, uri: str | None) -> dict[str, Any]:
    mapping = dict(env.get("/v1/governance")["actionsPolicyMap"])
    if uri is None:
        if mapping.pop(action, None) is None:
            raise UsageError(f"no pre-check policy is set for {action}")
    else:
        mapping[action] = uri
    result: dict[str, Any] = env.call("PUT", "/v1/governance", {"actionsPolicyMap": mapping})
    return result


def cmd_gov_set(args: argparse.Namespace, env: Env) -> int:
    out = _gov_update(env, args.action, args.uri)
    return env.show(out, lambda _: print(f"{args.action} is now pre-checked by {args.uri}"))


def cmd_gov_unset(args: argparse.Namespace, env: Env) -> int:
    out = _gov_update(env, args.action, None)
    return env.show(out, lambda _: print(f"{args.action} has no pre-check policy now"))


def cmd_gov_check(args: argparse.Namespace, env: Env) -> int:
    body = {"action": args.action, "payload": _json_arg(args.payload, "--payload") or {}}
    out = env.call("POST", "/v1/governance/precheck", body, timeout_s=_TIMEOUT_S)
    return env.show(out, lambda o: print_json(o["payload"]))


# ----- registration --------------------------------------------------------------------------
def _leaf(isub: Sub, name: str, help_: str, description: str, epilog: str, handler: Handler) -> argparse.ArgumentParser:
    return command(isub, name, help_, description, epilog, handler, json_help="print the answer as JSON")


def register_policy(sub: Sub) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "policy", help="publish, inspect and dry-run policies",
        description="Policies are Python code (code/function.py, class AIOSv1PolicyRule) that decide allocation,\n"
                    "load balancing, scaling, health, pre-checks... Published policies run in the sandbox.",
        epilog="examples:\n  aiosd policy push examples/policies/least-busy --uri policy.loadBalancer.least-busy:v1-stable\n"
               "  aiosd policy run policy.loadBalancer.least-busy:v1-stable --input '{\"instances\": []}'",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ps = p.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    k = _leaf(ps, "push", "publish a policy directory or archive",
              "Pack DIR (code/function.py [+ code/requirements.txt, wheels] [+ policy.json]) or send ARCHIVE\n"
              "(zip/tar); the daemon stores it content-addressed, signs the record and registers it.",
              "examples:\n  aiosd policy push examples/policies/least-busy --uri policy.loadBalancer.least-busy:v1-stable\n"
              "  aiosd policy push build/p.zip --uri my.policy:v2-beta --tags lb,test --json", cmd_push)
    k.add_argument("path", metavar="DIR|ARCHIVE")
    k.add_argument("--uri", required=True, help="name:version-tag")
    k.add_argument("--description", help="overrides policy.json's description")
    k.add_argument("--tags", help="comma-separated tags (override policy.json's)")
    ls = _leaf(ps, "list", "list published policies", "List published policies (--all adds the built-ins).",
               "examples:\n  aiosd policy list\n  aiosd policy list --all --json", cmd_list)
    ls.add_argument("--all", action="store_true", help="include built-in policies")
    d = _leaf(ps, "describe", "show one policy record", "Show a policy's record: schemas, defaults, archive, "
              "publisher, running instances.", "example:\n  aiosd policy describe my.policy:v1-stable", cmd_describe)
    d.add_argument("uri")
    rm = _leaf(ps, "delete", "delete a published policy", "Delete a published policy and stop its workers.",
               "example:\n  aiosd policy delete my.policy:v1-stable", cmd_delete)
    rm.add_argument("uri")
    r = _leaf(ps, "run", "dry-run a policy on an input",
              "Evaluate a policy once on --input (JSON, or @FILE). --parameters/--settings override the\n"
              "stored defaults. Custom policies run in the sandbox; errors name what went wrong.",
              "examples:\n  aiosd policy run my.policy:v1-stable --input '{\"instances\": [{\"id\": \"a\"}]}'\n"
              "  aiosd policy run my.policy:v1-stable --input @in.json --parameters '{\"k\": 2}' --json", cmd_run)
    r.add_argument("uri")
    r.add_argument("--input", required=True, help="input_data as JSON or @FILE")
    r.add_argument("--parameters", help="parameters (JSON or @FILE)")
    r.add_argument("--settings", help="settings (JSON or @FILE)")
    r.add_argument("--timeout", type=float, help="seconds (at most the sandbox's limit)")
    m = _leaf(ps, "mgmt", "send a management command to a policy",
              "Call management(ACTION, --data) on the policy instance with that configuration (stateful).",
              "example:\n  aiosd policy mgmt my.policy:v1-stable get_config", cmd_mgmt)
    m.add_argument("uri")
    m.add_argument("action")
    m.add_argument("--data", help="JSON or @FILE")
    m.add_argument("--parameters", help="JSON or @FILE")
    m.add_argument("--settings", help="JSON or @FILE")
    return p


def register_template(sub: Sub) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "template", help="store and list spec templates",
        description="A template links a templateUri to a policy that converts specs written for it into\n"
                    "Parser/V1 documents.",
        epilog="examples:\n  aiosd template push examples/policies/short-block/template.json\n  aiosd template list",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ts = p.add_subparsers(dest="template_command", metavar="ACTION", required=True)
    k = _leaf(ts, "push", "store a template (AIOS TemplateObject JSON)",
              "Store FILE: {templateUri, templatePolicyRuleUri, templateName, ...}; the policy must exist.",
              "example:\n  aiosd template push template.json --json", cmd_template_push)
    k.add_argument("file")
    _leaf(ts, "list", "list templates", "List stored templates.", "example:\n  aiosd template list --json",
          cmd_template_list)
    return p


def register_spec(sub: Sub) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "spec", help="store and list reusable specs (spec store)",
        description="The spec store keeps validated specs by URI (name:version-tag) for later apply.",
        epilog="examples:\n  aiosd spec push block.json --uri blocks.echo:v1-stable\n  aiosd spec list",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ss = p.add_subparsers(dest="spec_command", metavar="ACTION", required=True)
    k = _leaf(ss, "push", "store a spec",
              "Store FILE (a spec document, or a SpecStoreObject with specData). The spec is converted\n"
              "through its template when it has one and validated before it is stored.",
              "examples:\n  aiosd spec push block.json --uri blocks.echo:v1-stable --type block\n"
              "  aiosd spec push store-object.json", cmd_spec_push)
    k.add_argument("file")
    k.add_argument("--uri", help="name:version-tag")
    k.add_argument("--type", default="block",
                   choices=["block", "vdag", "cluster", "component", "search", "mgmtCommand", "node"])
    k.add_argument("--description")
    _leaf(ss, "list", "list stored specs", "List the spec store.", "example:\n  aiosd spec list --json",
          cmd_spec_list)
    return p


def register_governance(sub: Sub) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "governance", help="pre-check policies per mutating action (actionsPolicyMap)",
        description="A pre-check policy runs before a mutating action (add_node, remove_node, add_block,\n"
                    "remove_block, scale_block, block_mgmt, ...) and may veto it or rewrite its payload.",
        epilog="examples:\n  aiosd governance set add_block gov.blocks:v1-stable\n  aiosd governance show\n"
               "  aiosd governance check add_block --payload '{\"name\": \"b1\"}'",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    gs = p.add_subparsers(dest="governance_command", metavar="ACTION", required=True)
    _leaf(gs, "show", "show the actionsPolicyMap", "Show which policy pre-checks each action.",
          "example:\n  aiosd governance show --json", cmd_gov_show)
    k = _leaf(gs, "set", "pre-check ACTION with policy URI", "Map ACTION to a policy (it must exist).",
              "example:\n  aiosd governance set add_block gov.blocks:v1-stable", cmd_gov_set)
    k.add_argument("action")
    k.add_argument("uri")
    u = _leaf(gs, "unset", "stop pre-checking ACTION", "Remove ACTION from the map.",
              "example:\n  aiosd governance unset add_block", cmd_gov_unset)
    u.add_argument("action")
    c = _leaf(gs, "check", "dry-run the pre-check of ACTION on a payload",
              "Run ACTION's pre-check on --payload and print the (possibly rewritten) payload, or the veto.",
              "example:\n  aiosd governance check add_block --payload '{\"maxInstances\": 9}'", cmd_gov_check)
    c.add_argument("action")
    c.add_argument("--payload", help="JSON or @FILE")
    return p


REGISTER = [register_policy, register_template, register_spec, register_governance]

__all__ = ["REGISTER"]
