"""Bench: place 10,000 instances on 1,000 simulated nodes (8 GPUs each), placements/s on one core.

Baseline in the same run: the same allocator scanning every node per placement (what a policy
without the scheduler's index does), over fewer placements. Target (spec task): >= 5,000/s.
Usage: python bench/scheduler.py [instances] [nodes]
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Mapping
from typing import Any

from aiosd.controller import GpuView, NodeView, place
from aiosd.policies import PolicyRegistry, PolicyRunner
from aiosd.policies.builtin import BUILTINS
from aiosd.policies.builtin.allocation import BestFitAllocator, choose_by_scan
from aiosd.specs import ParsedBlock, ParsedComponent, ResolvedBlock, parse_document, resolve_block


class ScanOnly(BestFitAllocator):
    """The same choice by scanning every node view per placement (no index, no input checks)."""

    def eval(
        self, parameters: Mapping[str, Any], input_data: Mapping[str, Any], context: Any
    ) -> dict[str, Any]:
        choice = choose_by_scan(input_data["payload"]["nodes"], self.requirement)
        if choice is None:
            return {"node_id": None, "gpus": []}
        return {"node_id": choice[0], "gpus": list(choice[1])}


def make_block(uri: str, mode: str) -> ResolvedBlock:
    comp = parse_document(
        {
            "header": {"templateUri": "Parser/V1"},
            "body": {
                "spec": {
                    "values": {
                        "componentId": {"name": "m", "version": "1", "releaseTag": "stable"},
                        "componentType": "model",
                        "containerRegistryInfo": {"containerImage": "localhost/m:latest"},
                    }
                }
            },
        }
    )
    block = parse_document(
        {
            "header": {"templateUri": "Parser/V1"},
            "body": {
                "spec": {
                    "values": {
                        "blockId": "bench",
                        "blockComponentURI": "model.m:1-stable",
                        "minInstances": 1,
                        "maxInstances": 10000,
                        "policyRulesSpec": [
                            {
                                "values": {
                                    "name": "resourceAllocator",
                                    "policyRuleURI": uri,
                                    "settings": {"selection_mode": mode},
                                    "parameters": {
                                        "gpus": 1,
                                        "min_gpu_free_memory": 2000,
                                        "max_gpu_utilization": 0.9,
                                        "cpus": 0.5,
                                        "min_memory_mb": 1024,
                                    },
                                }
                            }
                        ],
                    }
                }
            },
        }
    )
    assert isinstance(comp, ParsedComponent) and isinstance(block, ParsedBlock)
    return resolve_block(block, comp)


def make_nodes(n: int, rng: random.Random) -> list[NodeView]:
    return [
        NodeView(
            node_id=f"node-{i:04d}",
            cluster="c1",
            alive=rng.random() > 0.02,
            vcpus=64,
            memory_mb=512_000,
            gpus=tuple(
                GpuView(
                    index=g,
                    memory_total_mb=81920,
                    memory_free_mb=rng.choice([81920, 60000, 40000]),
                    util_pct=rng.choice([0, 20, 50, 95]),
                    uuid=f"GPU-{i}-{g}",
                    name="H100",
                )
                for g in range(8)
            ),
        )
        for i in range(n)
    ]


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    n_nodes = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000
    reg = PolicyRegistry()
    for uri, cls in BUILTINS.items():
        reg.register(uri, cls)
    reg.register("bench.scan:v1", ScanOnly)
    runner = PolicyRunner(reg)
    nodes = make_nodes(n_nodes, random.Random(7))
    for mode in ("best-fit", "spread"):
        block = make_block("policy.resourceAllocator.best-fit:v1", mode)
        start = time.perf_counter()
        result = place(block, nodes, count, runner)
        fast = count / (time.perf_counter() - start)
        scan_count = max(1, count // 50)
        scan_block = make_block("bench.scan:v1", mode)
        start = time.perf_counter()
        place(scan_block, nodes, scan_count, runner)
        slow = scan_count / (time.perf_counter() - start)
        start = time.perf_counter()
        dry = place(block, nodes, count, runner, dry_run=True)
        dry_rate = count / (time.perf_counter() - start)
        used = len({p.node_id for p in result.placements})
        print(
            f"{mode:9s} {count} instances on {n_nodes} nodes: {fast:9.0f} placements/s "
            f"(scan baseline {slow:7.0f}/s, {fast / slow:5.1f}x), dry-run {dry_rate:8.0f}/s "
            f"with {len(dry.candidates)} scores; {used} nodes used; target >= 5000: "
            f"{'PASS' if fast >= 5000 else 'FAIL'}"
        )


if __name__ == "__main__":
    main()
