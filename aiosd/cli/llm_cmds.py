"""`aiosd llm plan MODEL_DIR`: preview how a checkpoint splits over nodes (exo-style), from aiosd.llm.plan.
`aiosd llm split MODEL_DIR --stages N [--apply]`: the stage blocks and the vDAG chaining them (aiosd.llm.split).

Offline: the nodes are given with --nodes NAME=FREE_GIB[:BANDWIDTH_GBS[:gpu|cpu]] (default: this machine's
available memory at 20 GB/s), the link latency with --latency-ms. `plan` applies nothing; `split` prints
the documents, or with --apply applies them cluster-wide (the controller places the stages).
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


def _even(layers: int, stages: int) -> list[int]:
    return [layers // stages + (1 if i < layers % stages else 0) for i in range(stages)]


def cmd_llm_split(args: argparse.Namespace, env: Env) -> int:
    from aiosd.llm.plan import PlanError, profile_from_config, propose_plans
    from aiosd.llm.split import SplitError, cuts_of, split_documents, vdag_uri

    model_dir = Path(args.model_dir).resolve()
    try:
        config = json.loads((model_dir / "config.json").read_text())
        layers = int(config["num_hidden_layers"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"MODEL_DIR: cannot read {model_dir / 'config.json'} (num_hidden_layers): {e}") from None
    if args.dtype not in DTYPE_BYTES:
        raise UsageError(f"--dtype: one of {', '.join(DTYPE_BYTES)}")
    if not 1 <= args.stages <= layers:
        raise UsageError(f"--stages: 1..{layers} (the model has {layers} layers)")
    if args.nodes:
        try:
            plans = propose_plans(profile_from_config(config, DTYPE_BYTES[args.dtype]),
                                  [_node(s) for s in args.nodes.split(",")], stages=args.stages,
                                  default_latency_s=args.latency_ms / 1e3)
        except PlanError as e:
            raise UsageError(str(e)) from None
        ranges = [(st.start, st.end) for st in plans[0].stages]
    else:
        ranges = cuts_of(_even(layers, args.stages))
    component = json.loads((Path(__file__).resolve().parents[2] / "examples/llm-stage/component.json").read_text())
    name = args.name or "".join(c if c.isalnum() or c in "-_" else "-" for c in model_dir.name)[:40] + "-split"
    try:
        docs = split_documents(component, name, str(model_dir), ranges, dtype=args.dtype, device=args.device,
                               max_context=args.max_context, replicas=args.replicas,
                               max_sessions=args.max_sessions, threads=args.threads, cpus=args.cpus,
                               wait_s=args.step_timeout)
    except SplitError as e:
        raise UsageError(str(e)) from None
    summary = {"vdag": vdag_uri(name), "model": name, "stages": [list(r) for r in ranges],
               "blocks": [d["body"]["spec"]["values"]["blockId"] for d in docs[1:-1]]}
    if not args.apply:
        if env.json:
            print_json({**summary, "documents": docs})
        else:
            print("\n".join(json.dumps(d) for d in docs))
        return 0
    from aiosd.cli.spec_cmds import APPLY_TIMEOUT_S

    out = env.call("POST", "/v1/apply?cluster=1", raw=json.dumps(docs).encode(), timeout_s=APPLY_TIMEOUT_S)
    if env.json:
        print_json({**summary, "applied": out})
    else:
        for (a, b), bid in zip(ranges, summary["blocks"]):
            print(f"stage {bid}: layers [{a}, {b})")
        print(f"vDAG {summary['vdag']}: OpenAI model {name!r}")
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
    q = command(inner, "split", "create the stage blocks of a checkpoint and the vDAG chaining them",
                "Split MODEL_DIR into --stages contiguous layer ranges (planned over --nodes, else even), one "
                "stage block each, chained by a vDAG served by the OpenAI endpoint as model NAME. Without "
                "--apply the documents are printed.",
                "examples:\n  aiosd llm split /tmp/aiosd-tiny-llama --stages 2 --apply\n"
                "  aiosd llm split ./llama-8b --stages 2 --nodes a=24:900:gpu,b=16:400:gpu --dtype bfloat16",
                cmd_llm_split)
    q.add_argument("model_dir", metavar="MODEL_DIR", help="a Hugging Face checkpoint directory (the same path "
                   "on every node)")
    q.add_argument("--stages", type=int, default=2, help="number of stages (default 2)")
    q.add_argument("--nodes", help="plan the ranges over NAME=FREE_GIB[:BANDWIDTH_GBS[:gpu|cpu]],...")
    q.add_argument("--latency-ms", type=float, default=1.0, help="link latency for the plan (default 1)")
    q.add_argument("--name", help="the vDAG (and OpenAI model) name (default: MODEL_DIR's name + -split)")
    q.add_argument("--dtype", default="float32", help="float32, float16 or bfloat16 (default float32)")
    q.add_argument("--device", default="cpu", help="cpu or cuda:N (default cpu)")
    q.add_argument("--max-context", type=int, default=2048, help="context cap in tokens (default 2048)")
    q.add_argument("--replicas", type=int, default=1, help="instances per stage (default 1; 2 = a warm spare)")
    q.add_argument("--max-sessions", type=int, default=8, help="KV caches each stage keeps (default 8)")
    q.add_argument("--threads", type=int, help="torch threads per stage")
    q.add_argument("--cpus", type=float, default=0.5, help="CPUs each stage reserves (default 0.5)")
    q.add_argument("--step-timeout", type=float, default=10.0,
                   help="seconds the entry waits for one token before it replays the history elsewhere (default 10)")
    q.add_argument("--apply", action="store_true", help="apply the documents cluster-wide")
    return p


REGISTER = [register_llm]

__all__ = ["REGISTER", "cmd_llm_plan", "cmd_llm_split"]
