"""Checkers over a run's History and the healed cluster's state. Each returns Violations.

The rules (what the daemons promise):
- registry: every acknowledged write is on every node with its value, and the table digests of
  all nodes are equal within `promise_s` of the last heal.
- controller: at most one node is leader in any term (from the observed samples), and a node's
  commit index never goes back within one daemon process; every
  acknowledged placement is in the healed committed state and every acknowledged delete is not;
  an answer that says "refused" (4xx but 429) was not applied; the echo block's instance count is
  the last acknowledged scale (or an unacknowledged later one); all nodes hold the same placements.
- instances: after healing, each placed echo instance runs on exactly one node (`/v1/ps`).
- inference: every 2xx answer echoes its own message; every error answer has a status and a
  message; no request goes unanswered (client deadline) while no fault was active.
- daemons: no daemon exited unless a fault killed it; RSS and open fds stay within bounds.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from tests.chaos.history import Api, History, Op, Outcome
from tests.chaos.net import ChaosNet
from tests.chaos.workloads import ECHO, TABLE

DEFINITE_REFUSALS = {400, 403, 404, 409, 422}
RSS_BOUND_MB = 400.0
FD_BOUND = 400


@dataclass(frozen=True, slots=True)
class Violation:
    checker: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.checker}] {self.detail}"


async def _all(api: Api, nodes: list[int], path: str, timeout_s: float = 10.0) -> dict[int, Any]:
    replies = await asyncio.gather(*(api.call(i, "GET", path, timeout_s=timeout_s) for i in nodes))
    return {i: r.body for i, r in zip(nodes, replies, strict=True) if r.outcome is Outcome.OK}


async def wait_equal(api: Api, nodes: list[int], path: str, pick: Any, timeout_s: float) -> tuple[bool, float]:
    """Poll `path` on all nodes until `pick(body)` is equal everywhere; (equal, seconds taken)."""
    t0 = time.monotonic()
    while True:
        got = await _all(api, nodes, path, timeout_s=3.0)
        if len(got) == len(nodes) and len({json.dumps(pick(b), sort_keys=True) for b in got.values()}) == 1:
            return True, time.monotonic() - t0
        if time.monotonic() - t0 > timeout_s:
            return False, time.monotonic() - t0
        await asyncio.sleep(0.1)


def _table_digest(body: Any) -> Any:
    return body["tables"].get(TABLE)


async def check_registry(api: Api, hist: History, nodes: list[int], promise_s: float,
                         settle_s: float = 30.0) -> tuple[list[Violation], float]:
    out: list[Violation] = []
    equal, took = await wait_equal(api, nodes, "/v1/registry/_digests", _table_digest, settle_s)
    if not equal:
        out.append(Violation("registry", f"digests of {TABLE!r} not equal on all nodes {settle_s:.0f}s after healing"))
    elif took > promise_s:
        out.append(Violation("registry", f"digests equal only {took:.1f}s after healing (promise {promise_s:.1f}s)"))
    acked = {o.key: o.value for o in hist.ops_of("reg.put") if o.outcome is Outcome.OK}
    for i in nodes:
        r = await api.call(i, "GET", f"/v1/registry/{TABLE}?limit=100000", timeout_s=20.0)
        if r.outcome is not Outcome.OK:
            out.append(Violation("registry", f"n{i}: could not list {TABLE}: {r.outcome} {r.message}"))
            continue
        have = {it["key"]: it.get("value") for it in r.body["items"]}
        lost = sorted(k for k in acked if k not in have)
        wrong = sorted(k for k, v in acked.items() if k in have and have[k] != v)
        if lost:
            out.append(Violation("registry", f"n{i}: {len(lost)} acknowledged writes missing, e.g. {lost[:3]}"))
        if wrong:
            out.append(Violation("registry", f"n{i}: {len(wrong)} acknowledged writes with another value: {wrong[:3]}"))
    return out, took


def check_terms(hist: History) -> list[Violation]:
    leaders: dict[int, set[str]] = defaultdict(set)
    for s in hist.samples:
        if s.role == "leader":
            leaders[s.term].add(s.node_id)
    return [Violation("controller", f"term {t}: {len(ids)} leaders {sorted(ids)}")
            for t, ids in sorted(leaders.items()) if len(ids) > 1]


RESTARTS = ("kill9", "clock-skew")  # faults whose start or heal gives a node a new daemon process


def check_commit_monotonic(hist: History) -> list[Violation]:
    """Within one daemon process, the commit index a node reports never goes back."""
    resets: dict[int, list[float]] = defaultdict(list)
    for e in hist.events:
        if e.detail.startswith(RESTARTS):
            for i in e.nodes:
                resets[i].append(e.t)
    out: list[Violation] = []
    last: dict[int, tuple[float, int]] = {}
    for s in sorted(hist.samples, key=lambda x: x.t):
        prev = last.get(s.node)
        if prev is not None and s.commit_index < prev[1] and not any(prev[0] <= r <= s.t for r in resets[s.node]):
            out.append(Violation("controller", f"n{s.node}: commit index went back {prev[1]} -> {s.commit_index}"))
        last[s.node] = (s.t, s.commit_index)
    return out


def _indeterminate(o: Op) -> bool:
    return o.outcome is Outcome.TIMEOUT or (o.outcome is Outcome.ERROR and o.status not in DEFINITE_REFUSALS)


def expected_phantoms(hist: History) -> tuple[set[str], set[str], set[str]]:
    """(must be placed, must be absent, either) over the phantom blocks the run touched."""
    by_block: dict[str, list[Op]] = defaultdict(list)
    for o in hist.ops:
        if o.kind in ("ctl.place", "ctl.delete"):
            by_block[o.key].append(o)
    must: set[str] = set()
    absent: set[str] = set()
    either: set[str] = set()
    for block, ops in by_block.items():
        place = next(o for o in ops if o.kind == "ctl.place")
        delete = next((o for o in ops if o.kind == "ctl.delete"), None)
        if place.outcome is Outcome.DOWN or (place.outcome is Outcome.ERROR and not _indeterminate(place)):
            absent.add(block)
        elif delete is None:
            (must if place.outcome is Outcome.OK else either).add(block)
        elif delete.outcome is Outcome.OK:
            (absent if place.outcome is Outcome.OK else either).add(block)
        elif delete.outcome is Outcome.DOWN or not _indeterminate(delete):
            (must if place.outcome is Outcome.OK else either).add(block)
        else:
            either.add(block)
    return must, absent, either


def expected_echo(hist: History, initial: int) -> set[int]:
    scales = hist.ops_of("ctl.scale")
    last_ok = max((i for i, o in enumerate(scales) if o.outcome is Outcome.OK), default=-1)
    allowed = {scales[last_ok].value if last_ok >= 0 else initial}
    allowed |= {o.value for o in scales[last_ok + 1:] if _indeterminate(o)}
    return {int(v) for v in allowed}


def _placements(body: Any) -> dict[str, list[str]]:
    return {b: sorted(i["instance_id"] for i in v.get("instances", [])) for b, v in body["blocks"].items()}


async def check_controller(api: Api, hist: History, nodes: list[int], initial_echo: int,
                           settle_s: float = 20.0) -> list[Violation]:
    out = check_terms(hist) + check_commit_monotonic(hist)
    equal, _ = await wait_equal(api, nodes, "/v1/controller/placements", _placements, settle_s)
    if not equal:
        out.append(Violation("controller", f"placements differ between nodes {settle_s:.0f}s after healing"))
    got = await _all(api, nodes[:1], "/v1/controller/placements")
    if not got:
        return [*out, Violation("controller", f"n{nodes[0]}: placements unreadable after healing")]
    blocks = _placements(next(iter(got.values())))
    must, absent, _ = expected_phantoms(hist)
    if lost := sorted(b for b in must if b not in blocks):
        out.append(Violation("controller", f"{len(lost)} acknowledged placements lost: {lost[:4]}"))
    if back := sorted(b for b in absent if b in blocks):
        out.append(Violation("controller", f"{len(back)} deleted or refused placements present: {back[:4]}"))
    allowed = expected_echo(hist, initial_echo)
    if len(blocks.get(ECHO, [])) not in allowed:
        out.append(Violation("controller", f"{ECHO} has {len(blocks.get(ECHO, []))} instances, expected one of "
                                           f"{sorted(allowed)}"))
    return out


async def check_instances(api: Api, nodes: list[int], settle_s: float = 20.0) -> list[Violation]:
    """Each placed echo instance runs on exactly one node (placements from the first node)."""
    t0 = time.monotonic()
    last = ""
    while time.monotonic() - t0 < settle_s:
        got = await _all(api, nodes[:1], "/v1/controller/placements")
        placed = sorted(_placements(next(iter(got.values()))).get(ECHO, [])) if got else []
        ps = await _all(api, nodes, "/v1/ps", timeout_s=3.0)
        runs = sorted(r["instance_id"] for body in ps.values() for r in body["instances"] if r["block_id"] == ECHO)
        if len(ps) == len(nodes) and placed and runs == placed:
            return []
        last = f"placed {placed}, running {runs}"
        await asyncio.sleep(0.25)
    return [Violation("instances", f"not exactly once {settle_s:.0f}s after healing: {last}")]


def check_inference(hist: History) -> tuple[list[Violation], dict[str, int]]:
    out: list[Violation] = []
    counts: dict[str, int] = defaultdict(int)
    windows = fault_windows(hist)
    for o in hist.ops_of("infer"):
        counts[o.outcome.value] += 1
        if o.outcome is Outcome.OK:
            if o.value not in json.dumps(o.answer):
                out.append(Violation("inference", f"n{o.node}: answer to {o.value!r} does not carry it: {o.answer}"))
        elif o.outcome is Outcome.ERROR:
            if not o.status or not o.message:
                out.append(Violation("inference", f"n{o.node}: unclear error for {o.value!r}: {o.status} {o.answer}"))
        elif o.outcome is Outcome.TIMEOUT and not any(a <= o.t1 and o.t0 <= b for a, b in windows):
            out.append(Violation("inference", f"n{o.node}: {o.value!r} unanswered in {o.t1 - o.t0:.1f}s, no fault"))
    return out, dict(counts)


def fault_windows(hist: History, tail_s: float = 3.0) -> list[tuple[float, float]]:
    """[fault start, heal + tail] intervals (a heal is followed by recovery)."""
    starts: list[float] = []
    out: list[tuple[float, float]] = []
    for e in hist.events:
        if e.what == "fault":
            starts.append(e.t)
        elif e.what == "heal" and starts:
            out.append((starts.pop(0), e.t + tail_s))
    out += [(s, float("inf")) for s in starts]
    return out


def proc_usage(pid: int) -> tuple[float, int]:
    """(RSS MiB, open fds) of a process."""
    rss_kb = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
    return rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd"))


def check_daemons(net: ChaosNet, baseline: dict[int, tuple[int, float, int]]) -> tuple[list[Violation], dict[int, Any]]:
    """baseline: node -> (pid, rss MiB, fds) taken before the run."""
    out: list[Violation] = []
    usage: dict[int, Any] = {}
    for n in net.nodes:
        p = n.daemon.proc
        if p is None or p.poll() is not None:
            code = None if p is None else p.returncode
            out.append(Violation("daemons", f"{n.name} exited ({code}) without being killed: "
                                            f"{n.daemon.logs()[-800:]}"))
            continue
        rss, fds = proc_usage(p.pid)
        usage[n.index] = {"rss_mb": round(rss, 1), "fds": fds}
        pid0, rss0, fds0 = baseline.get(n.index, (p.pid, rss, fds))
        if rss > RSS_BOUND_MB or (pid0 == p.pid and rss > max(2 * rss0, rss0 + 150)):
            out.append(Violation("daemons", f"{n.name}: RSS {rss:.0f} MiB (was {rss0:.0f})"))
        if fds > FD_BOUND or (pid0 == p.pid and fds > fds0 + 100):
            out.append(Violation("daemons", f"{n.name}: {fds} open fds (was {fds0})"))
    return out, usage


__all__ = ["RESTARTS", "Violation", "check_commit_monotonic", "check_controller", "check_daemons", "check_inference", "check_instances",
           "check_registry", "check_terms", "expected_echo", "expected_phantoms", "fault_windows", "proc_usage",
           "wait_equal"]
