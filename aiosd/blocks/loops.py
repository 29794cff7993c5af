"""The block service's autoscaler and health loops (a mixin of BlockService, blocks.py).

Every LOOP_TICK_S the loop looks for blocks whose autoscaler or stabilityChecker is due. The
autoscaler gets each instance's peak outstanding tasks since its last turn and its decision is
applied within minInstances..maxInstances through BlockService.scale; the health policy judges the
instances' own /health answers (the supervisor restarts unhealthy instances itself). Built-in
policies run in process; published ones are loaded into the policy sandbox on the block's first turn.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from aiosd.instances.service import RuntimeService
from aiosd.policies import PolicyHandle, PolicyRunner
from aiosd.policies.errors import PolicyError
from aiosd.policies.registry import PolicyRegistry
from aiosd.specs import ResolvedBlock
from aiosd.specs.resolve import PolicySlot
from runtime import InstanceState

log = logging.getLogger("aiosd.blocks.service")

LOOP_TICK_S = 0.2  # how often the autoscaler/health loop looks for due blocks; also the load sample rate
DEFAULT_AUTOSCALE_INTERVAL_S = 10.0
HEALTH_PROBE_TIMEOUT_S = 5.0  # the SDK answers /health from a separate pool; 5 s means it is stuck


@dataclasses.dataclass(slots=True)
class BlockLoop:
    """Per-block autoscaler/health state (policy handles keep their cooldown/retry state)."""

    autoscaler: Any = None  # PolicyHandle (built-in) or AsyncPolicyHandle (published, in the sandbox)
    autoscale_every_s: float = DEFAULT_AUTOSCALE_INTERVAL_S
    next_autoscale: float = 0.0
    peak: dict[str, int] = dataclasses.field(default_factory=dict)
    health: Any = None
    pending: dict[str, tuple[PolicySlot, str]] = dataclasses.field(default_factory=dict)  # published: loaded on first turn
    health_every_s: float = 10.0
    next_health: float = 0.0
    given_up: dict[str, str] = dataclasses.field(default_factory=dict)
    last_decision: str = ""
    hold_s: float = 60.0  # after a manual scale the autoscaler waits this long (its downscale cooldown)


class BlockLoops:
    """Mixin: the loops' half of BlockService (it provides the attributes declared here)."""

    policies: PolicyRegistry
    policy_svc: Any
    runtime: RuntimeService
    _resolved: dict[str, ResolvedBlock]
    _loops: dict[str, BlockLoop]
    _lock: asyncio.Lock

    async def scale(self, bid: str, count: int, victims: Sequence[str] = (), why: str = "mgmt") -> dict[str, Any]:
        raise NotImplementedError  # BlockService.scale

    def _new_loop(self, block: ResolvedBlock) -> BlockLoop:
        st = BlockLoop()
        runner = PolicyRunner(self.policies)
        a = block.policy("autoscaler")
        if a is not None:
            if self._published(a.uri):
                st.pending["autoscaler"] = (a, f"{block.block_id}/autoscaler")
            else:
                st.autoscaler = self._load(runner, a.uri, a.parameters, a.settings, f"{block.block_id}/autoscaler")
            every = a.settings.get("intervalSeconds", a.parameters.get("intervalSeconds", DEFAULT_AUTOSCALE_INTERVAL_S))
            st.autoscale_every_s = float(every) if isinstance(every, int | float) and every > 0 else \
                DEFAULT_AUTOSCALE_INTERVAL_S
            st.next_autoscale = time.monotonic() + st.autoscale_every_s
            hold = {**a.settings, **a.parameters}.get("scale_down_cooldown", 60.0)
            st.hold_s = float(hold) if isinstance(hold, int | float) and hold >= 0 else 60.0
        h = block.policy("stabilityChecker")
        if h is not None:
            if self._published(h.uri):
                st.pending["health"] = (h, f"{block.block_id}/stabilityChecker")
            else:
                st.health = self._load(runner, h.uri, h.parameters, h.settings, f"{block.block_id}/stabilityChecker")
            every = h.settings.get("health_check_interval", h.settings.get("check_interval_sec", 10))
            st.health_every_s = float(every) if isinstance(every, int | float) and every > 0 else 10.0
            st.next_health = time.monotonic() + st.health_every_s
        return st

    def _published(self, uri: str) -> bool:
        return self.policy_svc is not None and self.policies.find(uri) is None

    async def _load_pending(self, bid: str, st: BlockLoop) -> None:
        """Load the block's published autoscaler/health policies into the sandbox (first turn)."""
        for name, (slot, rule_id) in list(st.pending.items()):
            del st.pending[name]
            try:
                handle = await self.policy_svc.runner.load(slot.uri, parameters=dict(slot.parameters),
                                                           settings=dict(slot.settings), rule_id=rule_id)
            except PolicyError as e:
                log.error("block policy not loaded", extra={"block": bid, "policy": slot.uri, "error": str(e)})
                st.last_decision = f"{name} policy {slot.uri} not loaded: {e}"
                continue
            setattr(st, name, handle)

    @staticmethod
    def _load(runner: PolicyRunner, uri: str, parameters: Mapping[str, Any], settings: Mapping[str, Any],
              rule_id: str) -> PolicyHandle | None:
        # Cooldowns live in settings in the AIOS examples but the built-in reads parameters: pass both.
        try:
            return runner.load(uri, parameters={**settings, **parameters}, settings=settings, rule_id=rule_id)
        except PolicyError as e:
            try:
                return runner.load(uri, parameters=parameters, settings=settings, rule_id=rule_id)
            except PolicyError:
                log.warning("policy not loaded", extra={"policy": uri, "error": str(e)})
                return None

    async def _run_loops(self) -> None:
        while True:
            await asyncio.sleep(LOOP_TICK_S)
            now = time.monotonic()
            for bid, st in list(self._loops.items()):
                try:
                    await self._loop_turn(bid, st, now)
                except asyncio.CancelledError:
                    raise
                except Exception:  # one block's turn; the loop keeps serving the others
                    log.exception("block loop turn failed", extra={"block": bid})

    async def _loop_turn(self, bid: str, st: BlockLoop, now: float) -> None:
        res = self._resolved.get(bid)
        if res is None:
            return
        if st.pending:
            await self._load_pending(bid, st)
        rows = [s for s in self.runtime.sup.status() if s.block_id == bid]
        bal = self.runtime.balancer
        for s in rows:
            q = bal.outstanding(s.instance_id) if bal is not None else 0
            st.peak[s.instance_id] = max(st.peak.get(s.instance_id, 0), q)
        if st.autoscaler is not None and now >= st.next_autoscale:
            st.next_autoscale = now + st.autoscale_every_s
            load = [{"instance_id": s.instance_id, "queue_length": st.peak.get(s.instance_id, 0), "utilization": 0.0}
                    for s in rows]
            st.peak.clear()
            out = await _answer(st.autoscaler.eval({"block_data": {"minInstances": res.min_instances,
                                                                   "maxInstances": res.max_instances, "instances": load},
                                                    "now": now}))
            st.last_decision = str(out.get("reason", ""))
            if not out.get("skip", True) and not self._lock.locked():
                cur = len(rows)
                if out.get("operation") == "upscale":
                    want = min(res.max_instances, cur + int(out.get("instances_count", 1)))
                    if want != cur:
                        await self.scale(bid, want, why="autoscaler: " + st.last_decision)
                elif out.get("operation") == "downscale":
                    victims = [str(v) for v in out.get("instances_list", [])]
                    want = max(res.min_instances, cur - len(victims))
                    if want != cur:
                        await self.scale(bid, want, victims, why="autoscaler: " + st.last_decision)
        if st.health is not None and now >= st.next_health:
            st.next_health = now + st.health_every_s
            # The policy judges the instances' own /health answers (the supervisor probes too, for
            # its restarts with back-off); stopped or failed instances have nothing to answer.
            live = [s for s in rows if s.endpoint is not None
                    and s.state not in (InstanceState.STOPPED, InstanceState.FAILED)]
            client = self.runtime.client
            if client is None:
                return
            answers = await asyncio.gather(*(client.health(s.endpoint, HEALTH_PROBE_TIMEOUT_S) for s in live
                                             if s.endpoint is not None))
            data = {s.instance_id: ok for s, ok in zip(live, answers, strict=True)}
            out = await _answer(st.health.eval({"health_check_data": data}))
            for act in out.get("actions", []):
                iid, what = str(act.get("instance_id")), act.get("action")
                if what == "give_up":
                    st.given_up[iid] = str(act.get("reason", ""))
                    log.error("instance given up", extra={"block": bid, "instance": iid, "reason": act.get("reason")})
                else:  # the supervisor restarts unhealthy instances itself, with back-off
                    log.warning("instance unhealthy", extra={"block": bid, "instance": iid,
                                                             "reason": act.get("reason")})


async def _answer(out: Any) -> dict[str, Any]:
    """A policy's answer, whether the handle is a built-in (a dict) or a sandboxed one (awaitable)."""
    got = await out if inspect.isawaitable(out) else out
    return got if isinstance(got, dict) else {}


__all__ = ["DEFAULT_AUTOSCALE_INTERVAL_S", "LOOP_TICK_S", "BlockLoop", "BlockLoops"]
