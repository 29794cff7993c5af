"""`PUT /v1/log-level`: change the daemon's log level without a restart."""

from __future__ import annotations

import logging
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


def admin_routes() -> list[Route]:
    return [Route("PUT", "/v1/log-level", put_log_level, "change the daemon's log level at run time",
                  request=LogLevelBody, response=LogLevelBody)]


__all__ = ["LogLevelBody", "admin_routes"]
