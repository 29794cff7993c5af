"""`aiosd token | join | nodes | node remove | doctor`: forming and inspecting the network."""

from __future__ import annotations

import argparse
import re
import sys
import time
from typing import TYPE_CHECKING, Any

from aiosd.cli.common import Env, Handler, Sub, command, q
from aiosd.cli.output import human_duration, print_json, print_kv, print_table
from aiosd.errors import AiosdError, DaemonNotRunning, UsageError, start_hint

if TYPE_CHECKING:
    from federation.certs import NodeCert
    from federation.identity import NodeKey
    from federation.tokens import JoinAnswer, JoinToken

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """'90s', '30m', '1h', '2d' or plain seconds → seconds. Raises UsageError."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if m is None or int(m.group(1)) <= 0:
        raise UsageError(f"--ttl: {text!r} is not a duration like 90s, 30m, 1h or 2d")
    return int(m.group(1)) * _UNITS[m.group(2) or "s"]


def _add(sub: Sub, name: str, help_: str, description: str, epilog: str, handler: Handler) -> argparse.ArgumentParser:
    return command(sub, name, help_, description, epilog, handler, json_help=None)


# ----- token ----------------------------------------------------------------------------------
def cmd_token_create(args: argparse.Namespace, env: Env) -> int:
    body = {"cluster": args.cluster, "ttl_s": parse_duration(args.ttl), "uses": args.uses}
    out = env.post("/v1/tokens", body)
    if env.json:
        print_json(out)
        return 0
    print(out["token"])
    print(f"# cluster {out['cluster']}, {out['uses']} use(s), expires in "
          f"{human_duration(out['expires'] - time.time())}; on the new machine: aiosd join TOKEN", file=sys.stderr)
    return 0


def cmd_token_list(args: argparse.Namespace, env: Env) -> int:
    now = time.time()
    return env.show(env.get("/v1/tokens"), lambda out: print_table(
        ["id", "cluster", "state", "uses left", "expires in"],
        [[t["token_id"], t["cluster"], t["state"], f"{t['uses_left']}/{t['uses_total']}",
          human_duration(max(0, t["expires"] - now))] for t in out["tokens"]]))


def cmd_token_revoke(args: argparse.Namespace, env: Env) -> int:
    return env.show(env.call("DELETE", f"/v1/tokens/{q(args.id)}"),
                    lambda out: print(f"token {out['token_id']} revoked: it can no longer be used to join"))


def register_token(sub: Sub) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "token", help="create, list and revoke join tokens",
        description="Join tokens let a new machine join this network (run on the node that holds the CA).",
        epilog="examples:\n  aiosd token create --ttl 1h --uses 1\n  aiosd token list\n  aiosd token revoke ID",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    tsub = p.add_subparsers(dest="token_cmd", metavar="ACTION", required=True)

    c = _add(tsub, "create", "print a new join token",
             "Print a join token: network id, the CA fingerprint the joiner pins, seed addresses, a token id\n"
             "and a secret (only a hash of the secret is stored). Show it once; anyone holding it can join.",
             "examples:\n  aiosd token create\n  aiosd token create --cluster lab --ttl 2h --uses 5\n"
             "  aiosd token create --json | jq -r .token", cmd_token_create)
    c.add_argument("--cluster", help="cluster the joiner belongs to (default: this node's)")
    c.add_argument("--ttl", default="1h", help="how long the token is valid: 90s, 30m, 1h, 2d (default 1h)")
    c.add_argument("--uses", type=int, default=1, help="how many machines may join with it (default 1)")
    c.add_argument("--json", action="store_true", help="print as JSON")
    command(tsub, "list", "list tokens (no secrets)", "List the join tokens this node created.",
            "example:\n  aiosd token list --json", cmd_token_list)
    rv = command(tsub, "revoke", "revoke a token", "Revoke a join token: later joins with it are refused.",
                 "example:\n  aiosd token revoke 3f2a9c01d4e5b6a7", cmd_token_revoke)
    rv.add_argument("id", help="token id (see `aiosd token list`)")
    return p


# ----- join -------------------------------------------------------------------------------------
async def _join(token: JoinToken, key: NodeKey, seeds: list[str]) -> tuple[NodeCert, JoinAnswer, str]:
    from aiosd.membership.wire import JoinHello, JoinHelloAnswer
    from federation.errors import FederationError, RemoteRejected, TokenError
    from federation.tokens import JoinAnswer, accept_join_answer, check_ca, make_join_request
    from federation.transport import request_open

    errors: list[str] = []
    for seed in seeds:
        try:
            # pin=: the seed's session certificate must chain to the token's CA before anything is sent
            hello = await request_open(seed, JoinHello(), JoinHelloAnswer, timeout_s=5.0, pin=token.ca_fingerprint)
            check_ca(token, hello.ca_public)  # pin the CA before proving the secret
            req = make_join_request(token, key.public_bytes, time.time())
            ans = await request_open(seed, req, JoinAnswer, timeout_s=10.0, pin=token.ca_fingerprint)
            return accept_join_answer(token, ans, key.public_bytes, time.time()), ans, seed
        except TokenError:
            raise
        except RemoteRejected as e:
            if e.status == 403:  # the seed read our proof and refused it: its sentence is the answer
                raise AiosdError(f"join refused by {seed}: {e.reason}") from None
            errors.append(f"{seed}: {e}")
        except FederationError as e:
            errors.append(f"{seed}: {e}")
    raise AiosdError("could not reach any seed to join (" + "; ".join(errors) + "); check the address with "
                     "--address HOST:PORT and that `aiosd run` is running there")


def cmd_join(args: argparse.Namespace, env: Env) -> int:
    import asyncio

    from aiosd.errors import AlreadyInitialisedError
    from aiosd.identity_files import NETWORK, NODE_KEY, Network, identity_dir, is_initialised, write_cert
    from aiosd.membership.service import STATE
    from aiosd.node import check_data_dir
    from federation.identity import NodeKey, write_file_atomic
    from federation.tokens import parse_token
    from storage import Store

    settings = env.settings
    token = parse_token(args.token)
    seeds = [args.address] if args.address else list(token.seeds)
    if not seeds:
        raise UsageError("the token names no seed; give one with --address HOST:PORT")
    data_dir = settings.data_dir
    check_data_dir(data_dir)
    with Store.open(data_dir / "db") as store:  # also proves no daemon runs on this data dir
        if is_initialised(data_dir) and not args.force:
            raise AlreadyInitialisedError(f"{data_dir} already has an identity; use --force to replace it "
                                          "with a membership of the token's network")
        d = identity_dir(data_dir)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = NodeKey.generate()
        cert, answer, seed = asyncio.run(_join(token, key, seeds))
        key.save(d / NODE_KEY, force=True)
        (d / "ca.key").unlink(missing_ok=True)
        write_cert(data_dir, cert)
        net = Network(token.network_id, answer.ca_public, token.ca_fingerprint)
        write_file_atomic(d / NETWORK, net.to_json().encode(), mode=0o644, force=True, what="network record")
        store.put(STATE, "seeds", list(dict.fromkeys([seed, *answer.seeds])))
    info = {"node_id": cert.node_id, "network_id": cert.network_id, "cluster": cert.cluster, "seed": seed,
            "cert_expires": cert.expires, "data_dir": str(data_dir)}
    if env.json:
        print_json(info)
    else:
        print(f"joined network {cert.network_id} as node {cert.node_id} (cluster {cert.cluster}) via {seed}")
        if not args.run:
            print("next: `aiosd run` starts the daemon as a member")
    if args.run:
        from aiosd.cli.node_cmds import cmd_run

        return cmd_run(args, env)
    return 0


def register_join(sub: Sub) -> argparse.ArgumentParser:
    p = _add(sub, "join", "join an existing network with a token",
             "On a new machine: pin the CA fingerprint from the token, prove the token's secret to a seed,\n"
             "receive this node's certificate and write the identity files. Then `aiosd run` starts it as a\n"
             "member (or pass --run).",
             "examples:\n  aiosd join aiosd1.k2V...\n  aiosd join TOKEN --address 192.168.1.5:7701 --run",
             cmd_join)
    p.add_argument("token", help="the token printed by `aiosd token create`")
    p.add_argument("--address", metavar="HOST:PORT", help="seed to contact instead of the token's seeds")
    p.add_argument("--force", action="store_true", help="replace an existing identity in the data dir")
    p.add_argument("--run", action="store_true", help="start the daemon after joining")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--p2p-host", help="(with --run) address the p2p listener binds")
    p.add_argument("--p2p-port", type=int, help="(with --run) p2p port")
    return p


# ----- nodes / node remove ------------------------------------------------------------------------
def cmd_nodes(args: argparse.Namespace, env: Env) -> int:
    from aiosd.cli.record_cmds import show_nodes

    return env.show(env.get("/v1/nodes"), show_nodes)


def register_nodes(sub: Sub) -> argparse.ArgumentParser:
    p = _add(sub, "nodes", "list the network's nodes and whether they are alive",
             "List every node this daemon knows, with its address and SWIM state (alive, suspect, dead, left).\n"
             "`*` marks this node. The same as `aiosd get nodes`.",
             "examples:\n  aiosd nodes\n  aiosd nodes --json | jq '.nodes[].state'", cmd_nodes)
    p.add_argument("--json", action="store_true", help="print as JSON")
    return p


def cmd_node_remove(args: argparse.Namespace, env: Env) -> int:
    return env.show(env.call("DELETE", f"/v1/nodes/{q(args.id)}"), lambda out: print(
        f"node {out['node_id']} removed: its certificate is revoked; told {out['reached']} live node(s), "
        "the rest learn it by gossip"))


def register_node(sub: Sub) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "node", help="manage one node of the network", description="Manage one node of the network.",
        epilog="example:\n  aiosd node remove 7kq2m4x9a1b2c3d4", formatter_class=argparse.RawDescriptionHelpFormatter)
    nsub = p.add_subparsers(dest="node_cmd", metavar="ACTION", required=True)
    rm = command(nsub, "remove", "revoke a node's certificate everywhere",
                 "Revoke the node's certificate network-wide (run on an admin node): every node refuses its\n"
                 "messages from then on, and it is declared dead.", "example:\n  aiosd node remove 7kq2m4x9a1b2c3d4",
                 cmd_node_remove)
    rm.add_argument("id", help="node id (see `aiosd nodes`)")
    return p


# ----- doctor -----------------------------------------------------------------------------------------
def _offline(env: Env) -> list[tuple[str, str]]:
    from aiosd.identity_files import identity_dir, is_initialised
    from federation.certs import load_cert
    from federation.errors import FederationError

    problems = [("the daemon is not running", f"start it: {start_hint()}")]
    data_dir = env.data_dir
    if not is_initialised(data_dir):
        problems.append((f"{data_dir} has no identity", "run `aiosd join TOKEN` (or `aiosd init` for a new network)"))
        return problems
    try:
        cert = load_cert(identity_dir(data_dir) / "node.cert")
    except FederationError as e:
        problems.append((str(e), "re-join with a new token"))
        return problems
    if cert.expires <= time.time():
        problems.append(("this node's certificate has expired", "ask an admin for a token and `aiosd join --force`"))
    return problems


def _print_sessions(ss: dict[str, Any] | None) -> None:
    if not ss:
        return
    fails = ", ".join(f"{k} {v}" for k, v in sorted(ss["handshake_failures"].items())) or "none"
    print(f"sessions: {len(ss['peers'])} open ({ss['cipher']}), {ss['handshakes_ok']} handshake(s) ok, "
          f"failures: {fails}")
    for s in ss["peers"]:
        print(f"session {s['peer'] or '(join)'} {s['addr'] or '-'}: established, {s['cipher']}, age "
              f"{human_duration(s['age_s'])}, last rekey {human_duration(s['last_rekey_age_s'])} ago "
              f"(epoch {s['epoch_out']}/{s['epoch_in']}), {'outbound' if s['initiator'] else 'inbound'}")


def cmd_doctor(args: argparse.Namespace, env: Env) -> int:
    try:
        rep = env.get("/v1/doctor")
    except DaemonNotRunning:
        problems = _offline(env)
        if env.json:
            print_json({"running": False, "problems": [{"what": w, "fix": f} for w, f in problems]})
        else:
            for what, fix in problems:
                print(f"problem: {what}\n  fix: {fix}")
        return 1
    if env.json:
        print_json(rep)
        return 1 if rep["problems"] else 0
    print_kv([("node", rep["node_id"]), ("network", rep["network_id"]), ("p2p listen", rep["p2p"]["listen"]),
              ("advertised as", rep["p2p"]["advertise"]),
              ("interfaces", "; ".join(f"{i['name']} {','.join(i['addrs']) or '-'}" for i in rep["interfaces"])),
              ("mdns", ("on " + ",".join(rep["mdns"]["interfaces"]) + f", {rep['mdns']['candidates_seen']} "
                        "candidate(s) heard") if rep["mdns"]["enabled"] else "off"),
              ("members", ", ".join(f"{v} {k}" for k, v in rep["members"].items())),
              ("certificate", f"expires in {human_duration(rep['cert']['expires_in_s'])}")])
    for s in rep["seeds"]:
        print(f"seed {s['addr']}: " + (f"answers in {s['rtt_ms']} ms, clock skew {s['skew_s']} s" if s["ok"]
                                       else f"NO ANSWER ({s['error']})"))
    for s in rep["peers"]:
        if s["ok"]:
            print(f"peer {s['node_id']} {s['addr']}: {s['rtt_ms']} ms, clock skew {s['skew_s']} s")
        else:
            print(f"peer {s['addr']}: NO ANSWER ({s['error']})")
    for n in rep.get("notes", []):
        print(f"note: {n['what']}\n  {n['fix']}")
    _print_sessions(rep.get("sessions"))
    for p in rep["problems"]:
        print(f"problem: {p['what']}\n  fix: {p['fix']}")
    if not rep["problems"]:
        print("no problems found")
    return 1 if rep["problems"] else 0


def register_doctor(sub: Sub) -> argparse.ArgumentParser:
    p = _add(sub, "doctor", "find out why nodes do not see each other",
             "Check the addresses the daemon uses, mDNS, which seeds answer, clock skew to peers and the\n"
             "certificate's expiry, and say what to do about each problem. Exit 1 when a problem is found\n"
             "(or the daemon is not running); a healthy single-node network exits 0 with a note.",
             "examples:\n  aiosd doctor\n  aiosd doctor --json", cmd_doctor)
    p.add_argument("--json", action="store_true", help="print as JSON")
    return p


REGISTER = [register_token, register_join, register_nodes, register_node, register_doctor]

__all__ = ["REGISTER", "parse_duration"]
