"""Faults on a seeded schedule, and the injector that applies and heals them on a `ChaosNet`.

`schedule(seed, n)` is a pure function: the same seed gives the same faults (kinds, order,
times, targets, parameters), so a failing run is replayed with `AIOSD_TEST_CHAOS_SEED=<seed>`.
A target may be a node index or the role "leader", resolved when the fault starts.

How each kind is made (all inside the test's namespaces, never on the host's interfaces):
- partition-halves / partition-bridge / isolate: nft drop rules (set `blocked`, input and output
  hooks) in each node's namespace; healed by flushing the set.
- loss: nft `numgen random mod 100 < P drop` on every node's input; TCP turns it into
  retransmission delay and reordering between connections. This kernel has no `netem`.
- slow-link: a `tbf` qdisc on one node's eth0 (rate limit, 400 ms queue): queueing delay under load.
- kill9: SIGKILL of the daemon's process group, restarted when healed (its instances outlive it).
- sigstop: SIGSTOP, SIGCONT when healed.
- disk-full: a file fills the node's data-dir tmpfs until ENOSPC; deleted when healed.
- clock-skew: the daemon restarts under libfaketime (FAKETIME=±Ns, inside the 30 s envelope
  window), and restarts with the real clock when healed. (libfaketime 0.9.10 with
  FAKETIME_DONT_FAKE_MONOTONIC=1 breaks Python's time.sleep (EINVAL), so monotonic is shifted
  by the same constant, which a process never notices.)
"""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from tests.chaos.net import ChaosNet, Node

SEED_ENV = "AIOSD_TEST_CHAOS_SEED"
FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


class Kind(StrEnum):
    HALVES = "partition-halves"
    BRIDGE = "partition-bridge"
    ISOLATE = "isolate"
    LOSS = "loss"
    SLOW = "slow-link"
    KILL = "kill9"
    STOP = "sigstop"
    DISK = "disk-full"
    SKEW = "clock-skew"


ALL_KINDS = tuple(Kind)
LEADER = -1  # a target resolved to the current controller leader when the fault starts


@dataclass(frozen=True, slots=True)
class Fault:
    kind: Kind
    duration_s: float
    targets: tuple[int, ...] = ()     # node indexes (1-based) or LEADER; meaning depends on kind
    param: float = 0.0                # loss %, skew s

    def describe(self) -> str:
        who = ",".join("leader" if t == LEADER else f"n{t}" for t in self.targets)
        extra = f" param={self.param:g}" if self.param else ""
        return f"{self.kind.value}[{who}] {self.duration_s:.1f}s{extra}"


def seed_from_env(default: int) -> int:
    raw = os.environ.get(SEED_ENV)
    return int(raw) if raw else default


def schedule(seed: int, n: int, count: int = 3, kinds: Sequence[Kind] = ALL_KINDS,
             skew_ok: bool = True) -> list[Fault]:
    """`count` faults, one after another (pure: same seed, same faults)."""
    rng = random.Random(seed)
    usable = [k for k in kinds if skew_ok or k is not Kind.SKEW]
    out: list[Fault] = []
    for _ in range(count):
        out.append(_one(rng, rng.choice(usable), n))
    return out


def _one(rng: random.Random, kind: Kind, n: int) -> Fault:
    nodes = list(range(1, n + 1))
    rng.shuffle(nodes)
    dur = round(rng.uniform(2.5, 5.0), 1)
    match kind:
        case Kind.HALVES:
            return Fault(kind, dur, tuple(nodes[: (n - 1) // 2]))   # the minority; the rest is the majority
        case Kind.BRIDGE:
            return Fault(kind, dur, tuple(nodes))                   # [0] bridges [1::2] and [2::2]
        case Kind.ISOLATE:
            return Fault(kind, dur, (LEADER if rng.random() < 0.6 else nodes[0],))
        case Kind.LOSS:
            return Fault(kind, dur, (), float(rng.choice((10, 20, 30))))
        case Kind.SLOW:
            return Fault(kind, dur, (nodes[0],))
        case Kind.KILL:
            return Fault(kind, round(rng.uniform(6.0, 9.0), 1), (LEADER if rng.random() < 0.4 else nodes[0],))
        case Kind.STOP:
            return Fault(kind, dur, (LEADER if rng.random() < 0.4 else nodes[0],))
        case Kind.DISK:
            return Fault(kind, dur, (nodes[0],))
        case Kind.SKEW:
            return Fault(kind, dur, (nodes[0],), float(rng.choice((-20, -8, 8, 20))))


@dataclass
class Active:
    """A fault being applied: what it hit and how to heal it."""

    fault: Fault
    nodes: list[Node]
    started: float
    heal: Callable[[], None]
    notes: dict[str, object] = field(default_factory=dict)


class Injector:
    """Applies faults to one ChaosNet; `leader()` names the current leader's node index."""

    def __init__(self, net: ChaosNet, leader: Callable[[], int | None]) -> None:
        self.net = net
        self.leader = leader

    def _node(self, t: int) -> Node:
        if t == LEADER:
            i = self.leader()
            t = i if i is not None else 1
        return self.net.nodes[t - 1]

    def apply(self, f: Fault) -> Active:
        now = time.monotonic()
        match f.kind:
            case Kind.HALVES:
                minority = [self._node(t) for t in f.targets]
                majority = [x for x in self.net.nodes if x not in minority]
                self._cut(minority, majority)
                return Active(f, minority, now, self._heal_cuts, {"majority": majority})
            case Kind.BRIDGE:
                ns = [self._node(t) for t in f.targets]
                self._cut(ns[1::2], ns[2::2])
                return Active(f, ns[:1], now, self._heal_cuts)
            case Kind.ISOLATE:
                x = self._node(f.targets[0])
                self._cut([x], [y for y in self.net.nodes if y is not x])
                return Active(f, [x], now, self._heal_cuts)
            case Kind.LOSS:
                for x in self.net.nodes:
                    x.nft(f"add rule inet aiosd_chaos loss numgen random mod 100 < {int(f.param)} drop\n")
                return Active(f, list(self.net.nodes), now, self._heal_loss)
            case Kind.SLOW:
                x = self._node(f.targets[0])
                _tc(x, "add", "dev", "eth0", "root", "tbf", "rate", "1mbit", "burst", "32kbit", "latency", "400ms")
                return Active(f, [x], now, lambda: _tc(x, "del", "dev", "eth0", "root"))
            case Kind.KILL:
                x = self._node(f.targets[0])
                x.daemon.kill9()
                x.killed = True
                return Active(f, [x], now, lambda: x.start())
            case Kind.STOP:
                x = self._node(f.targets[0])
                x.daemon.signal(signal.SIGSTOP)
                x.frozen = True
                return Active(f, [x], now, lambda: _cont(x))
            case Kind.DISK:
                x = self._node(f.targets[0])
                path = fill_disk(x.data_dir)
                return Active(f, [x], now, lambda: path.unlink(missing_ok=True))
            case Kind.SKEW:
                x = self._node(f.targets[0])
                _restart(x, skew_env(f.param))
                return Active(f, [x], now, lambda: _restart(x, None))

    def _cut(self, a: Sequence[Node], b: Sequence[Node]) -> None:
        for side, other in ((a, b), (b, a)):
            addrs = ", ".join(y.addr for y in other)
            for x in side:
                if addrs:
                    x.nft(f"add element inet aiosd_chaos blocked {{ {addrs} }}\n")

    def _heal_cuts(self) -> None:
        for x in self.net.nodes:
            x.nft("flush set inet aiosd_chaos blocked\n")

    def _heal_loss(self) -> None:
        for x in self.net.nodes:
            x.nft("flush chain inet aiosd_chaos loss\n")


def skew_env(skew_s: float) -> dict[str, str]:
    return {"LD_PRELOAD": str(FAKETIME_LIB), "FAKETIME": f"{skew_s:+.0f}s"}


def _restart(x: Node, extra_env: dict[str, str] | None) -> None:
    x.daemon.stop()
    x.start(extra_env)


def _cont(x: Node) -> None:
    x.daemon.signal(signal.SIGCONT)
    x.frozen = False


def _tc(x: Node, *args: str) -> None:
    subprocess.run(["ip", "netns", "exec", x.ns, "tc", "qdisc", *args], capture_output=True, timeout=10, check=True)


def fill_disk(data_dir: Path) -> Path:
    """Fill the filesystem under data_dir until ENOSPC (down to 4 KiB); return the filler file."""
    path = data_dir / "chaos-fill"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        chunk = 1 << 20
        while chunk >= 4096:
            try:
                os.write(fd, b"\0" * chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                chunk //= 4
    finally:
        os.close(fd)
    return path


__all__ = ["ALL_KINDS", "FAKETIME_LIB", "LEADER", "SEED_ENV", "Active", "Fault", "Injector", "Kind", "fill_disk",
           "schedule", "seed_from_env", "skew_env"]
