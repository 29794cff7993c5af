"""`aiosd token | join | nodes | node remove | doctor` as a user runs them, against real daemons."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.daemons import AIOSD, Daemon, cli
from tests.waiting import wait_sync

pytestmark = pytest.mark.timeout(120)


def _alive(d: Daemon) -> set[str]:
    return {n["node_id"] for n in d.json("nodes")["nodes"] if n["state"] == "alive"}


def _joined(tmp_path: Path, first: Daemon, name: str, host: str, daemons: list[Daemon]) -> Daemon:
    tok = first.cli("token", "create")
    assert tok.returncode == 0 and tok.stdout.startswith("aiosd1."), tok.stderr
    assert "aiosd join" in tok.stderr  # the hint goes to stderr, so `$(aiosd token create)` is the token
    r = cli("join", tok.stdout.strip(), "--data-dir", str(tmp_path / name))
    assert r.returncode == 0 and "joined network" in r.stdout and "aiosd run" in r.stdout, r.stderr
    d = Daemon(tmp_path, name, p2p_host=host).start()
    daemons.append(d)
    return d


def test_help_has_examples() -> None:
    cmds = (["token", "create"], ["token", "list"], ["token", "revoke"], ["join"], ["nodes"], ["node", "remove"],
            ["doctor"])
    procs = [subprocess.Popen([*AIOSD, *c, "--help"], stdout=subprocess.PIPE, text=True) for c in cmds]
    for cmd, p in zip(cmds, procs, strict=True):
        out, _ = p.communicate(timeout=30)
        assert p.returncode == 0 and "example" in out, cmd


def test_bad_ttl_is_a_usage_error(tmp_path: Path, daemons: list[Daemon]) -> None:
    first = Daemon(tmp_path, "n1").start()
    daemons.append(first)
    r = first.cli("token", "create", "--ttl", "soon")
    assert r.returncode == 2 and "--ttl" in r.stderr and "Traceback" not in r.stderr
    assert first.json("token", "list")["tokens"] == []


def test_nodes_table_and_remove_reaches_every_node(tmp_path: Path, daemons: list[Daemon]) -> None:
    first = Daemon(tmp_path, "n1", p2p_host="127.0.0.2").start()
    daemons.append(first)
    n2 = _joined(tmp_path, first, "n2", "127.0.0.3", daemons)
    n3 = _joined(tmp_path, first, "n3", "127.0.0.4", daemons)
    ids = [d.json("status")["node_id"] for d in (first, n2, n3)]
    for d in (first, n2, n3):
        wait_sync(lambda: _alive(d) == set(ids), timeout_s=15, interval_s=0.2)  # noqa: B023  # called at once
    table = first.cli("nodes")
    assert table.returncode == 0 and "* " + ids[0] in table.stdout and "127.0.0.4" in table.stdout
    assert "admin,member,ca" in table.stdout

    # A member cannot remove, an admin can't remove itself, unknown ids are named.
    r = n2.cli("node", "remove", ids[2])
    assert r.returncode == 1 and "admin" in r.stderr
    r = first.cli("node", "remove", ids[0])
    assert r.returncode == 1 and "cannot remove itself" in r.stderr
    r = first.cli("node", "remove", "nosuchnode")
    assert r.returncode == 1 and "no node nosuchnode" in r.stderr

    # n2 is down while n3 is removed: it must still learn the revocation when it comes back.
    n2.stop()
    r = first.cli("node", "remove", ids[2])
    assert r.returncode == 0 and f"node {ids[2]} removed" in r.stdout, r.stderr
    n2b = Daemon(tmp_path, "n2", p2p_host="127.0.0.3").start()
    daemons.append(n2b)

    def revoked_and_dead(d: Daemon) -> bool:
        v = {n["node_id"]: n for n in d.json("nodes")["nodes"]}
        return ids[2] in v and v[ids[2]]["revoked"] and v[ids[2]]["state"] in ("dead", "left")

    def forgotten_or_revoked(d: Daemon) -> bool:
        # A restarted node that never saw n3 alive again may not list it at all: that is fine too.
        return ids[2] not in {n["node_id"] for n in d.json("nodes")["nodes"]} or revoked_and_dead(d)

    wait_sync(lambda: revoked_and_dead(first), timeout_s=60, interval_s=0.3)
    wait_sync(lambda: "revocation applied" in n2b.logs() and forgotten_or_revoked(n2b), timeout_s=60, interval_s=0.3)
    # The removed node's messages are refused (counted as revoked) and nobody lets it back.
    wait_sync(lambda: "reason=revoked" in first.logs(), timeout_s=10, interval_s=0.2)
    assert ids[2] not in _alive(first) and ids[2] not in _alive(n2b)


def _failures(d: Daemon) -> dict[str, int]:
    rep = json.loads(d.cli("doctor", "--json").stdout)
    return rep["sessions"]["handshake_failures"]  # type: ignore[no-any-return]  # JSON


@pytest.mark.timeout(240)  # three daemons and eight CLI runs on a loaded machine
def test_doctor_healthy_bad_seed_and_daemon_down(tmp_path: Path, daemons: list[Daemon]) -> None:
    first = Daemon(tmp_path, "n1", p2p_host="127.0.0.2").start()
    daemons.append(first)
    n2 = _joined(tmp_path, first, "n2", "127.0.0.3", daemons)
    wait_sync(lambda: len(_alive(n2)) == 2, timeout_s=15, interval_s=0.2)
    ok = n2.cli("doctor")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "answers in" in ok.stdout and "clock skew" in ok.stdout and "no problems found" in ok.stdout
    assert "mdns:" in ok.stdout and "off" in ok.stdout and "127.0.0.3" in ok.stdout
    rep = json.loads(n2.cli("doctor", "--json").stdout)
    assert rep["seeds"][0]["ok"] and abs(rep["seeds"][0]["skew_s"]) < 1 and rep["cert"]["expires_in_s"] > 86400
    # Per peer: the encrypted session to n1 (cipher, age, last rekey), and handshake failures by reason.
    first_id = first.json("status")["node_id"]
    ss = rep["sessions"]
    to_first = [p for p in ss["peers"] if p["peer"] == first_id]
    assert to_first and ss["handshakes_ok"] >= 1 and isinstance(ss["handshake_failures"], dict), ss
    assert to_first[0]["cipher"] == ss["cipher"] and "chacha20" in ss["cipher"].lower()
    assert 0 <= to_first[0]["last_rekey_age_s"] <= to_first[0]["age_s"] < 120 and to_first[0]["epoch_out"] == 0
    assert f"session {first_id} " in ok.stdout and "established" in ok.stdout and "failures:" in ok.stdout

    # A node of another network that seeds n1: the handshakes fail, and both doctors say why, by reason.
    lonely = Daemon(tmp_path, "n3", p2p_host="127.0.0.4",
                    extra=["--seed", "127.0.0.9:9", "--seed", first.p2p_address()]).start()
    daemons.append(lonely)
    # The member of the other network refuses n1's certificate (unknown CA); n1 sees it hang up.
    wait_sync(lambda: _failures(lonely).get("unknown_ca", 0) > 0, timeout_s=20, interval_s=0.5)
    bad = lonely.cli("doctor")
    assert bad.returncode == 1 and "seed 127.0.0.9:9 does not answer" in bad.stdout and "fix:" in bad.stdout
    assert "belongs to another network" in bad.stdout
    assert "unknown_ca" in next(ln for ln in bad.stdout.splitlines() if ln.startswith("sessions:"))
    assert sum(_failures(first).values()) > 0

    lonely.stop()
    down = lonely.cli("doctor")
    assert down.returncode == 1 and "not running" in down.stdout and "aiosd run" in down.stdout


@pytest.mark.timeout(240)  # two daemons and ten CLI runs on a loaded machine
def test_join_refuses_an_initialised_dir_and_uses_address(tmp_path: Path, daemons: list[Daemon]) -> None:
    first = Daemon(tmp_path, "n1", p2p_host="127.0.0.2").start()
    daemons.append(first)
    tok = first.json("token", "create", "--uses", "2")
    r = cli("join", tok["token"], "--data-dir", str(first.data_dir))
    assert r.returncode == 1 and "in use" in r.stderr  # the running daemon holds its data dir
    assert cli("init", "--data-dir", str(tmp_path / "other")).returncode == 0
    r = cli("join", tok["token"], "--data-dir", str(tmp_path / "other"))
    assert r.returncode == 1 and "already has an identity" in r.stderr and "--force" in r.stderr
    r = cli("join", tok["token"], "--data-dir", str(tmp_path / "x"), "--address", "127.0.0.9:9")
    assert r.returncode == 1 and "could not reach any seed" in r.stderr
    # A seed of another network: the joiner's session pins the token's CA, so nothing is sent to it.
    other = Daemon(tmp_path, "other", p2p_host="127.0.0.3").start()
    daemons.append(other)
    r = cli("join", tok["token"], "--data-dir", str(tmp_path / "z"), "--address", other.p2p_address())
    assert r.returncode == 1 and "ca_mismatch" in r.stderr, r.stderr
    assert other.json("token", "list")["tokens"] == []
    other.stop()
    r = cli("join", tok["token"], "--data-dir", str(tmp_path / "y"), "--address", first.p2p_address(), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["seed"] == first.p2p_address()
    listed = first.json("token", "list")["tokens"]
    assert listed[0]["uses_left"] == 1 and len(listed[0]["used_by"]) == 1
    t0 = time.time()
    assert listed[0]["expires"] > t0
