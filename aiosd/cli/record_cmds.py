"""`aiosd get | describe | watch | registry`: records by one set of names (aiosd.cli.tables).

`blocks` and `components` are this node's catalog, `nodes` the membership view, every other name
a replicated registry table; `--registry` reads the replicated table of the same name instead.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.parse
from pathlib import Path
from typing import Any

from aiosd.cli import tables
from aiosd.cli.common import Env, Sub, command, q
from aiosd.cli.output import print_json, print_kv, print_table
from aiosd.errors import ApiError, UsageError

WATCH_POLL_S = 1.0  # how often `watch` re-reads a name the registry's event stream does not carry
MAX_WATCH_POLLS = 10_000_000  # bounded loop: ~115 days at 1 s


def load_filter(text: str) -> Any:
    """A filter given as inline JSON or as a path to a JSON file."""
    src = text
    if not text.lstrip().startswith(("{", "[")):
        p = Path(text)
        if not p.is_file():
            raise UsageError(f"--filter: {text!r} is neither JSON nor a readable file")
        src = p.read_text()
    try:
        return json.loads(src)
    except ValueError as e:
        raise UsageError(f"--filter: not valid JSON: {e}") from None


def short(v: Any, width: int = 60) -> str:
    s = json.dumps(v, separators=(",", ":"), sort_keys=True)
    return s if len(s) <= width else s[: width - 1] + "…"


def component_image(rec: Any) -> str:
    try:
        return str(rec["document"]["body"]["spec"]["values"]["containerRegistryInfo"]["containerImage"])
    except (KeyError, TypeError):
        return "-"


def show_nodes(out: Any) -> None:
    rows = [[("* " if n["self"] else "  ") + n["node_id"], n["addr"], "revoked" if n["revoked"] else n["state"],
             n["cluster"], ",".join(n["roles"]) + (",ca" if n["ca"] else "")] for n in out["nodes"]]
    print_table(["node", "address", "state", "cluster", "roles"], rows)


def _show_blocks(items: list[Any], wide: bool) -> None:
    headers = ["id", "component", "instances", "healthy", "min", "max"] + (["policies", "code"] if wide else [])
    rows = []
    for r in items:
        st = r.get("status", {})
        n = st["instances"] if isinstance(st.get("instances"), int) else len(st.get("instances", []))
        row = [r["id"], r["componentUri"], f"{n}/{r.get('desiredInstances', '?')}", st.get("healthy", 0),
               r["minInstances"], r["maxInstances"]]
        if wide:
            code = r.get("code", {})
            row += [",".join(f"{k}={v['policyRuleURI']}" for k, v in r["policies"].items()) or "-",
                    code.get("image") or code.get("blockDir") or "-"]
        rows.append(row)
    print_table(headers, rows)


# ----- reading one name ----------------------------------------------------------------------------
def read(env: Env, name: str, key: str | None, *, registry: bool = False, filter_: Any = None,
         local: bool = False) -> Any:
    """The answer for NAME (and KEY) from where NAME lives. Raises ApiError, UsageError."""
    src = tables.source(name, registry=registry or filter_ is not None, local=local)
    if src == "catalog":
        return env.get(f"/v1/{name}/{q(key)}" if key else f"/v1/{name}?full=1")
    if src == "network":
        return _read_network(env, name, key)
    if src == "members":
        out = env.get("/v1/nodes")
        if key is None:
            return out
        for n in out["nodes"]:
            if n["node_id"] == key or n["node_id"].startswith(key):
                return n
        raise ApiError(404, "not_found", f"no node {key!r} (see `aiosd get nodes`)", "id")
    if key:
        return env.get(f"/v1/registry/{name}/{q(key)}")
    if filter_ is not None:
        return env.post(f"/v1/registry/{name}/query", filter_)
    return env.get(f"/v1/registry/{name}")


def _read_network(env: Env, name: str, key: str | None) -> Any:
    """Blocks/components as the network holds them: one key is this node's catalog record (with live
    status) where this node has it, else the network's record; a list is `{"items": [{key, ...record}]}`."""
    if key:
        try:
            return env.get(f"/v1/{name}/{q(key)}")
        except ApiError as e:
            if e.status != 404:
                raise
        return env.get(f"/v1/registry/{name}/{q(key)}")["value"]
    out = env.get(f"/v1/registry/{name}")
    return {"items": [{"key": i["key"], **i["value"]} for i in out["items"]]}


def _show_network_blocks(items: list[Any], wide: bool) -> None:
    headers = ["id", "component", "cluster", "placement", "nodes", "healthy", "desired"]
    rows = [[v.get("id", v.get("key")), v.get("componentUri", "-"), v.get("cluster", "-"), v.get("placement", "-"),
             ",".join(n[:12] for n in v.get("nodes", [])) or "-", v.get("status", {}).get("healthy", 0),
             v.get("desiredInstances", "-")] for v in items]
    if wide:
        headers.append("policies")
        for row, v in zip(rows, items, strict=True):
            row.append(",".join(f"{k}={p.get('policyRuleURI')}" for k, p in v.get("policies", {}).items()) or "-")
    print_table(headers, rows)


def cmd_get(args: argparse.Namespace, env: Env) -> int:
    name = tables.resolve(args.table)
    filter_ = load_filter(args.filter) if args.filter else None
    local = bool(getattr(args, "local", False))
    out = read(env, name, args.key, registry=args.registry, filter_=filter_, local=local)
    if env.json:
        print_json(out)
        return 0
    src = tables.source(name, registry=args.registry or filter_ is not None, local=local)
    if src == "network" and args.key:
        print_json(out)
    elif src == "network":
        if name == "components":
            print_table(["uri", "image"], [[r["key"], component_image(r)] for r in out["items"]])
        else:
            _show_network_blocks(out["items"], args.wide)
    elif src == "catalog":
        items = [out] if args.key else out["items"]
        if name == "components":
            print_table(["uri", "image"], [[r["uri"], component_image(r)] for r in items])
        else:
            _show_blocks(items, args.wide)
    elif src == "members":
        show_nodes({"nodes": [out]} if args.key else out)
    elif args.key:
        print_json(out["value"])
    else:
        print_table(["key", "origin", "value"],
                    [[i["key"], i["version"]["origin"], short(i["value"])] for i in out["items"]])
    return 0


def register_get(sub: Sub) -> argparse.ArgumentParser:
    p = command(sub, "get", "list or read records: blocks, components, nodes, registry tables",
                "List records, or show one; the same names work for `describe` and `watch` (singular too).\n"
                "blocks and components: this node's catalog (as `aiosd apply` stored it); nodes: the\n"
                "membership view (as `aiosd nodes`); the other names are the network's replicated registry.\n"
                f"Tables: {', '.join(tables.REGISTRY_TABLES)}.\n"
                "--registry (or --filter) reads the replicated table of the same name instead.\n"
                "A filter is the AIOS one: {variable, operator, value} on dot paths of the record's value,\n"
                "operators ==, !=, IN, IN ANY, >, >=, <, <=, LIKE, nested {logicalOperator: AND|OR, conditions}.",
                "examples:\n  aiosd get nodes\n  aiosd get blocks --wide\n  aiosd get block echo-1 --json\n"
                "  aiosd get components            # URI and image; --json: the whole records\n"
                "  aiosd get specs my-spec --json\n"
                "  aiosd get tasks --filter '{\"variable\": \"state\", \"operator\": \"==\", \"value\": \"done\"}'\n"
                "  aiosd get metrics --filter '{\"variable\": \"gpu.totalFreeMem\", \"operator\": \">\", "
                "\"value\": 8000}' --json\n  aiosd get templates --filter filter.json", cmd_get)
    p.add_argument("table", metavar="NAME", help="what to list (see above)")
    p.add_argument("key", nargs="?", metavar="KEY", help="one record's key (block id, component URI, node id...)")
    p.add_argument("--filter", metavar="FILE|JSON", help="an AIOS filter document (inline JSON or a file)")
    p.add_argument("--registry", action="store_true", help="read the replicated registry table of that name")
    p.add_argument("--local", action="store_true", help="blocks/components: this node's catalog, not the network's")
    p.add_argument("--wide", action="store_true", help="more columns (blocks)")
    return p


def cmd_registry(args: argparse.Namespace, env: Env) -> int:
    if tables.canonical(args.table) not in tables.REGISTRY_TABLES:
        raise UsageError(f"unknown registry table {args.table!r}; use one of: {', '.join(tables.REGISTRY_TABLES)}")
    args.registry, args.wide = True, False
    return cmd_get(args, env)


def register_registry(sub: Sub) -> argparse.ArgumentParser:
    p = command(sub, "registry", "the same as `aiosd get TABLE --registry` (older name)",
                "Read the network's registries from this node's replicated copy (see `aiosd get`).\n"
                f"Tables: {', '.join(tables.REGISTRY_TABLES)}.",
                "examples:\n  aiosd registry nodes\n  aiosd registry specs my-spec --json\n"
                "  aiosd registry templates --filter filter.json", cmd_registry)
    p.add_argument("table", help="registry table")
    p.add_argument("key", nargs="?", help="one record's key")
    p.add_argument("--filter", metavar="FILE|JSON", help="an AIOS filter document (inline JSON or a file)")
    return p


# ----- describe ------------------------------------------------------------------------------------
def _describe_component(r: Any) -> None:
    v = r["document"]["body"]["spec"]["values"]
    print_kv([("uri", r["uri"]), ("image", component_image(r)),
              ("metadata", json.dumps(v.get("componentMetadata", {}))),
              ("input", ", ".join(v.get("componentInputProtocol", {})) or "-"),
              ("output", ", ".join(v.get("componentOutputProtocol", {})) or "-"),
              ("parameters", json.dumps(v.get("componentParameters", {})))])


def _describe_block(r: Any) -> None:
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


def _describe_other(r: Any) -> None:
    value = r.get("value", r) if isinstance(r, dict) else r
    if isinstance(value, dict):
        print_kv([(k, json.dumps(v) if isinstance(v, dict | list) else v) for k, v in value.items()])
    else:
        print_json(value)


def _guess_kind(env: Env, name: str) -> str | None:
    """Which kind NAME is a record of (for the did-you-mean hint)."""
    for kind in ("blocks", "components", "nodes"):
        try:
            read(env, kind, name)
        except ApiError:
            continue
        return kind[:-1]
    return None


def cmd_describe(args: argparse.Namespace, env: Env) -> int:
    kind = tables.canonical(args.kind)
    if kind is None:
        if args.id is None:
            guess = _guess_kind(env, args.kind)
            if guess is not None:
                raise UsageError(f"describe takes KIND NAME: did you mean `aiosd describe {guess} {args.kind}`?")
        tables.resolve(args.kind)
    if args.id is None:
        raise UsageError(f"describe {args.kind}: which one? give its name (`aiosd get {args.kind}` lists them)")
    assert kind is not None
    if kind == "clusters":
        from aiosd.cli.cluster_cmds import _show_cluster

        return env.show(env.get(f"/v1/clusters/{q(args.id)}"), _show_cluster)
    if kind == "vdags":
        from aiosd.cli.vdag_cmds import print_describe

        return env.show(env.get(f"/v1/vdags/{urllib.parse.quote(args.id, safe=':')}"), print_describe)
    r = read(env, kind, args.id)
    human = {"blocks": _describe_block, "components": _describe_component}.get(kind, _describe_other)
    return env.show(r, human)


def register_describe(sub: Sub) -> argparse.ArgumentParser:
    p = command(sub, "describe", "show one record in detail (block, component, node, ...)",
                "Show one record: a block with its policies, instances and autoscaler decisions, a component\n"
                f"with its protocols, a node, a cluster, or a registry record. Kinds: {', '.join(tables.NAMES)}.",
                "examples:\n  aiosd describe block echo-1\n  aiosd describe component model.echo:1.0.0-stable\n"
                "  aiosd describe node 7kq2m4x9a1b2c3d4\n  aiosd describe cluster default",
                cmd_describe, json_help="print the whole record as JSON")
    p.add_argument("kind", metavar="KIND", help="block, component, node, cluster or a registry table")
    p.add_argument("id", nargs="?", metavar="NAME", help="block id, component URI, node id, record key")
    return p


# ----- watch ---------------------------------------------------------------------------------------
def _rows(env: Env, name: str) -> dict[str, Any]:
    """NAME's records by key, for polling."""
    out = read(env, name, None)
    src = tables.source(name)
    if src == "catalog":
        return {str(r.get("id") or r.get("uri")): r for r in out["items"]}
    if src == "members":
        return {n["node_id"]: {k: v for k, v in n.items() if k != "self"} for n in out["nodes"]}
    if src == "network":
        return {i["key"]: {k: v for k, v in i.items() if k != "key"} for i in out["items"]}
    return {i["key"]: i["value"] for i in out["items"]}


def _watch_poll(env: Env, names: list[str], limit: int | None) -> int:
    before = {n: _rows(env, n) for n in names}
    seen = 0
    for _ in range(MAX_WATCH_POLLS):
        time.sleep(WATCH_POLL_S)
        for n in names:
            now = _rows(env, n)
            changes = [("put", k, v) for k, v in now.items() if before[n].get(k) != v]
            changes += [("delete", k, None) for k in before[n] if k not in now]
            before[n] = now
            for op, key, value in changes:
                print(f"{op:6} {n}/{key} {short(value, 100)}", flush=True)
                seen += 1
                if limit is not None and seen >= limit:
                    return 0
    return 0


def _watch_stream(env: Env, names: list[str], limit: int | None) -> int:
    seen, op = 0, ""
    for raw in env.api(timeout_s=None).lines("/v1/watch?table=" + q(",".join(names))):
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            op = line.removeprefix("event: ")
        elif line.startswith("data: "):
            ev = json.loads(line.removeprefix("data: "))
            print(f"{op:6} {ev['table']}/{ev['key']} {short(ev['value'], 100)}", flush=True)
            seen += 1
            if limit is not None and seen >= limit:
                return 0
    return 0


def cmd_watch(args: argparse.Namespace, env: Env) -> int:
    names = list(dict.fromkeys(tables.resolve(t) for t in args.table))
    streamed = all(tables.source(n, registry=args.registry) == "registry" for n in names)
    try:
        if streamed:
            return _watch_stream(env, names, args.count)
        return _watch_poll(env, names, args.count)
    except KeyboardInterrupt:
        return 0


def register_watch(sub: Sub) -> argparse.ArgumentParser:
    p = command(sub, "watch", "stream changes of records as they happen",
                "Print one line per change (put or delete) of the named records: registry tables as the\n"
                f"registry streams them, blocks, components and nodes as this node sees them (read every "
                f"{WATCH_POLL_S:g} s).\nNames: the same as `aiosd get`.",
                "examples:\n  aiosd watch specs\n  aiosd watch blocks\n  aiosd watch nodes metrics --count 10",
                cmd_watch, json_help=None)
    p.add_argument("table", nargs="+", metavar="NAME", help="what to watch")
    p.add_argument("--count", type=int, help="exit after this many changes")
    p.add_argument("--registry", action="store_true", help="the replicated registry tables of those names")
    return p


REGISTER = [register_get, register_describe, register_watch, register_registry]

__all__ = ["REGISTER", "component_image", "load_filter", "read", "short", "show_nodes"]
