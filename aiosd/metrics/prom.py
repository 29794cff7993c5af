"""Prometheus text exposition with names per the Prometheus naming guide.

snake_case, base units (bytes, ratios 0..1, celsius, watts), `_total` on counters, one HELP and
one TYPE line per family. The JSON API (`/v1/metrics`) keeps the AIOS names; this module maps
them: a table for the names this daemon samples, a snake_case fallback for any other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

_MIB = float(1 << 20)
_PCT = 0.01
PREFIX = "aiosd_"

# AIOS name -> (Prometheus name, type, factor to base units, help)
FAMILIES: dict[str, tuple[str, str, float, str]] = {
    "vcpu.count": ("vcpus", "gauge", 1.0, "logical CPUs of the node"),
    "vcpu.load_1m": ("load1", "gauge", 1.0, "load average over 1 minute"),
    "vcpu.load_5m": ("load5", "gauge", 1.0, "load average over 5 minutes"),
    "vcpu.load_15m": ("load15", "gauge", 1.0, "load average over 15 minutes"),
    "vcpu.processes": ("processes", "gauge", 1.0, "processes running on the node"),
    "memory.totalMem": ("memory_size_bytes", "gauge", _MIB, "memory of the node"),
    "memory.freeMem": ("memory_available_bytes", "gauge", _MIB, "memory available to new processes"),
    "memory.usedMem": ("memory_used_bytes", "gauge", _MIB, "memory in use"),
    "memory.averageUtil": ("memory_used_ratio", "gauge", _PCT, "memory in use, 0..1"),
    "memory.usedSwap": ("swap_used_bytes", "gauge", _MIB, "swap in use"),
    "memory.freeSwap": ("swap_free_bytes", "gauge", _MIB, "swap free"),
    "disk.free": ("disk_free_bytes", "gauge", _MIB, "free space of the data dir's filesystem"),
    "disk.used": ("disk_used_bytes", "gauge", _MIB, "used space of the data dir's filesystem"),
    "disk.max": ("disk_size_bytes", "gauge", _MIB, "size of the data dir's filesystem"),
    "network.txBytesTotal": ("network_transmit_bytes_total", "counter", 1.0, "bytes sent by the node"),
    "network.rxBytesTotal": ("network_receive_bytes_total", "counter", 1.0, "bytes received by the node"),
    "gpu.count": ("gpus", "gauge", 1.0, "GPUs of the node"),
    "gpu.totalMem": ("gpu_memory_size_bytes", "gauge", _MIB, "memory of all GPUs"),
    "gpu.totalUsedMem": ("gpu_memory_used_bytes", "gauge", _MIB, "GPU memory in use (all GPUs)"),
    "gpu.totalFreeMem": ("gpu_memory_free_bytes", "gauge", _MIB, "GPU memory free (all GPUs)"),
    "gpu.avgMemUtilization": ("gpu_memory_utilization_ratio", "gauge", _PCT, "mean GPU memory utilization, 0..1"),
    "gpu.avgCudaUtilization": ("gpu_utilization_ratio", "gauge", _PCT, "mean GPU utilization, 0..1"),
    "gpu.avgPowerUtilization": ("gpu_power_utilization_ratio", "gauge", _PCT, "mean GPU power use, 0..1"),
    "gpu.avgTemperature": ("gpu_temperature_celsius", "gauge", 1.0, "mean GPU temperature"),
}
# Per-GPU AIOS keys -> (name, factor, help); labelled by gpu.
GPU_FAMILIES: dict[str, tuple[str, float, str]] = {
    "usedMem": ("gpu_device_memory_used_bytes", _MIB, "memory in use on one GPU"),
    "freeMem": ("gpu_device_memory_free_bytes", _MIB, "memory free on one GPU"),
    "totalMem": ("gpu_device_memory_size_bytes", _MIB, "memory of one GPU"),
    "cudaUtilization": ("gpu_device_utilization_ratio", _PCT, "utilization of one GPU, 0..1"),
    "memUtilization": ("gpu_device_memory_utilization_ratio", _PCT, "memory utilization of one GPU, 0..1"),
    "temperature": ("gpu_device_temperature_celsius", 1.0, "temperature of one GPU"),
    "powerDrawW": ("gpu_device_power_watts", 1.0, "power drawn by one GPU"),
}
NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def snake(name: str) -> str:
    """`gpu.avgCudaUtilization` -> `gpu_avg_cuda_utilization`."""
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    s = re.sub(r"[^A-Za-z0-9]+", "_", s).strip("_").lower()
    return s if s and not s[0].isdigit() else f"_{s}"


def counter_name(name: str) -> str:
    base = snake(name)
    return PREFIX + (base if base.endswith("_total") else f"{base}_total")


def _label(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _family(lines: list[str], name: str, kind: str, help_: str, samples: Sequence[tuple[str, float]]) -> None:
    lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{{{labels}}} {value!r}" for labels, value in samples]


def prometheus_text(node: str, values: Mapping[str, float], gpus: Sequence[Mapping[str, Any]],
                    counters: Mapping[str, float]) -> str:
    """Text exposition v0.0.4: node gauges and counters labelled by node, per-GPU gauges by gpu too."""
    lines: list[str] = []
    nl = f'node="{_label(node)}"'
    for aios, v in sorted(values.items()):
        name, kind, factor, help_ = FAMILIES.get(aios, (snake(aios), "gauge", 1.0, f"AIOS metric {aios}"))
        _family(lines, PREFIX + name, kind, help_, [(nl, float(v) * factor)])
    if gpus:
        for key, (name, factor, help_) in GPU_FAMILIES.items():
            _family(lines, PREFIX + name, "gauge", help_,
                    [(f'{nl},gpu="{_label(str(g["gpu_id"]))}"', float(g[key]) * factor) for g in gpus])
    for raw, v in sorted(counters.items()):
        _family(lines, counter_name(raw), "counter", f"{raw.replace('_', ' ')} (count)", [(nl, float(v))])
    return "\n".join(lines) + "\n"


def edge_text(node: str, edges: Mapping[str, Mapping[str, Any]]) -> str:
    """The listeners' edge counters (federation/edge.py: edge_counters), labelled by listener."""
    nl = f'node="{_label(node)}"'
    refused: list[tuple[str, float]] = []
    idle: list[tuple[str, float]] = []
    bad: list[tuple[str, float]] = []
    unmasked: list[tuple[str, float]] = []
    handshakes: list[tuple[str, float]] = []
    for name, c in sorted(edges.items()):
        ll = f'{nl},listener="{_label(name)}"'
        refused += [(f'{ll},reason="{_label(r)}"', float(n)) for r, n in sorted(c["connections_refused"].items())]
        idle.append((ll, float(c["idle_closes"])))
        bad.append((ll, float(c["bad_requests"])))
        unmasked.append((ll, float(c.get("unmasked_frames", 0))))
        handshakes += [(f'{ll},reason="{_label(r)}"', float(n)) for r, n in sorted(c.get("handshakes_rejected", {}).items())]
    lines: list[str] = []
    if edges:
        _family(lines, PREFIX + "edge_connections_refused_total", "counter",
                "connections refused at accept, by reason (per-source or total cap)", refused)
        _family(lines, PREFIX + "edge_idle_closes_total", "counter",
                "connections closed with no complete request in time (idle, slowloris, partial request)", idle)
        _family(lines, PREFIX + "edge_bad_requests_total", "counter", "malformed HTTP requests refused (400)", bad)
        _family(lines, PREFIX + "edge_unmasked_frames_total", "counter",
                "WebSocket connections closed for an unmasked client frame (RFC 6455 5.1)", unmasked)
        if handshakes:  # none refused yet: no family (a family has at least one sample)
            _family(lines, PREFIX + "edge_handshakes_rejected_total", "counter",
                    "p2p session handshakes refused, by reason", handshakes)
    return "\n".join(lines) + "\n" if lines else ""


__all__ = ["FAMILIES", "GPU_FAMILIES", "NAME_RE", "PREFIX", "counter_name", "edge_text", "prometheus_text", "snake"]
