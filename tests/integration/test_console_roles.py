"""Users and roles against a real daemon: every route of the route table, every role (issue 20, part 1)."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aiosd.api.routes import ROLES, allows
from tests.daemons import Daemon, cli

# Routes that change nothing although they are not GETs: dry runs and queries viewers may send.
VIEWER_POSTS = {"POST /v1/registry/{table}/query", "POST /v1/tasks/{id}/wait", "POST /v1/convert",
                "POST /v1/allocate/dry-run", "POST /v1/vdag/verify"}
# Self-written tables that change on their own (heartbeats, metric summaries, audit summaries: refusals are audited).
MOVING_TABLES = {"nodes", "metrics", "audit"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call(port: int, method: str, path: str, token: str | None = None, body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        raw = None if body is None else json.dumps(body).encode()
        if raw is not None:
            h["Content-Type"] = "application/json"
        conn.request(method, path, body=raw, headers=h)
        r = conn.getresponse()
        if r.getheader("Content-Type", "").startswith("text/event-stream"):
            return r.status, None  # the watch stream: its headers are the answer
        data = r.read()
        try:
            return r.status, json.loads(data) if data else None
        except ValueError:
            return r.status, data.decode(errors="replace")
    finally:
        conn.close()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, int, dict[str, str]]]:
    port = free_port()
    d = Daemon(tmp_path_factory.mktemp("console"), extra=["--api-port", str(port)]).start()
    try:
        tokens = {}
        for role in ROLES:
            out = d.json("user", "create", f"u-{role}", "--role", role)
            assert out["role"] == role and out["token"].startswith(f"aiosu.u-{role}.")
            tokens[role] = out["token"]
        yield d, port, tokens
    finally:
        d.stop()


def routes_of(port: int, token: str) -> list[tuple[str, str, str | None]]:
    status, doc = call(port, "GET", "/v1/openapi.json", token)
    assert status == 200
    return [(m.upper(), p, op.get("x-aios-role")) for p, ops in doc["paths"].items() for m, op in ops.items()]


def concrete(path: str) -> str:
    return "/".join("zz-none" if seg.startswith("{") else seg for seg in path.split("/"))


def snapshot(port: int, token: str) -> dict[str, Any]:
    _, dig = call(port, "GET", "/v1/registry/_digests", token)
    tables = {t: v for t, v in dig["tables"].items() if t not in MOVING_TABLES}
    return {"tables": tables, "placements": call(port, "GET", "/v1/controller/placements", token)[1]["blocks"],
            "local": call(port, "GET", "/v1/local/instances", token)[1],
            "governance": call(port, "GET", "/v1/governance", token)[1],
            "users": call(port, "GET", "/v1/users", token)[1]}


def test_every_route_declares_a_role(node: tuple[Daemon, int, dict[str, str]]) -> None:
    _, port, tokens = node
    routes = routes_of(port, tokens["admin"])
    assert len(routes) > 70
    missing = [f"{m} {p}" for m, p, role in routes if role is None]
    assert missing == [], f"routes without a declared role: {missing}"
    assert all(role in ROLES for _, _, role in routes)
    # No viewer-level route changes anything: the non-GET ones are the dry runs listed here.
    viewer_writes = {f"{m} {p}" for m, p, role in routes if role == "viewer" and m != "GET"}
    assert viewer_writes == VIEWER_POSTS
    roles = {f"{m} {p}": role for m, p, role in routes}
    assert roles["POST /v1/users"] == roles["DELETE /v1/nodes/{id}"] == roles["PUT /v1/governance"] == "admin"
    assert roles["POST /v1/controller/placements"] == roles["POST /v1/apply"] == "operator"
    assert roles["POST /v1/infer/block/{id}"] == "inference"


def test_each_role_against_every_route(node: tuple[Daemon, int, dict[str, str]]) -> None:
    _, port, tokens = node
    routes = routes_of(port, tokens["admin"])
    # The dashboard's static files are served to anyone (the page asks for a token); everything else checks.
    public = [(m, p) for m, p, _ in routes if p.startswith("/ui")]
    assert sorted(public) == [("GET", "/ui"), ("GET", "/ui/"), ("GET", "/ui/{name}")]
    for path in ("/ui/", "/ui/app.js", "/ui/app.css"):
        status, _ = call(port, "GET", path)
        assert status == 200
    # POST /v1/stop takes no body: an allowed call would stop the daemon under test (its role is checked below).
    cases = [(m, p, needed, role, token) for m, p, needed in routes for role, token in tokens.items()
             if not p.startswith("/ui") and not (p == "/v1/stop" and allows(role, str(needed)))]
    # Allowed: the call gets past the role check; a body no handler accepts stops it at validation.
    allowed = [c for c in cases if allows(c[3], str(c[2]))]
    for method, path, _needed, role, token in allowed:
        status, out = call(port, method, concrete(path), token, None if method == "GET" else "not-an-object")
        err = out.get("error", {}) if isinstance(out, dict) else {}
        assert status != 401 and err.get("code") != "role_required", (role, method, path, status, out)
    # Denied: 403 naming the role needed, and nothing changed.
    before = snapshot(port, tokens["admin"])
    denied = [c for c in cases if not allows(c[3], str(c[2]))]
    for method, path, needed, role, token in denied:
        status, out = call(port, method, concrete(path), token, None if method == "GET" else "not-an-object")
        err = out.get("error", {}) if isinstance(out, dict) else {}
        assert status == 403 and err["code"] == "role_required", (role, method, path, status, out)
        assert f"needs the {needed} role" in err["message"] and err["field"] == "role"
    assert len(denied) > 100 and len(allowed) > 100
    # Forged writes with valid bodies from roles that lack the right change nothing either.
    forged = [("viewer", "POST", "/v1/users", {"name": "evil", "role": "admin"}),
              ("operator", "POST", "/v1/users", {"name": "evil", "role": "admin"}),
              ("viewer", "PUT", "/v1/registry/specs/evil", {"a": 1}),
              ("operator", "PUT", "/v1/governance", {}),
              ("viewer", "POST", "/v1/controller/placements", {"block_id": "b", "instances": 3}),
              ("inference", "PUT", "/v1/local/instances", {"block_id": "b", "instances": 1}),
              ("viewer", "DELETE", "/v1/users/u-admin", None)]
    for role, method, path, body in forged:
        status, out = call(port, method, path, tokens[role], body)
        assert status == 403 and out["error"]["code"] == "role_required", (role, path, out)
    assert snapshot(port, tokens["admin"]) == before


def test_no_wrong_or_revoked_token_is_401(node: tuple[Daemon, int, dict[str, str]]) -> None:
    d, port, tokens = node
    node_token = (d.data_dir / "api.token").read_text().strip()
    assert call(port, "GET", "/v1/whoami", node_token)[1]["role"] == "admin"  # the old api.token: admin
    for bad in [None, "", "x", tokens["viewer"] + "x", tokens["viewer"].replace("u-viewer", "u-admin"),
                "aiosu.nobody." + "A" * 43, "a" * 5000]:
        status, out = call(port, "GET", "/v1/status", bad)
        assert status == 401 and out["error"]["code"] == "unauthorized", (bad, out)
    assert call(port, "GET", "/v1/status", headers={"Authorization": "Basic abc"})[0] == 401
    # Revoke: the token is refused at once; `user list` shows the user revoked, with no token hashes.
    out = d.json("user", "create", "shortlived", "--role", "operator")
    assert call(port, "GET", "/v1/whoami", out["token"])[1] == {"name": "shortlived", "role": "operator",
                                                                 "via": "token"}
    assert d.cli("user", "revoke", "shortlived").returncode == 0
    status, body = call(port, "GET", "/v1/whoami", out["token"])
    assert status == 401 and "revoked" in body["error"]["message"]
    listed = {u["name"]: u for u in d.json("user", "list")["users"]}
    assert listed["shortlived"]["revoked_at"] is not None and listed["u-admin"]["revoked_at"] is None
    assert "token_sha256" not in json.dumps(listed)
    # A second create of a live user is refused; after revoking, the name gets a new token.
    r = d.cli("user", "create", "u-admin", "--role", "viewer")
    assert r.returncode != 0 and "exists" in r.stderr
    again = d.json("user", "create", "shortlived", "--role", "viewer")
    assert call(port, "GET", "/v1/whoami", again["token"])[1]["role"] == "viewer"
    assert call(port, "GET", "/v1/whoami", out["token"])[0] == 401


def test_bad_user_input_names_the_field(node: tuple[Daemon, int, dict[str, str]]) -> None:
    _, port, tokens = node
    for body, field in [({"name": "Bad Name", "role": "viewer"}, "name"), ({"name": "ok", "role": "god"}, "role"),
                        ({"name": "ok", "role": "viewer", "x": 1}, "x"), ({"name": "a" * 100, "role": "viewer"},
                                                                          "name")]:
        status, out = call(port, "POST", "/v1/users", tokens["admin"], body)
        assert status == 422 and out["error"]["field"] == field, (body, out)
    r = cli("user", "create", "x", "--role", "root")
    assert r.returncode == 2


def test_cross_origin_post_is_refused(node: tuple[Daemon, int, dict[str, str]]) -> None:
    _, port, tokens = node
    before = call(port, "GET", "/v1/users", tokens["admin"])[1]
    status, out = call(port, "POST", "/v1/users", tokens["admin"], {"name": "csrf", "role": "admin"},
                       headers={"Origin": "http://evil.example"})
    assert status == 403 and out["error"]["code"] == "cross_origin"
    assert call(port, "GET", "/v1/users", tokens["admin"])[1] == before
    # The page's own origin may post (the dashboard), with its bearer token.
    status, _ = call(port, "PUT", "/v1/log-level", tokens["admin"], {"level": "info"},
                     headers={"Origin": f"http://127.0.0.1:{port}"})
    assert status == 200


def test_local_socket_users_get_the_configured_role(node: tuple[Daemon, int, dict[str, str]]) -> None:
    """root is an admin on the socket; another local user (nobody) gets api.local_role (operator)."""
    d, _, _ = node
    if os.getuid() != 0:
        pytest.skip("needs root to run a client as another user")
    os.chmod(d.socket.parent, 0o755)
    os.chmod(d.socket, 0o666)
    script = ("import http.client,socket,sys,json\n"
              "class C(http.client.HTTPConnection):\n"
              "    def connect(self):\n"
              "        self.sock=socket.socket(socket.AF_UNIX); self.sock.connect(sys.argv[1])\n"
              "out=[]\n"
              "for m,p in (('GET','/v1/whoami'),('GET','/v1/users')):\n"
              "    c=C('x'); c.request(m,p); r=c.getresponse(); out.append([r.status,json.loads(r.read())])\n"
              "print(json.dumps(out))\n")
    r = subprocess.run(["python3", "-c", script, str(d.socket)], check=False, user=65534, group=65534,
                       capture_output=True, text=True, timeout=30, cwd="/")
    assert r.returncode == 0, r.stderr
    (s1, who), (s2, users) = json.loads(r.stdout)
    assert s1 == 200 and who["role"] == "operator" and who["via"] == "socket"
    assert s2 == 403 and "needs the admin role" in users["error"]["message"]
    assert d.json("user", "list")["users"]  # root: admin


def test_mutating_requests_are_audited(node: tuple[Daemon, int, dict[str, str]]) -> None:
    d, port, tokens = node
    time.sleep(1.2)  # the queries below look back 1 s: keep the previous tests' calls out of that second
    t0 = time.time()
    call(port, "PUT", "/v1/log-level", tokens["operator"], {"level": "debug"})  # refused: admin only
    call(port, "PUT", "/v1/log-level", tokens["admin"], {"level": "info"})
    call(port, "PUT", "/v1/log-level", None, {"level": "info"})  # no token
    call(port, "GET", "/v1/status", tokens["viewer"])  # a read: not audited
    out = d.json("audit", "--since", repr(t0 - 1))
    got = [(e["user"], e["role"], e["action"], e["result"]) for e in out["entries"]]
    assert got[:3] == [("anonymous", "-", "PUT /v1/log-level", 401), ("u-admin", "admin", "PUT /v1/log-level", 200),
                       ("u-operator", "operator", "PUT /v1/log-level", 403)]
    assert all(e["node"] == d.json("status")["node_id"] and e["ts"] >= t0 - 1 for e in out["entries"])
    assert not any(e["action"].startswith("GET") for e in out["entries"])
    only = d.json("audit", "--user", "u-operator", "--since", repr(t0 - 1))["entries"]
    assert [e["result"] for e in only] == [403]
    assert d.json("audit", "--since", repr(time.time() + 3600))["entries"] == []
    # The audit trail is for admins; bad queries are 422s naming the field (typed query model).
    assert call(port, "GET", "/v1/audit", tokens["operator"])[0] == 403
    for q, field in [("since=yesterday", "since"), ("since=nan", "since"), ("limit=0", "limit"),
                     ("limit=1e9", "limit"), ("scope=galaxy", "scope"), ("user=" + "u" * 200, "user")]:
        status, body = call(port, "GET", f"/v1/audit?{q}", tokens["admin"])
        assert status == 422 and body["error"]["field"] == field, (q, body)
    assert d.cli("audit", "--since", "last tuesday").returncode == 2


def test_metric_history_by_range(node: tuple[Daemon, int, dict[str, str]]) -> None:
    d, port, tokens = node
    node_id = d.json("status")["node_id"]
    deadline = time.monotonic() + 45

    def points() -> dict[str, Any]:
        status, out = call(port, "GET", f"/v1/metrics/history?node={node_id}&from={time.time() - 600:.0f}",
                           tokens["viewer"])
        assert status == 200, out
        return dict(out)

    out = points()
    while not out["t"]:
        assert time.monotonic() < deadline, "no history point within 45 s"
        time.sleep(1)
        out = points()
    assert out["step"] == 10 and out["tier"] == "10s" and out["series"]
    assert all(len(v) == len(out["t"]) for v in out["series"].values())
    for q, field in [("from=yesterday", "from"), ("step=7", "step"), ("from=0&to=1e10", "from"),
                     (f"from={time.time() - 3 * 86400:.0f}&step=10", "step"), ("to=-1", "to"),
                     (f"from={time.time() - 6 * 86400:.0f}&step=60", "step")]:
        status, body = call(port, "GET", f"/v1/metrics/history?{q}", tokens["viewer"])
        assert status == 400 and body["error"]["field"] == field, (q, body)
    status, body = call(port, "GET", "/v1/metrics/history?node=someone-else", tokens["viewer"])
    assert status == 404 and body["error"]["field"] == "node"
    assert call(port, "GET", "/v1/metrics/history", tokens["inference"])[0] == 403


def test_a_user_token_works_on_every_node(tmp_path: Path) -> None:
    p1, p2 = free_port(), free_port()
    n1 = Daemon(tmp_path, "n1", p2p_host="127.0.0.2", extra=["--api-port", str(p1)]).start()
    nodes = [n1]
    try:
        tok = n1.json("token", "create", "--uses", "1", "--ttl", "10m")["token"]
        assert cli("join", tok, "--data-dir", str(tmp_path / "n2"), "--json").returncode == 0
        n2 = Daemon(tmp_path, "n2", p2p_host="127.0.0.3", extra=["--api-port", str(p2)]).start()
        nodes.append(n2)
        user = n1.json("user", "create", "carol", "--role", "viewer")
        deadline = time.monotonic() + 60
        while call(p2, "GET", "/v1/whoami", user["token"])[0] != 200:
            assert time.monotonic() < deadline, "the user record did not reach n2"
            time.sleep(0.3)
        assert call(p2, "GET", "/v1/whoami", user["token"])[1]["name"] == "carol"
        assert call(p2, "POST", "/v1/apply", user["token"], "x")[0] == 403
        # An admin on n1 sees n2's actions: n2 publishes its latest audit entries as a network record.
        n2_id = n2.json("status")["node_id"]

        def n2_refusal_seen() -> bool:
            entries = n1.json("audit", "--network", "--user", "carol")["entries"]
            return any(e["node"] == n2_id and e["action"] == "POST /v1/apply" and e["result"] == 403
                       for e in entries)

        while not n2_refusal_seen():
            assert time.monotonic() < deadline + 30, "n2's audit summary did not reach n1"
            time.sleep(0.5)
        assert all(e["node"] != n2_id for e in n1.json("audit")["entries"])  # node scope: n1's own only
        assert n1.cli("user", "revoke", "carol").returncode == 0
        while call(p2, "GET", "/v1/whoami", user["token"])[0] != 401:
            assert time.monotonic() < deadline + 30, "the revocation did not reach n2"
            time.sleep(0.3)
    finally:
        for d in nodes:
            d.stop()
