"""The least a daemon in the task path can cost: an aiohttp server that forwards each request body
to an instance socket over runtime.taskconn and returns the reply bytes, with no validation,
routing, balancing or re-framing. bench/infer_api.py uses it as a same-run floor.

Usage: python bench/support/min_proxy.py LISTEN_SOCKET INSTANCE_SOCKET
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from runtime.spec import Endpoint  # after the sys.path line: a plain script
from runtime.taskconn import TaskPool


async def main(listen: str, target: str) -> None:
    pool = TaskPool(Endpoint(socket=Path(target)), limit=64, max_reply=256 << 20)

    async def forward(request: web.Request) -> web.Response:
        reply = await pool.post("/v1/task", await request.read(), "application/msgpack")
        return web.Response(body=reply.body, status=reply.status, content_type="application/msgpack")

    app = web.Application(client_max_size=8 << 20)
    app.router.add_post("/v1/task", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.UnixSite(runner, listen).start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
