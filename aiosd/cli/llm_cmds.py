"""`aiosd llm plan MODEL_DIR`: preview how a checkpoint splits over nodes (exo-style), from aiosd.llm.plan.

Offline: the nodes are given with --nodes NAME=FREE_GIB[:BANDWIDTH_GBS[:gpu|cpu]] (default: this machine's
available memory at 20 GB/s), the link latency with --latency-ms. Nothing is applied.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from aiosd.cli.common import Env, Sub, command
from aiosd.cli.output import print_json
from aiosd.errors import UsageError

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def _node(spec: str) -> Any:
    from aiosd.llm.plan import NodeCapacity

    name, sep, rest = spec.partition("=")
    parts = rest.split(":")
    try:
        free = float(parts[0]) * (1 << 30)
        bw = float(parts[1]) * 1e9 if len(parts) > 1 and parts[1] else 20e9
    except ValueError:
        raise UsageError(f"--nodes {spec!r}: expected NAME=FREE_GIB[:BANDWIDTH_GBS[:gpu|cpu]]") from None
    device = parts[2] if len(parts) > 2 else "cpu"
    if not sep or not name or free <= 0 or bw <= 0 or device not in ("gpu", "cpu") or len(parts) > 3:
        raise UsageError(f"--nodes {spec!r}: expected NAME=FREE_GIB[:BANDWIDTH_GBS[:gpu|cpu]] with positive numbers")
    return NodeCapacity(name, int(free), bw, device)  # type: ignore[arg-type]


def cmd_llm_plan(args: argparse.Namespace, env: Env) -> int:
    from aiosd.llm.plan import PlanError, format_plans, profile_from_config, propose_plans

    cfg_path = Path(args.model_dir) / "config.json"
    try:
        config = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"MODEL_DIR: cannot read {cfg_path}: {e}") from None
    if args.dtype not in DTYPE_BYTES:
        raise UsageError(f"--dtype: one of {', '.join(DTYPE_BYTES)}")
    if args.nodes:
        nodes = [_node(s) for s in args.nodes.split(",")]
    else:
        import psutil  # type: ignore[import-untyped,unused-ignore]  # no stubs installed

        nodes = [_node(f"local={psutil.virtual_memory().available / (1 << 30):.3f}")]
    if args.latency_ms < 0:
        raise UsageError("--latency-ms: must be >= 0")
    try:
        model = profile_from_config(config, DTYPE_BYTES[args.dtype])
        plans = propose_plans(model, nodes, stages=args.stages, default_latency_s=args.latency_ms / 1e3,
                              kv_tokens=args.kv_tokens)
    except PlanError as e:
        raise UsageError(str(e)) from None
    if env.json:
        print_json({"plans": [{**dataclasses.asdict(p), "tokens_per_s": p.tokens_per_s, "step_s": p.step_s}
                              for p in plans]})
    else:
        print(format_plans(plans))
    return 0


def register_llm(sub: Sub) -> argparse.ArgumentParser:
    p = command(sub, "llm", "LLM tools: plan a model split over nodes",
                "LLM tools. `aiosd llm plan MODEL_DIR` previews a split of a checkpoint over nodes.",
                "examples:\n  aiosd llm plan /tmp/aiosd-tiny-llama")
    inner = p.add_subparsers(dest="llm_command", required=True)
    q = command(inner, "plan", "propose layer ranges per node and expected tok/s (nothing is applied)",
             "Read MODEL_DIR/config.json and propose contiguous layer ranges per node, best first.",
             "examples:\n  aiosd llm plan /tmp/aiosd-tiny-llama\n"
             "  aiosd llm plan ./llama-8b --nodes a=24:900:gpu,b=16:400:gpu --stages 2 --json", cmd_llm_plan)
    q.add_argument("model_dir", metavar="MODEL_DIR", help="a Hugging Face checkpoint directory")
    q.add_argument("--stages", type=int, help="number of stages (default: try 1..number of nodes)")
    q.add_argument("--nodes", help="NAME=FREE_GIB[:BANDWIDTH_GBS[:gpu|cpu]],... (default: this machine)")
    q.add_argument("--latency-ms", type=float, default=1.0, help="link latency between nodes (default 1)")
    q.add_argument("--kv-tokens", type=int, default=2048, help="KV cache each stage reserves (default 2048)")
    q.add_argument("--dtype", default="bfloat16", help="float32, float16 or bfloat16 (default bfloat16)")
    return p


REGISTER = [register_llm]

__all__ = ["REGISTER", "cmd_llm_plan"]
