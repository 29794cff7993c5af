"""How fast the network's component and node records spread, on real daemons (issue 17).

Run: .venv/bin/python bench/network_records.py [--rounds 5] [--nodes 3]
1. Component apply on the admin node → the record in every node's `components` table
   (`aiosd apply` path: catalog, NetworkRecords sync, signed push) against the baseline of a raw
   registry PUT of the same record into the same table (same run, same daemons); ratio apply/raw.
2. Join → the joiner's node record on every node (each join of the network's start-up).
Polls each node's API every 20 ms (test replication and membership profiles).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiosd.client import Client  # after the sys.path line: a plain script
from tests.daemons import Daemon, cli

ENV = {"AIOSD_RUNTIME_DRIVER": "process", "AIOSD_REPLICATION_PROFILE": "test", "AIOSD_MEMBERSHIP_PROFILE": "test"}
ROOT = Path(__file__).resolve().parents[1]
MAX_WAIT_S = 30.0


async def keys(d: Daemon, table: str) -> set[str]:
    async with Client(d.socket, timeout_s=10) as c:
        out = await c.get(f"/v1/registry/{table}")
    return {i["key"] for i in out["items"]}


async def until_everywhere(nodes: list[Daemon], table: str, key: str) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < MAX_WAIT_S:
        if all([key in await keys(d, table) for d in nodes]):
            return time.monotonic() - t0
        await asyncio.sleep(0.02)
    raise TimeoutError(f"{table}/{key} not on every node within {MAX_WAIT_S}s")


def component(name: str) -> dict[str, Any]:
    doc = json.loads((ROOT / "examples/echo/component.json").read_text())
    doc["body"]["spec"]["values"]["componentId"]["name"] = name
    return doc


async def main(rounds: int, n: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-netrec-"))
    first = Daemon(root, "n1", p2p_host="127.0.0.2", env=ENV).start()
    nodes = [first]
    joins: list[float] = []
    try:
        tok = json.loads(first.cli("token", "create", "--json", "--uses", str(n), "--ttl", "10m").stdout)["token"]
        for i in range(2, n + 1):
            assert cli("join", tok, "--data-dir", str(root / f"n{i}"), "--json").returncode == 0
            t0 = time.monotonic()
            d = Daemon(root, f"n{i}", p2p_host=f"127.0.0.{i + 1}", env=ENV).start()
            nodes.append(d)
            await until_everywhere(nodes, "nodes", str(d.json("status")["node_id"]))
            joins.append(time.monotonic() - t0)
        applied, raw = [], []
        for r in range(rounds):
            doc = component(f"bench{r}")
            async with Client(first.socket, timeout_s=30) as c:
                t0 = time.monotonic()
                await c.request("POST", "/v1/apply", raw=json.dumps(doc).encode(), content_type="application/json")
            await until_everywhere(nodes, "components", f"model.bench{r}:1.0.0-stable")
            applied.append(time.monotonic() - t0)
            async with Client(first.socket, timeout_s=30) as c:
                t0 = time.monotonic()
                await c.put(f"/v1/registry/components/raw{r}", {"uri": f"raw{r}", "document": doc})
            await until_everywhere(nodes, "components", f"raw{r}")
            raw.append(time.monotonic() - t0)
        med_a, med_r = statistics.median(applied), statistics.median(raw)
        print(f"nodes={n} rounds={rounds}")
        print(f"component apply -> every node: p50 {med_a * 1000:.0f} ms, max {max(applied) * 1000:.0f} ms "
              "(from the API request)")
        print(f"raw registry PUT -> every node (baseline, from the API request): p50 {med_r * 1000:.0f} ms, max {max(raw) * 1000:.0f} ms")
        print(f"ratio apply/raw (p50): {med_a / med_r:.2f}")
        print(f"join (daemon start) -> its node record on every node: {', '.join(f'{j:.2f}s' for j in joins)}")
    finally:
        for d in nodes:
            d.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--nodes", type=int, default=3)
    a = ap.parse_args()
    asyncio.run(main(max(1, min(a.rounds, 50)), max(2, min(a.nodes, 5))))
