"""Test and bench helpers: a minimal block that speaks the instance contract, and a fake NVML.

The stand-in block needs only aiohttp + msgpack (present in the venv and in the base image),
so driver tests do not depend on the real SDK. Behaviour knobs come from the environment:
STANDIN_EXIT_AT_ONCE=CODE prints a line and exits; STANDIN_ALLOC_MB=N allocates (and touches) N MiB
before serving; STANDIN_REPORT_LIMITS=1 prints its cgroup limits and, with STANDIN_BURN_S=S, the CPU
time it got while spinning for S seconds (`standin: limits {json}`). Not imported by the daemon.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STANDIN_BLOCK = r'''
import asyncio, json, os, signal, sys
from aiohttp import web
import msgpack

if os.environ.get("STANDIN_EXIT_AT_ONCE"):
    print("standin: refusing to start: STANDIN_EXIT_AT_ONCE is set", flush=True)
    sys.exit(int(os.environ["STANDIN_EXIT_AT_ONCE"]))
if os.environ.get("STANDIN_ALLOC_MB"):
    hog = b"\x01" * (int(os.environ["STANDIN_ALLOC_MB"]) << 20)
    print("standin: allocated", len(hog) >> 20, "MiB", flush=True)

def cgroup_value(controller, name):
    rel = "/"
    with open("/proc/self/cgroup") as f:
        for line in f:
            parts = line.rstrip("\n").split(":", 2)
            if len(parts) == 3 and controller in parts[1].split(","):
                rel = parts[2]
    for base in ("/sys/fs/cgroup/" + controller + rel, "/sys/fs/cgroup/" + controller):  # host, container
        try:
            with open(base + "/" + name) as f:
                return f.read().strip()
        except OSError:
            pass
    return None

if os.environ.get("STANDIN_REPORT_LIMITS"):
    import time
    report = {"cpu_quota": cgroup_value("cpu", "cpu.cfs_quota_us"), "cpu_period": cgroup_value("cpu", "cpu.cfs_period_us"),
              "memory": cgroup_value("memory", "memory.limit_in_bytes"), "pids": cgroup_value("pids", "pids.max")}
    burn = float(os.environ.get("STANDIN_BURN_S") or 0)
    t0, c0 = time.monotonic(), time.process_time()
    while time.monotonic() - t0 < burn:
        pass
    report["cpu_ratio"] = (time.process_time() - c0) / burn if burn else None
    print("standin: limits", json.dumps(report), flush=True)
ctx = json.loads(os.environ["AIOSD_INSTANCE_CONTEXT"])
iid = ctx["instance_id"]
slots = asyncio.Semaphore(int(os.environ.get("AIOSD_INSTANCE_QUEUE", "64")))
state = {"healthy": True}

async def task(request):
    if slots.locked():
        return web.Response(status=503, body=msgpack.packb({"ok": False, "error": {"type": "Busy"}}))
    async with slots:
        try:
            p = msgpack.unpackb(await request.read(), raw=False)
            assert isinstance(p, dict)
        except Exception:
            return web.Response(status=400, body=msgpack.packb({"ok": False, "error": {"type": "BadRequest"}}))
        data = p.get("data") or {}
        if isinstance(data, dict) and data.get("sleep_s"):
            await asyncio.sleep(float(data["sleep_s"]))
        if isinstance(data, dict) and data.get("raise"):
            return web.Response(status=422, body=msgpack.packb({"ok": False, "error": {
                "type": "ValueError", "message": str(data["raise"]), "block_id": ctx["block_id"], "stage": "on_data"}}))
        out = dict(p, data={"echo": data, "instance_id": iid, "gpus": ctx["allocation_info"]["gpus"]})
        return web.Response(body=msgpack.packb({"ok": True, "packets": [out]}, use_bin_type=True),
                            content_type="application/msgpack")

async def health(request):
    return web.json_response({"healthy": state["healthy"], "detail": iid}, status=200 if state["healthy"] else 503)

async def mgmt(request):
    doc = await request.json()
    if doc.get("mgmt_action") == "set_health":
        state["healthy"] = bool(doc.get("mgmt_data"))
    return web.json_response({"ok": True})

app = web.Application(client_max_size=64 << 20)
app.add_routes([web.post("/v1/task", task), web.get("/health", health), web.post("/mgmt", mgmt)])
print("standin: serving", iid, flush=True)
sock = os.environ.get("AIOSD_INSTANCE_SOCKET")
if sock:
    web.run_app(app, path=sock, print=None, access_log=None)
else:
    web.run_app(app, host="127.0.0.1", port=int(os.environ["AIOSD_INSTANCE_PORT"]), print=None, access_log=None)
'''


def write_standin_block(directory: Path) -> Path:
    """Write the stand-in block into `directory` (block.py + empty requirements.txt); return it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "block.py").write_text(STANDIN_BLOCK, encoding="utf-8")
    (directory / "requirements.txt").write_text("", encoding="utf-8")
    return directory


class FakeNvmlError(Exception):
    pass


@dataclass
class _Mem:
    total: int
    free: int
    used: int


@dataclass
class _Util:
    gpu: int
    memory: int


@dataclass
class _Proc:
    pid: int


@dataclass
class FakeGpu:
    name: str = "NVIDIA Fake 80GB"
    uuid: str = "GPU-fake-0"
    total_mb: int = 81920
    used_mb: int = 0
    util: int = 0
    temperature: int = 40
    power_mw: int = 60_000
    pids: list[int] = field(default_factory=list)


class FakeNvml:
    """Implements the `runtime.gpus.Nvml` seam over a list of FakeGpu (or fails to init)."""

    NVMLError = FakeNvmlError
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, gpus: list[FakeGpu], init_error: str | None = None) -> None:
        self.gpus = gpus
        self.init_error = init_error
        self.inits = 0

    def nvmlInit(self) -> None:  # NVML's names
        if self.init_error:
            raise FakeNvmlError(self.init_error)
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self.inits -= 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        return self.gpus[index]

    def nvmlDeviceGetName(self, handle: Any) -> str:
        return str(handle.name)

    def nvmlDeviceGetUUID(self, handle: Any) -> bytes:  # old bindings return bytes
        return str(handle.uuid).encode()

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:
        mib = 1 << 20
        return _Mem(handle.total_mb * mib, (handle.total_mb - handle.used_mb) * mib, handle.used_mb * mib)

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
        return _Util(handle.util, handle.used_mb * 100 // handle.total_mb)

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        return int(handle.temperature)

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        return int(handle.power_mw)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]:
        return [_Proc(p) for p in handle.pids]
