"""`PUT /v1/log-level`: change the daemon's log level without a restart; `POST /v1/stop`: stop this daemon."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from aiosd.api.routes import Route, json_ok, read_model

log = logging.getLogger(__name__)


class LogLevelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    level: Literal["debug", "info", "warning", "error"]


async def put_log_level(request: web.Request) -> web.Response:
    body = await read_model(request, LogLevelBody)
    logging.getLogger().setLevel(body.level.upper())
    log.info("log level changed", extra={"level": body.level})
    return json_ok(body)


class StopAnswer(BaseModel):
    stopping: bool
    pid: int


def admin_routes(stop: Callable[[], None] | None = None) -> list[Route]:
    """The admin routes; with STOP, `POST /v1/stop` asks this daemon (and no other) to stop as on SIGTERM."""
    routes = [Route("PUT", "/v1/log-level", put_log_level, "change the daemon's log level at run time",
                    request=LogLevelBody, response=LogLevelBody)]
    if stop is not None:
        stopper = stop

        async def post_stop(_: web.Request) -> web.Response:
            log.info("stop requested over the API")
            asyncio.get_running_loop().call_soon(stopper)  # after this answer is on its way
            return json_ok(StopAnswer(stopping=True, pid=os.getpid()))

        routes.append(Route("POST", "/v1/stop", post_stop, "stop this daemon (as SIGTERM does)",
                            response=StopAnswer))
    return routes


__all__ = ["LogLevelBody", "StopAnswer", "admin_routes"]
