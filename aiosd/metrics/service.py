"""Service "metrics": sample this node every few seconds, keep a bounded local series, publish
the current summary to the replicated `metrics` table (when a capacity figure moved, else every
`refresh_interval_s`: each summary costs ~80 signed pushes at N=10), and serve metrics over the API.

Names follow AIOS paths (`vcpu.load_15m`, `gpu.totalFreeMem`, runtime/metrics.py). The summary
record nests them (`{"vcpu": {"load_15m": ...}}`), so the filter language's dot paths reach them
directly: `{"variable": "gpu.totalFreeMem", "operator": ">", "value": 8000}`. Every node reads every
node's summary from its own registry copy; per-cluster aggregates are computed from those.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Self

from aiohttp import web

from aiosd.api.routes import ApiProblem, Route, json_ok
from aiosd.context import NodeContext, ServiceKey
from aiosd.instances.service import RUNTIME_KEY
from aiosd.membership.service import MEMBERSHIP_KEY
from aiosd.metrics.prom import edge_text, prometheus_text
from aiosd.registry.service import REGISTRY_KEY
from runtime.metrics import NodeMetrics, acollect

log = logging.getLogger(__name__)

METRICS_TABLE = "metrics"
# Cluster sums: totals add up; loads and utilisations are averaged over the cluster's nodes.
_SUMMED = ("vcpu.count", "memory.totalMem", "memory.freeMem", "memory.usedMem", "gpu.count", "gpu.totalMem",
           "gpu.totalUsedMem", "gpu.totalFreeMem", "disk.free", "disk.used", "disk.max")


# Capacity figures placement filters read (`gpu.totalFreeMem > 8000`). A summary is gossiped to every
# node (~80 pushes per summary at N=10), so it is republished early only when one of these moved by
# CHANGE_FRACTION; loads, counters and temperatures wait for the refresh.
_CAPACITY = ("vcpu.count", "memory.totalMem", "memory.freeMem", "disk.free", "disk.max", "gpu.count",
             "gpu.totalMem", "gpu.totalFreeMem")
CHANGE_FRACTION = 0.1


def capacity_changed(old: dict[str, float] | None, new: dict[str, float]) -> bool:
    """True if a capacity figure moved by CHANGE_FRACTION of its larger value (or nothing was published)."""
    if old is None:
        return True
    for name in _CAPACITY:
        a, b = old.get(name, 0.0), new.get(name, 0.0)
        if abs(b - a) > CHANGE_FRACTION * max(abs(a), abs(b)):
            return True
    return False


def compact(v: float) -> float | int:
    """Whole numbers as ints, others to 3 decimals: summaries ride on gossip, where bytes count."""
    r = round(v, 3)
    return int(r) if r.is_integer() else r


def nest(flat: dict[str, float]) -> dict[str, Any]:
    """{"vcpu.load_1m": 1.0} -> {"vcpu": {"load_1m": 1.0}} (AIOS dot paths)."""
    out: dict[str, Any] = {}
    for name, v in flat.items():
        head, _, tail = name.partition(".")
        if tail:
            out.setdefault(head, {})[tail] = v
        else:
            out[head] = v
    return out


def flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in doc.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, name + "."))
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out[name] = float(v)
    return out


def summary_doc(node: str, cluster: str, ts: float, m: NodeMetrics) -> dict[str, Any]:
    """The replicated record: metric groups at the top level, so `vcpu.load_15m` is a path."""
    values = {k: compact(v) for k, v in m.flat().items()}
    return {"node_id": node, "cluster": cluster, "ts": int(ts), **nest(values), "gpus": m.per_gpu()}


def cluster_aggregates(summaries: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per cluster: sums of capacities, means of everything else, and the node count."""
    by: dict[str, list[dict[str, float]]] = {}
    for s in summaries:
        groups = {k: v for k, v in s.items() if isinstance(v, dict)}
        by.setdefault(str(s.get("cluster", "")), []).append(flatten(groups))
    out: dict[str, dict[str, float]] = {}
    for cluster, rows in sorted(by.items()):
        names = sorted({n for r in rows for n in r})
        agg: dict[str, float] = {"nodes": float(len(rows))}
        for n in names:
            vals = [r[n] for r in rows if n in r]
            agg[n] = sum(vals) if n in _SUMMED else sum(vals) / len(vals)
        out[cluster] = agg
    return out


class MetricsService:
    """Service "metrics"; see the module docstring."""

    name = "metrics"

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        ms = getattr(ctx.settings, "metrics", None)
        self.interval_s: float = ms.interval_s if ms is not None else 5.0
        self.retention = int(ms.retention_points) if ms is not None else 720
        self.publish_interval_s: float = ms.publish_interval_s if ms is not None else 15.0
        self.refresh_interval_s: float = max(self.publish_interval_s, ms.refresh_interval_s if ms is not None
                                             else 300.0)
        self._published_at = float("-inf")
        self._published: dict[str, float] | None = None  # values of the last summary published
        self.node_id = str(ctx.identity.node_id)
        self.cluster = str(ctx.identity.cert.cluster)
        self.series: dict[str, deque[tuple[float, float]]] = {}
        self.current: NodeMetrics | None = None
        self.samples = 0
        self.publish_failures = 0
        self._ready = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self._task: asyncio.Task[None] | None = None
        # Roles started later add their own metrics: a JSON section of /v1/metrics and Prometheus lines.
        self.sections: dict[str, Callable[[], dict[str, Any]]] = {}
        self.prometheus_sources: list[Callable[[str], str]] = []
        # Listeners' edge counters (federation/edge.py) by listener; the p2p port is found in ctx.
        self.edges: dict[str, Callable[[], dict[str, Any]]] = {}

    async def __aenter__(self) -> Self:
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        self._task = self._tg.create_task(self._loop(), name="metrics-collector")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        assert self._tg is not None
        await self._tg.__aexit__(None, None, None)

    async def _loop(self) -> None:
        while True:
            try:
                await self.sample()
            except Exception:  # one sample is a unit of work; the next one may succeed
                log.exception("metrics sample failed")
            await asyncio.sleep(self.interval_s)

    async def sample(self) -> NodeMetrics:
        """Take one sample now: series, current value, and the replicated summary."""
        gpus: list[Any] = []
        runtime = self.ctx.find(RUNTIME_KEY)
        inv = getattr(runtime, "inventory", None)
        if inv is not None and getattr(runtime, "gpu_info", None):
            gpus = list(await inv.ametrics())
        m = await acollect(gpus, self.ctx.data_dir)
        now = time.time()
        for name, v in m.values:
            q = self.series.get(name)
            if q is None:
                q = self.series[name] = deque(maxlen=self.retention)
            q.append((now, v))
        self.current = m
        self.samples += 1
        self._ready.set()
        reg = self.ctx.find(REGISTRY_KEY)
        mono = time.monotonic()
        age = mono - self._published_at
        flat = m.flat()
        if reg is not None and (age >= self.refresh_interval_s or (
                age >= self.publish_interval_s and capacity_changed(self._published, flat))):
            self._published_at, self._published = mono, flat
            try:
                await reg.put(METRICS_TABLE, self.node_id, self.summary(now))
            except Exception:  # e.g. the store is full; local metrics keep working
                self.publish_failures += 1
                log.warning("metrics publish failed", exc_info=True)
        return m

    def summary(self, ts: float) -> dict[str, Any]:
        assert self.current is not None
        return summary_doc(self.node_id, self.cluster, ts, self.current)

    def routes(self) -> list[Route]:
        return [
            Route("GET", "/v1/metrics", self._h_local, "this node's current metrics (AIOS names)", tag="metrics"),
            Route("GET", "/v1/metrics/nodes", self._h_nodes, "every node's latest summary (replicated)",
                  tag="metrics"),
            Route("GET", "/v1/metrics/nodes/{node}", self._h_node, "one node's latest summary", tag="metrics"),
            Route("GET", "/v1/metrics/clusters", self._h_clusters, "per-cluster aggregates", tag="metrics"),
            Route("GET", "/v1/metrics/series/{name}", self._h_series,
                  "this node's recent samples of one metric (bounded retention)", tag="metrics"),
            Route("GET", "/metrics", self._h_prometheus, "Prometheus text exposition", tag="metrics"),
        ]

    async def _current(self) -> NodeMetrics:
        if self.current is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await self._ready.wait()
        if self.current is None:
            raise ApiProblem(503, "not_ready", "no metrics sample yet")
        return self.current

    async def summaries(self) -> list[dict[str, Any]]:
        """Every node's latest summary (from the replicated registry; this node's alone without one)."""
        return await self._summaries()

    async def _summaries(self) -> list[dict[str, Any]]:
        reg = self.ctx.find(REGISTRY_KEY)
        if reg is None:
            return [summary_doc(self.node_id, self.cluster, time.time(), await self._current())]
        return [e.value for e in await reg.scan(METRICS_TABLE)]

    async def _h_local(self, _: web.Request) -> web.StreamResponse:
        m = await self._current()
        return json_ok({"node_id": self.node_id, "cluster": self.cluster, "metrics": m.flat(),
                        "gpus": m.per_gpu(), "samples": self.samples, "interval_s": self.interval_s,
                        "edge": self.edge_metrics(),
                        **{name: section() for name, section in self.sections.items()}})

    def edge_metrics(self) -> dict[str, dict[str, Any]]:
        """Per listener: connections refused by reason, idle (slowloris) closes, bad requests, and
        for p2p the handshakes refused by reason."""
        out = {name: source() for name, source in sorted(self.edges.items())}
        members = self.ctx.find(MEMBERSHIP_KEY)
        if members is not None:
            out["p2p"] = members.transport.edge_metrics()
        return out

    async def _h_nodes(self, _: web.Request) -> web.StreamResponse:
        return json_ok({"nodes": await self._summaries()})

    async def _h_node(self, request: web.Request) -> web.StreamResponse:
        node = request.match_info["node"]
        for s in await self._summaries():
            if s.get("node_id") == node:
                return json_ok(s)
        raise ApiProblem(404, "not_found", f"no metrics for node {node}", "node")

    async def _h_clusters(self, _: web.Request) -> web.StreamResponse:
        return json_ok({"clusters": cluster_aggregates(await self._summaries())})

    async def _h_series(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        q = self.series.get(name)
        if q is None:
            raise ApiProblem(404, "unknown_metric", f"no metric {name!r}; known: {', '.join(sorted(self.series))}",
                             "name")
        return json_ok({"name": name, "points": [[t, v] for t, v in q]})

    async def _h_prometheus(self, _: web.Request) -> web.StreamResponse:
        m = await self._current()
        counters: dict[str, float] = {"metrics.samples": float(self.samples)}
        reg = self.ctx.find(REGISTRY_KEY)
        if reg is not None:
            st = reg.stats()
            counters.update({f"replication.{k}": float(v) for k, v in st.items() if isinstance(v, int)})
            for reason, n in st["rejected"].items():
                counters[f"replication.rejected_{reason}"] = float(n)
        members = self.ctx.find(MEMBERSHIP_KEY)
        if members is not None:  # envelopes_accepted, envelopes_rejected_<reason>, ... (docs/threat-model.md)
            counters.update({k: float(v) for k, v in members.transport.verifier.metrics().items()})
        text = prometheus_text(self.node_id, m.flat(), m.per_gpu(), counters)
        text += edge_text(self.node_id, self.edge_metrics())
        text += "".join(source(self.node_id) for source in self.prometheus_sources)
        return web.Response(text=text, content_type="text/plain", charset="utf-8",
                            headers={"X-Prometheus-Format": "0.0.4"})


METRICS_KEY: ServiceKey[MetricsService] = ServiceKey("metrics")


def metrics_service(ctx: NodeContext) -> MetricsService:
    return MetricsService(ctx)


__all__ = [
    "CHANGE_FRACTION",
    "METRICS_KEY",
    "METRICS_TABLE",
    "MetricsService",
    "capacity_changed",
    "cluster_aggregates",
    "flatten",
    "metrics_service",
    "nest",
    "prometheus_text",
    "summary_doc",
]
