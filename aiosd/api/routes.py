"""The local API's route table, JSON error shape, body validation and the OpenAPI document.

Every route is declared once as a `Route`; the app and `/v1/openapi.json` are both built
from that list, so the document can never miss a route.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, BeforeValidator, ValidationError

from federation.edge_http import read_body

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=BaseModel)

# A local API body is a spec or a command, never bulk data (that goes over the data plane).
MAX_BODY_BYTES = 8 << 20
# A JSON body that has not arrived by then is refused (a stalled client holds nothing forever).
BODY_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    request: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    tag: str = "node"
    query: type[BaseModel] | None = None  # the query parameters, validated by `read_query`
    status: int = 200  # the success status
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
    try:
        raw = await read_body(request, BODY_TIMEOUT_S)
    except TimeoutError:
        raise ApiProblem(408, "body_timeout", f"the body did not arrive within {BODY_TIMEOUT_S:g} s") from None
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


def _flag(v: Any) -> Any:
    return False if v == "" else v


def _empty_none(v: Any) -> Any:
    return None if v == "" else v


# An optional query integer: absent or empty is None.
QueryOptInt = Annotated[int | None, BeforeValidator(_empty_none)]
# A query flag: ?x=1|true|yes|on (and 0|false|no|off); absent or empty is false; anything else is a 422.
QueryFlag = Annotated[bool, BeforeValidator(_flag)]


async def read_query(request: web.Request, model: type[M]) -> M:
    """The query parameters validated as `model` (the same model the OpenAPI document shows);
    ApiProblem(422) names the bad parameter."""
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or None
        raise ApiProblem(422, "invalid", err["msg"], field) from None


# Errors any operation may answer: bad input, no or wrong token, refused, missing, conflict,
# too large, invalid, busy or no quorum, disk full. Each is the Error body.
ERROR_STATUSES = {
    "400": "bad request (not JSON, two Authorization headers)", "401": "missing or wrong bearer token (TCP API)",
    "403": "refused (this node lacks the role)", "404": "not found", "405": "method not allowed",
    "408": "the body did not arrive in time",
    "409": "conflict (does not fit, wrong state)", "413": "body too large", "422": "invalid input (names the field)",
    "500": "a bug (see the daemon log)", "502": "a peer or a tool answered wrongly",
    "503": "unavailable (no quorum, starting, out of files)", "504": "a peer did not answer in time",
    "507": "disk full under the data dir",
}


def _ref(model: type[BaseModel], schemas: dict[str, Any]) -> dict[str, Any]:
    schemas[model.__name__] = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _operation(r: Route, schemas: dict[str, Any]) -> dict[str, Any]:
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    success: dict[str, Any] = {"description": "OK", "content": {"application/json": {
        "schema": _ref(r.response, schemas) if r.response is not None else {}}}}
    op: dict[str, Any] = {"summary": r.summary, "tags": [r.tag], "operationId": _op_id(r),
                          "responses": {str(r.status): success,
                                        **{code: {"description": why, **error} for code, why in ERROR_STATUSES.items()
                                           if code != str(r.status)}}}
    if r.request is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(r.request, schemas)}}}
    params = [{"name": seg[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
              for seg in r.path.split("/") if seg.startswith("{")]
    if r.query is not None:
        schema = r.query.model_json_schema()
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            desc = prop.pop("description", "")
            prop.pop("title", None)
            params.append({"name": name, "in": "query", "required": name in required, "schema": prop,
                           **({"description": desc} if desc else {})})
    if params:
        op["parameters"] = params
    return op


def _op_id(r: Route) -> str:
    parts = [p.strip("{}").replace("-", "_").replace(".", "_") for p in r.path.split("/") if p and p != "v1"]
    return "_".join([r.method.lower(), *parts])


def openapi(routes: list[Route], version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}
    for r in routes:
        op = _operation(r, schemas)
        op["x-aios-role"] = r.role
        paths.setdefault(r.path, {})[r.method.lower()] = op
    for schema in list(schemas.values()):
        schemas.update(schema.pop("$defs", {}))
    schemas["Error"] = {"type": "object", "properties": {"error": {"type": "object", "properties": {
        "code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": ["string", "null"]}},
        "required": ["code", "message"]}}, "required": ["error"]}
    return {"openapi": "3.1.0", "info": {"title": "aiosd local API", "version": version,
                                         "description": "The unix socket needs no token; the TCP listener "
                                                        "(127.0.0.1, --api-port) needs `Authorization: Bearer "
                                                        "<DATA_DIR/api.token>`."},
            "paths": paths, "security": [{"bearer": []}],
            "components": {"schemas": schemas, "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer", "description": "the token in DATA_DIR/api.token"}}}}


__all__ = [
    "ERROR_STATUSES",
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
    "read_query",
]
