"""OpenAI-compatible routes: /v1/chat/completions, /v1/completions, /v1/models (unix socket and TCP API).

Streaming (`stream: true`) answers server-sent events in OpenAI's chunk format. Block tasks are
request/response packets (also when forwarded to another node), so the stream is a chunked answer:
the generation runs to its end at the block, then role, content, finish (and usage) chunks and
`data: [DONE]` are sent. Errors come before any byte of the stream, as OpenAI-shaped JSON. A split model
(a vDAG of stage blocks, split_service.py) is generated here at the entry, so it streams token by token.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from aiohttp import web

from aiosd.api.routes import MAX_BODY_BYTES, Route
from aiosd.llm import oai
from aiosd.llm.oai import OpenAIError
from aiosd.llm.service import LlmService, component_name


def _error(e: OpenAIError) -> web.Response:
    return web.json_response(e.body(), status=e.status)


async def _body(request: web.Request) -> Any:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise OpenAIError(413, f"the body is larger than {MAX_BODY_BYTES} bytes", None, "too_large")
    raw = await request.read()
    try:
        return json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError) as e:
        raise OpenAIError(400, f"the body is not valid JSON: {e}", None, "invalid_json") from None


async def _stream_split(request: web.Request, svc: LlmService, split: tuple[str, dict[str, Any]], chat: bool,
                        rid: str, model: str, data: dict[str, Any], now: int, usage: bool) -> web.StreamResponse:
    """A split model streams token by token (its entry runs here): the response starts with the first text,
    so an error before it (bad input, context) is still an OpenAI-shaped status; after it, an error frame.
    A client that goes away makes the next write fail, which ends the generation (and frees its caches)."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})

    async def begin() -> None:
        if not resp.prepared:
            await resp.prepare(request)
            if chat:
                await resp.write(oai.stream_start(chat, rid, model, now))

    async def on_text(piece: str) -> None:
        await begin()
        await resp.write(oai.stream_text(chat, rid, model, now, piece))

    try:
        out = await svc.split_runner().run(split[0], split[1], data, on_text)
    except ConnectionResetError:  # the client went away: the generation stopped at its next token
        return resp
    except OpenAIError as e:
        if not resp.prepared:
            raise
        await resp.write(oai.sse(e.body()))
        await resp.write(oai.DONE)
        await resp.write_eof()
        return resp
    await begin()
    for frame in oai.stream_end(chat, rid, model, out, now, usage):
        await resp.write(frame)
    await resp.write_eof()
    return resp


def llm_routes(svc: LlmService) -> list[Route]:
    async def complete(request: web.Request, chat: bool) -> web.StreamResponse:
        try:
            body = await _body(request)
            model, data = oai.chat_task(body) if chat else oai.completion_task(body)
            stream = bool(body.get("stream", False))
            usage = oai.include_usage(body) if stream else False
            rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
            now = int(time.time())
            split = await svc.find_split(model) if stream else None
            if split is not None:
                return await _stream_split(request, svc, split, chat, rid, model, data, now, usage)
            out = await svc.complete(model, data)
        except OpenAIError as e:
            return _error(e)
        if not stream:
            doc = oai.chat_response(rid, model, out, now) if chat else oai.completion_response(rid, model, out, now)
            if "replays" in out:  # a split model: how often the entry replayed the history (failover)
                doc["aiosd"] = {"replays": out["replays"], "failover_pause_s": out.get("failover_pause_s", 0.0)}
            return web.json_response(doc)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        for frame in oai.stream_frames(chat, rid, model, out, now, usage):
            await resp.write(frame)
        await resp.write_eof()
        return resp

    async def h_chat(request: web.Request) -> web.StreamResponse:
        return await complete(request, chat=True)

    async def h_completions(request: web.Request) -> web.StreamResponse:
        return await complete(request, chat=False)

    async def h_models(request: web.Request) -> web.Response:
        models = await svc.models()
        data = [{"id": bid, "object": "model", "created": svc.created, "owned_by": "aiosd",
                 "component": component_name(res.component_uri)} for bid, res in models.items()]
        data += [{"id": uri.split(":", 1)[0], "object": "model", "created": svc.created, "owned_by": "aiosd",
                  "vdag": uri, "stages": len(info.get("layers") or [])}
                 for uri, info in (await svc.split_models()).items()]
        return web.json_response({"object": "list", "data": data})

    return [
        Route("POST", "/v1/chat/completions", h_chat, "OpenAI chat completion on an LLM block (stream: SSE)"),
        Route("POST", "/v1/completions", h_completions, "OpenAI text completion on an LLM block (stream: SSE)"),
        Route("GET", "/v1/models", h_models, "the LLM blocks this node can reach, OpenAI-shaped"),
    ]


__all__ = ["llm_routes"]
