"""`Block(Cls).run()`: read the instance environment, build the context and the block, serve until SIGTERM.

The environment is parsed by `InstanceConfig.from_env` (contract in wire.py); serving is server.py's job.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sdk import logfmt, wire
from sdk.context import BlockContext, context_from_json
from sdk.errors import ConfigError
from sdk.runner import TaskRunner
from sdk.server import InstanceServer

log = logging.getLogger(__name__)

DEFAULT_WORKERS = 4
DEFAULT_QUEUE = 64
# Guards against a typo like AIOSD_INSTANCE_WORKERS=10000 spawning thousands of threads.
MAX_WORKERS = 256
MAX_QUEUE = 65536

USAGE = """\
{prog}: this is an aiosd block; it serves tasks only when its instance endpoint is set.
  Run it through aiosd (the daemon sets AIOSD_INSTANCE_SOCKET and AIOSD_INSTANCE_CONTEXT), or by hand:
    AIOSD_INSTANCE_PORT=8080 python3 {prog}          # then POST msgpack packets to http://127.0.0.1:8080/v1/task
    AIOSD_INSTANCE_SOCKET=/tmp/b.sock python3 {prog}
  To try its callbacks without a server: from sdk import BlockTester; BlockTester(YourBlock).run({{"your": "input"}})
"""


def _int_env(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        value = default
    else:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name}: must be an integer, got {raw!r}") from None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{name}: must be an integer in {low}..{high}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class InstanceConfig:
    """Where to serve and how much to admit, from AIOSD_INSTANCE_* (see wire.py)."""

    socket_path: str | None
    port: int | None
    context: BlockContext
    workers: int
    queue_max: int
    max_body_bytes: int

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> InstanceConfig:
        """Parse the environment.

        Raises:
            ConfigError: naming the variable (and field) that is wrong; also when neither SOCKET nor PORT is set.
        """
        socket_path = env.get("AIOSD_INSTANCE_SOCKET") or None
        port = None
        if socket_path is None:
            if not env.get("AIOSD_INSTANCE_PORT"):
                raise ConfigError("neither AIOSD_INSTANCE_SOCKET nor AIOSD_INSTANCE_PORT is set")
            port = _int_env(env, "AIOSD_INSTANCE_PORT", 0, 0, 65535)
        elif len(socket_path.encode()) > 107:  # sun_path is 108 bytes on Linux
            raise ConfigError(f"AIOSD_INSTANCE_SOCKET: path longer than 107 bytes ({len(socket_path)})")
        context = context_from_json(env.get("AIOSD_INSTANCE_CONTEXT"))
        init = context.block_init_data
        workers_default = init.get("max_threads", DEFAULT_WORKERS)
        queue_default = init.get("max_queue_size", DEFAULT_QUEUE)
        if isinstance(workers_default, bool) or not isinstance(workers_default, int):
            raise ConfigError("AIOSD_INSTANCE_CONTEXT.block_init_data.max_threads: must be an integer")
        if isinstance(queue_default, bool) or not isinstance(queue_default, int):
            raise ConfigError("AIOSD_INSTANCE_CONTEXT.block_init_data.max_queue_size: must be an integer")
        return cls(
            socket_path=socket_path,
            port=port,
            context=context,
            workers=_int_env(env, "AIOSD_INSTANCE_WORKERS", workers_default, 1, MAX_WORKERS),
            queue_max=_int_env(env, "AIOSD_INSTANCE_QUEUE", queue_default, 0, MAX_QUEUE),
            max_body_bytes=_int_env(env, "AIOSD_INSTANCE_MAX_BODY_BYTES", wire.DEFAULT_MAX_BODY_BYTES,
                                    1024, 1 << 32),
        )


class Block:
    """`Block(MyBlockClass).run()` — the AIOS entry point of a block file."""

    def __init__(self, block_class: type[Any], context: BlockContext | None = None) -> None:
        if not isinstance(block_class, type):
            raise TypeError(f"Block(...) takes the block class itself, got {type(block_class).__name__}")
        if not callable(getattr(block_class, "on_data", None)):
            raise TypeError(f"{block_class.__name__} has no on_data(entry) method")
        self.block_class = block_class
        self.context = context

    def run(self, env: Mapping[str, str] | None = None) -> None:
        """Serve the block until SIGTERM/SIGINT, then exit 0 (exit 2 on a bad environment, 1 if init fails)."""
        env = os.environ if env is None else env
        prog = os.path.basename(sys.argv[0] or "block.py")
        try:
            config = InstanceConfig.from_env(env)
        except ConfigError as e:
            if "neither AIOSD_INSTANCE_SOCKET" in str(e):
                sys.stderr.write(USAGE.format(prog=prog))
            else:
                sys.stderr.write(f"{prog}: bad instance environment: {e}\n")
            sys.stderr.flush()
            raise SystemExit(2) from None
        logfmt.configure(env.get("AIOSD_INSTANCE_LOG_LEVEL", "INFO"))
        context = self.context or config.context
        try:
            block = self.block_class(context)
            runner = TaskRunner(block, context)
        except Exception:  # the block's own init failed: nothing to serve
            log.exception("block init failed", extra={"block_id": context.block_id,
                                                       "block_class": self.block_class.__name__})
            raise SystemExit(1) from None
        code = asyncio.run(_serve(runner, config))
        sys.stderr.flush()
        others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
        if others:  # the block started threads of its own that would keep the process alive past the drain
            os._exit(code)
        if code:
            raise SystemExit(code)


async def _serve(runner: TaskRunner, config: InstanceConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = InstanceServer(runner, workers=config.workers, queue_max=config.queue_max,
                            max_body_bytes=config.max_body_bytes)
    try:
        if config.socket_path is not None:
            await server.start_unix(config.socket_path)
        else:
            await server.start_tcp(config.port or 0)
    except OSError as e:
        log.error("instance cannot listen", extra={"error": str(e), "socket": config.socket_path,
                                                   "port": config.port})
        await server.stop()
        return 2
    await stop.wait()
    await server.stop()
    return 0
