"""What a chaos run did and saw: client operations with their outcomes, fault events, and
periodic samples of each node's controller view. Checkers (checkers.py) read only this and the
healed cluster's final state.

Also the small unix-socket API client the workloads use (one aiohttp session per node): every
call ends in an `Outcome` and never raises, so a workload records exactly what the client saw.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Self

import aiohttp


class Outcome(StrEnum):
    OK = "ok"              # a 2xx answer: acknowledged
    ERROR = "error"        # an HTTP error answer (status and message recorded)
    TIMEOUT = "timeout"    # no answer within the client's deadline: indeterminate
    DOWN = "down"          # nothing listens on the socket (killed / restarting): not applied


@dataclass(frozen=True, slots=True)
class Reply:
    outcome: Outcome
    status: int = 0
    body: Any = None
    message: str = ""


@dataclass(slots=True)
class Op:
    """One client operation: `kind` names it (reg.put, ctl.place, ctl.scale, ctl.delete, infer)."""

    kind: str
    node: int
    key: str
    value: Any
    t0: float
    t1: float = 0.0
    outcome: Outcome = Outcome.TIMEOUT
    status: int = 0
    message: str = ""
    answer: Any = None


@dataclass(slots=True)
class Sample:
    """One node's controller view at time t."""

    t: float
    node: int
    node_id: str
    role: str
    term: int
    leader: str | None
    commit_index: int
    quorum: bool


@dataclass(slots=True)
class Event:
    t: float
    what: str        # "fault", "heal", "restart", "note"
    detail: str
    nodes: tuple[int, ...] = ()


@dataclass
class History:
    seed: int
    ops: list[Op] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def event(self, what: str, detail: str, nodes: tuple[int, ...] = (), t: float | None = None) -> Event:
        e = Event(time.monotonic() if t is None else t, what, detail, nodes)
        self.events.append(e)
        return e

    def ops_of(self, kind: str) -> list[Op]:
        return [o for o in self.ops if o.kind == kind]

    def dump(self, path: Path) -> None:
        """One JSON line per op, sample and event (for replaying a failure by eye)."""
        with open(path, "w") as f:
            f.write(json.dumps({"seed": self.seed}) + "\n")
            for group, rows in (("event", self.events), ("op", self.ops), ("sample", self.samples)):
                f.writelines(json.dumps({"type": group, **asdict(r)}, default=str) + "\n" for r in rows)


class Api:
    """Async client to every node's unix socket; `call` returns a Reply and never raises."""

    def __init__(self, sockets: dict[int, Path]) -> None:
        self._sockets = sockets
        self._sessions: dict[int, aiohttp.ClientSession] = {}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for s in self._sessions.values():
            await s.close()
        self._sessions.clear()

    def _session(self, node: int) -> aiohttp.ClientSession:
        s = self._sessions.get(node)
        if s is None or s.closed:
            conn = aiohttp.UnixConnector(path=str(self._sockets[node]), force_close=True)
            s = self._sessions[node] = aiohttp.ClientSession(connector=conn)
        return s

    async def call(self, node: int, method: str, path: str, body: Any = None, timeout_s: float = 5.0) -> Reply:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        try:
            async with asyncio.timeout(timeout_s):
                async with self._session(node).request(method, "http://aiosd" + path, data=data,
                                                       headers=headers) as resp:
                    raw = await resp.read()
                    status = resp.status
        except TimeoutError:
            return Reply(Outcome.TIMEOUT)
        except (aiohttp.ClientConnectorError, FileNotFoundError, ConnectionRefusedError) as e:
            return Reply(Outcome.DOWN, message=type(e).__name__)
        except (aiohttp.ClientError, OSError) as e:  # reset mid-answer (killed): indeterminate
            return Reply(Outcome.TIMEOUT, message=f"{type(e).__name__}: {e}")
        try:
            decoded: Any = json.loads(raw) if raw else None
        except ValueError:
            decoded = raw[:200].decode(errors="replace")
        if status >= 400:
            err = decoded.get("error", {}) if isinstance(decoded, dict) else {}
            msg = str(err.get("message", "")) if isinstance(err, dict) else ""
            return Reply(Outcome.ERROR, status, decoded, msg)
        return Reply(Outcome.OK, status, decoded)

    async def record(self, op: Op, method: str, path: str, body: Any = None, timeout_s: float = 5.0) -> Reply:
        """`call` and write its outcome into `op`."""
        r = await self.call(op.node, method, path, body, timeout_s)
        op.t1 = time.monotonic()
        op.outcome, op.status, op.message = r.outcome, r.status, r.message
        op.answer = r.body if r.outcome is Outcome.OK else None
        return r


__all__ = ["Api", "Event", "History", "Op", "Outcome", "Reply", "Sample"]
