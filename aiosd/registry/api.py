"""HTTP routes of the registry service: list/get/put/delete records, filter queries, SSE watch."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from aiosd.api.routes import ApiProblem, Route, json_ok, read_json, read_query
from aiosd.registry.service import TABLES, RegistryService
from aiosd.specs.filters import FilterError, compile_filter
from federation.replication import InvalidWrite, WriteRefused

MAX_LIMIT = 100_000
# SSE keep-alive comment interval: lets a client notice a dead daemon, and proxies keep the stream.
KEEPALIVE_S = 15.0


class ListQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    limit: int | None = Field(None, ge=1, le=MAX_LIMIT, description="at most this many records")


class WatchQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    table: str = Field("", max_length=1000, description="comma-separated tables to watch (default: all)")


def _table_of(request: web.Request) -> str:
    t = request.match_info["table"]
    if t not in TABLES:
        raise ApiProblem(404, "unknown_table", f"no registry table {t!r}; tables: {', '.join(TABLES)}",
                         "table")
    return t


async def _limit_of(request: web.Request) -> int | None:
    return (await read_query(request, ListQuery)).limit


class RegistryHandlers:
    """The registry's HTTP handlers over one `RegistryService`."""

    def __init__(self, reg: RegistryService) -> None:
        self.reg = reg

    async def tables(self, _: web.Request) -> web.StreamResponse:
        counts = await self.reg.digests()
        return json_ok({"tables": [{"table": t, "count": counts.get(t, {}).get("count", 0)} for t in TABLES]})

    async def list_table(self, request: web.Request) -> web.StreamResponse:
        t = _table_of(request)
        items = await self.reg.scan(t, limit=await _limit_of(request))
        return json_ok({"table": t, "items": [e.to_json() for e in items]})

    async def query(self, request: web.Request) -> web.StreamResponse:
        t = _table_of(request)
        doc = await read_json(request)
        if isinstance(doc, dict) and set(doc) == {"filter"}:
            doc = doc["filter"]
        try:
            pred = compile_filter(doc, "filter")
        except FilterError as e:
            p = e.problems[0]
            raise ApiProblem(400, "bad_filter", str(e), p.path or "filter") from None
        items = await self.reg.scan(t, pred, await _limit_of(request))
        return json_ok({"table": t, "items": [e.to_json() for e in items]})

    async def get(self, request: web.Request) -> web.StreamResponse:
        t = _table_of(request)
        e = await self.reg.get(t, request.match_info["key"])
        if e is None:
            raise ApiProblem(404, "not_found", f"no record {t}/{request.match_info['key']}", "key")
        return json_ok(e.to_json())

    async def put(self, request: web.Request) -> web.StreamResponse:
        t = _table_of(request)
        value = await read_json(request)
        if not isinstance(value, dict):
            raise ApiProblem(422, "invalid", "the body must be a JSON object", "body")
        try:
            e = await self.reg.put(t, request.match_info["key"], value)
        except InvalidWrite as err:
            raise ApiProblem(422, "invalid", str(err), _field(str(err))) from None
        except WriteRefused as err:
            raise ApiProblem(403, "forbidden", str(err), "table") from None
        except (TypeError, ValueError) as err:  # a value msgpack cannot carry
            raise ApiProblem(422, "invalid", f"value: {err}", "body") from None
        return json_ok(e.to_json())

    async def put_many(self, request: web.Request) -> web.StreamResponse:
        t = _table_of(request)
        body = await read_json(request)
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, dict) or not items:
            raise ApiProblem(422, "invalid", "the body must be {\"items\": {key: JSON object, ...}}", "items")
        for k, v in items.items():
            if not isinstance(v, dict):
                raise ApiProblem(422, "invalid", "must be a JSON object", f"items.{k}")
        try:
            n = await self.reg.put_many(t, items)
        except InvalidWrite as err:
            raise ApiProblem(422, "invalid", str(err), "items") from None
        except WriteRefused as err:
            raise ApiProblem(403, "forbidden", str(err), "table") from None
        return json_ok({"written": n})

    async def delete(self, request: web.Request) -> web.StreamResponse:
        t = _table_of(request)
        try:
            found = await self.reg.delete(t, request.match_info["key"])
        except WriteRefused as err:
            raise ApiProblem(403, "forbidden", str(err), "table") from None
        if not found:
            raise ApiProblem(404, "not_found", f"no record {t}/{request.match_info['key']}", "key")
        return json_ok({"deleted": True})

    async def digests(self, _: web.Request) -> web.StreamResponse:
        return json_ok({"tables": await self.reg.digests(), "stats": self.reg.stats()})

    async def watch(self, request: web.Request) -> web.StreamResponse:
        names = [n for n in (await read_query(request, WatchQuery)).table.split(",") if n]
        for n in names:
            if n not in TABLES:
                raise ApiProblem(404, "unknown_table", f"no registry table {n!r}", "table")
        try:
            cm = self.reg.watch(frozenset(names) or None)
            events = await cm.__aenter__()
        except OverflowError as e:
            raise ApiProblem(503, "busy", str(e)) from None
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        try:
            await resp.prepare(request)
            await resp.write(b": watching\n\n")
            it = aiter(events)
            while True:
                try:
                    ev = await asyncio.wait_for(anext(it), KEEPALIVE_S)
                except TimeoutError:
                    await resp.write(b": keepalive\n\n")
                    continue
                except StopAsyncIteration:
                    break
                data = json.dumps({"op": ev.op, **ev.entry.to_json()})
                await resp.write(f"event: {ev.op}\ndata: {data}\n\n".encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            await cm.__aexit__(None, None, None)
        return resp

    def routes(self) -> list[Route]:
        return [
            Route("GET", "/v1/registry", self.tables, "registry tables and record counts", tag="registry"),
            Route("GET", "/v1/registry/_digests", self.digests, "per-table digests and replication counters",
                  tag="registry"),
            Route("GET", "/v1/registry/{table}", self.list_table, "live records of a table (?limit=)", tag="registry",
                  query=ListQuery),
            Route("POST", "/v1/registry/{table}", self.put_many,
                  "write many records with one signature (body: {items: {key: object}})", tag="registry"),
            Route("POST", "/v1/registry/{table}/query", self.query, "records matching an AIOS filter document", query=ListQuery,
                  tag="registry"),
            Route("GET", "/v1/registry/{table}/{key}", self.get, "one record", tag="registry"),
            Route("PUT", "/v1/registry/{table}/{key}", self.put, "write a record (body: JSON object)", tag="registry"),
            Route("DELETE", "/v1/registry/{table}/{key}", self.delete, "delete a record", tag="registry"),
            Route("GET", "/v1/watch", self.watch, "server-sent events of registry changes (?table=a,b)",
                  tag="registry", query=WatchQuery),
        ]


def registry_routes(reg: RegistryService) -> list[Route]:
    return RegistryHandlers(reg).routes()


def _field(message: str) -> str:
    head = message.split(":", 1)[0]
    return head.rsplit(".", 1)[-1] if head.startswith("items.") else "body"


__all__ = ["RegistryHandlers", "registry_routes"]
