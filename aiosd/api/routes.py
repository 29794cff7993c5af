"""The local API's route table, JSON error shape, body validation and the OpenAPI document.

Every route is declared once as a `Route`; the app and `/v1/openapi.json` are both built
from that list, so the document can never miss a route.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=BaseModel)

# A local API body is a spec or a command, never bulk data (that goes over the data plane).
MAX_BODY_BYTES = 8 << 20


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    request: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    tag: str = "node"
    # The role a caller needs (ROLES); None: not declared here, the console's table declares it.
    role: str | None = None


# Who may call what. admin ⊃ operator ⊃ viewer; `inference` may call only routes marked "inference"
# (which operators and admins may call too).
ROLES = ("admin", "operator", "viewer", "inference")
_GRANTS: dict[str, frozenset[str]] = {
    "admin": frozenset(ROLES),
    "operator": frozenset({"operator", "viewer", "inference"}),
    "viewer": frozenset({"viewer"}),
    "inference": frozenset({"inference"}),
}


def allows(caller_role: str, needed: str) -> bool:
    """Whether a caller with `caller_role` may call a route that needs `needed`."""
    return needed in _GRANTS.get(caller_role, frozenset())


class ApiProblem(Exception):
    """Raised by handlers to answer `{"error": {code, message, field}}` with `status`."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


def error_response(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, "field": field}}, status=status)


def json_ok(body: Any, status: int = 200) -> web.Response:
    if isinstance(body, BaseModel):
        return web.Response(text=body.model_dump_json(), status=status, content_type="application/json")
    return web.json_response(body, status=status)


async def read_json(request: web.Request) -> Any:
    """The request body as JSON, or ApiProblem(400) saying what is wrong with it."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise ApiProblem(413, "too_large", f"body is larger than {MAX_BODY_BYTES} bytes")
    raw = await request.read()
    if not raw:
        raise ApiProblem(400, "bad_request", "the request needs a JSON body")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiProblem(400, "bad_json", f"body is not valid JSON: {e}") from None


async def read_model(request: web.Request, model: type[M]) -> M:
    """The body validated as `model`; ApiProblem(422) names the first bad field."""
    data = await read_json(request)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or None
        raise ApiProblem(422, "invalid", err["msg"], field) from None


def openapi(routes: list[Route], version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}
    for r in routes:
        op: dict[str, Any] = {"summary": r.summary, "tags": [r.tag], "x-aios-role": r.role, "responses": {
            "200": {"description": "OK"},
            "default": {"description": "error", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Error"}}}},
        }}
        if r.request is not None:
            schemas[r.request.__name__] = r.request.model_json_schema(ref_template="#/components/schemas/{model}")
            op["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{r.request.__name__}"}}}}
        if r.response is not None:
            schemas[r.response.__name__] = r.response.model_json_schema(ref_template="#/components/schemas/{model}")
            op["responses"]["200"]["content"] = {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{r.response.__name__}"}}}
        params = [seg[1:-1] for seg in r.path.split("/") if seg.startswith("{")]
        if params:
            op["parameters"] = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                                for p in params]
        paths.setdefault(r.path, {})[r.method.lower()] = op
    for schema in list(schemas.values()):
        schemas.update(schema.pop("$defs", {}))
    schemas["Error"] = {"type": "object", "properties": {"error": {"type": "object", "properties": {
        "code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": ["string", "null"]}},
        "required": ["code", "message"]}}, "required": ["error"]}
    return {"openapi": "3.1.0", "info": {"title": "aiosd local API", "version": version},
            "paths": paths, "components": {"schemas": schemas}}


__all__ = [
    "MAX_BODY_BYTES",
    "ROLES",
    "ApiProblem",
    "Handler",
    "Route",
    "allows",
    "error_response",
    "json_ok",
    "openapi",
    "read_json",
    "read_model",
]
