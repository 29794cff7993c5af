"""The "policies" service: policy/template/spec records, the sandbox, and their local API routes.

Push stores the archive as a content-addressed blob (`<data_dir>/blobs`) and a signed record.
In the daemon the records (policies, templates, specs, the governance map) live in the replicated
registry, so a push on one node is usable on every node: a node that lacks an archive fetches it
from the publisher (or any node that fetched it) and checks it against the signed record before
use. Without a registry (tests, tools) records stay in this node's LMDB. Run is a dry run anyone
can use. Other services reach `runner`, `templates.convert` and
`governance.precheck` through `ctx.find(POLICIES_KEY)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Self

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aiosd.api.routes import MAX_BODY_BYTES, ApiProblem, Route, json_ok, read_json, read_model, read_query
from aiosd.assets.fetch import FetchFailed
from aiosd.assets.service import ASSETS_KEY, AssetsService
from aiosd.context import NodeContext, ServiceKey
from aiosd.policies.archive import read_archive
from aiosd.policies.errors import (
    PolicyArchiveError,
    PolicyConfigError,
    PolicyError,
    PolicyInputError,
    PolicyNotFound,
    PolicyTimeout,
    PolicyVetoed,
)
from aiosd.policies.registry import builtin_registry
from aiosd.policies.replicated import ReplicatedBook
from aiosd.policies.runner import AsyncPolicyRunner, Catalog
from aiosd.policies.sandbox import Sandbox, SandboxConfig
from aiosd.policies.store import Book, PolicyRecord, RecordBook, build_record
from aiosd.policies.templates import Governance, GovernanceMap, SpecRecord, TemplateRecord, Templates
from aiosd.policies.venvs import Installer
from aiosd.registry.service import REGISTRY_KEY, RegistryService
from aiosd.specs.errors import SpecError
from aiosd.specs.parse import parse_document
from federation.errors import FederationError
from federation.replication import InvalidWrite, WriteRefused
from storage.blobs import BlobStore

log = logging.getLogger(__name__)



class PushPolicyQuery(BaseModel):
    """`POST /v1/policies` query parameters."""

    model_config = ConfigDict(extra="ignore")
    uri: str = Field("", max_length=1000, description="the policy's URI, name:version-tag")
    description: str | None = Field(None, max_length=10_000, description="what the policy does")
    tags: str | None = Field(None, max_length=10_000, description="comma-separated tags (given: replaces them)")

class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: dict[str, Any] = Field(default_factory=dict)
    parameters: dict[str, Any] | None = None
    settings: dict[str, Any] | None = None
    context: Any = None
    timeout_s: float | None = Field(None, gt=0, le=600)


class MgmtRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: str = Field(min_length=1, max_length=128)
    data: dict[str, Any] = Field(default_factory=dict)
    parameters: dict[str, Any] | None = None
    settings: dict[str, Any] | None = None
    timeout_s: float | None = Field(None, gt=0, le=600)


def sandbox_root(data_dir: Path) -> Path:
    """Outside the data dir (the sandbox user must not traverse the data dir), one per data dir."""
    tag = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"aiosd-policies-{tag}"


def policy_error(e: PolicyError) -> ApiProblem:
    """The HTTP answer for a policy failure (404 unknown, 422 bad config/input, 502 the policy failed)."""
    if isinstance(e, PolicyNotFound):
        return ApiProblem(404, "policy_not_found", str(e), "uri")
    if isinstance(e, PolicyConfigError):
        field = e.problems[0].path if e.problems else None
        return ApiProblem(422, "invalid", str(e), field)
    if isinstance(e, PolicyInputError):
        return ApiProblem(422, "invalid", str(e), e.path)
    if isinstance(e, PolicyArchiveError):
        return ApiProblem(422, "bad_archive", str(e), e.path)
    if isinstance(e, PolicyVetoed):
        return ApiProblem(403, "vetoed", str(e), None)
    if isinstance(e, PolicyTimeout):
        return ApiProblem(504, "policy_timeout", str(e), None)
    return ApiProblem(502, "policy_failed", str(e), None)


Handler = Callable[[Any, web.Request], Awaitable[web.Response]]


def _writes(h: Handler) -> Handler:
    """A route that writes records: the registry's refusals become clear HTTP answers."""
    @functools.wraps(h)
    async def wrapped(self: Any, request: web.Request) -> web.Response:
        try:
            return await h(self, request)
        except WriteRefused as e:
            raise ApiProblem(403, "forbidden", f"{e}: records published to the network need a node with an "
                             "admin certificate", None) from None
        except InvalidWrite as e:
            raise ApiProblem(422, "invalid", str(e), None) from None
    return wrapped


class PoliciesService:
    name = "policies"

    def __init__(self, data_dir: Path, store: Any, signer: Any, cfg: SandboxConfig | None = None, *,
                 registry: RegistryService | None = None, assets: AssetsService | None = None) -> None:
        self._data_dir = data_dir
        self._store = store
        self._signer = signer
        self._assets = assets
        self.cfg = cfg or SandboxConfig.default(sandbox_root(data_dir))
        self.blobs = BlobStore(data_dir / "blobs")
        # This node's LMDB tables: the books without a registry, and what older versions kept
        # (moved into the registry at start).
        local = (RecordBook(store, "policy_records", PolicyRecord, lambda r: r.uri),
                 RecordBook(store, "template_records", TemplateRecord, lambda r: r.templateUri),
                 RecordBook(store, "spec_records", SpecRecord, lambda r: r.specUri),
                 RecordBook(store, "governance", GovernanceMap, lambda r: r.key))
        self._legacy: tuple[RecordBook[Any], ...] = ()
        self.policies: Book[PolicyRecord]
        self.template_book: Book[TemplateRecord]
        self.specs: Book[SpecRecord]
        self.gov_book: Book[GovernanceMap]
        if registry is None:
            self.policies, self.template_book, self.specs, self.gov_book = local
        else:
            self._legacy = local
            self.policies = ReplicatedBook(registry, "policies", "policy/", PolicyRecord, lambda r: r.uri)
            self.template_book = ReplicatedBook(registry, "templates", "", TemplateRecord, lambda r: r.templateUri,
                                                checked=True)
            self.specs = ReplicatedBook(registry, "specs", "", SpecRecord, lambda r: r.specUri)
            self.gov_book = ReplicatedBook(registry, "policies", "governance/", GovernanceMap, lambda r: r.key)
        self.sandbox = Sandbox(self.cfg)
        self.catalog = Catalog(builtin_registry(), self.policies)
        self.runner = AsyncPolicyRunner(self.catalog, self.sandbox, Installer(self.cfg.root, self.cfg.python),
                                        self.blobs)
        if assets is not None:
            self.runner.fetch_archive = self._fetch_archive
        self.templates = Templates(self.template_book, self.runner)
        self.governance = Governance(self.gov_book, self.runner)
        self._stack = contextlib.AsyncExitStack()
        self._forgetting: set[asyncio.Task[int]] = set()
        self.policies.subscribe(self._on_policy_changed)

    async def __aenter__(self) -> Self:
        books = (self.policies, self.template_book, self.specs, self.gov_book)
        for book in books:
            await book.load()
            if isinstance(book, ReplicatedBook):
                self._stack.push_async_callback(book.close)
        await self._migrate(books)
        await self._stack.enter_async_context(self.sandbox)
        self._stack.push_async_callback(self._await_forgetting)  # runs before the sandbox closes
        log.info("policies ready", extra={"published": len(self.policies), "templates": len(self.template_book),
                                          "replicated": bool(self._legacy)})
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def _await_forgetting(self) -> None:
        if self._forgetting:
            await asyncio.gather(*self._forgetting, return_exceptions=True)

    def _on_policy_changed(self, uri: str, rec: PolicyRecord | None) -> None:
        """A policy re-pushed or deleted (here or on any node): its warm workers that run another
        archive stop, so the next call loads what the record now names."""
        if not any(i.uri == uri and (rec is None or i.spec.archive_sha256 != rec.archive_sha256)
                   for i in self.sandbox.instances()):
            return
        task = asyncio.get_running_loop().create_task(self.sandbox.forget(uri))
        self._forgetting.add(task)  # owned until done: closing workers must not be dropped mid-way
        task.add_done_callback(self._forgetting.discard)

    async def _migrate(self, books: tuple[Book[Any], ...]) -> None:
        """Records an older version kept on this node only: publish those the network lacks."""
        for old, new in zip(self._legacy, books, strict=False):
            await old.load()
            for rec in old.all():
                key = old.key_of(rec)
                if new.get(key) is not None:
                    continue
                try:
                    await new.put(rec)
                    log.info("local record published to the network", extra={"key": key})
                except (FederationError, SpecError) as e:  # not an admin: it stays usable nowhere else
                    log.warning("local record not replicated", extra={"key": key, "error": str(e)})

    async def _fetch_archive(self, rec: PolicyRecord) -> None:
        if self._assets is None:
            raise PolicyArchiveError("archive_sha256", f"policy {rec.uri}: this node runs no assets service "
                                     "to fetch its archive with")
        try:
            await self._assets.fetch_whole(rec.archive_sha256, rec.archive_size, [rec.publisher])
        except FetchFailed as e:
            raise PolicyArchiveError("archive_sha256", f"policy {rec.uri}: cannot fetch its archive: {e}") from None

    # ----- what other services call ------------------------------------------------------------
    async def convert(self, document: Any) -> Any:
        return await self.templates.convert(document)

    async def precheck(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        return await self.governance.precheck(action, payload)

    async def publish(self, uri: str, archive: bytes, *, description: str | None = None,
                      tags: list[str] | None = None) -> PolicyRecord:
        """Validate, store (blob) and register a policy archive. Raises PolicyError/SpecError."""
        if self.catalog.builtins.find(uri) is not None:
            raise PolicyArchiveError("uri", f"{uri} is a built-in policy; publish under another URI")
        contents = await asyncio.to_thread(read_archive, archive)
        sha = await asyncio.to_thread(lambda: hashlib.sha256(archive).hexdigest())
        # Every check runs before anything is written: a refused push changes nothing.
        rec = build_record(uri, sha, len(archive), contents, self._signer, description=description, tags=tags)
        await asyncio.to_thread(self.blobs.put, archive)
        await self.policies.put(rec)
        await self.sandbox.forget(uri)  # a re-push replaces running instances
        log.info("policy published", extra={"policy": uri, "sha256": sha[:16], "bytes": len(archive)})
        return rec

    # ----- routes --------------------------------------------------------------------------------
    def routes(self) -> list[Route]:
        t = "policies"
        return [
            Route("POST", "/v1/policies", self._h_push, "publish a policy archive (body: zip/tar bytes; "
                  "?uri=name:version-tag&description=&tags=a,b)", tag=t, query=PushPolicyQuery),
            Route("GET", "/v1/policies", self._h_list, "published and built-in policies", tag=t),
            Route("GET", "/v1/policies/{uri}", self._h_get, "one policy record", tag=t),
            Route("DELETE", "/v1/policies/{uri}", self._h_delete, "delete a published policy", tag=t),
            Route("POST", "/v1/policies/{uri}/run", self._h_run, "dry-run a policy on an input",
                  request=RunRequest, tag=t),
            Route("POST", "/v1/policies/{uri}/management", self._h_mgmt,
                  "send a management command to the policy instance with that configuration",
                  request=MgmtRequest, tag=t),
            Route("POST", "/v1/templates", self._h_push_template, "store a template (AIOS TemplateObject)", tag=t),
            Route("GET", "/v1/templates", self._h_list_templates, "stored templates", tag=t),
            Route("POST", "/v1/specs", self._h_push_spec, "store a spec (AIOS SpecStoreObject); validated first",
                  tag=t),
            Route("GET", "/v1/specs", self._h_list_specs, "stored specs", tag=t),
            Route("GET", "/v1/specs/{uri}", self._h_get_spec, "one stored spec", tag=t),
            Route("POST", "/v1/convert", self._h_convert, "convert a spec through its template (dry run)", tag=t),
            Route("GET", "/v1/governance", self._h_get_gov, "the actionsPolicyMap", tag=t),
            Route("PUT", "/v1/governance", self._h_put_gov, "replace the actionsPolicyMap", tag=t),
            Route("POST", "/v1/governance/precheck", self._h_precheck,
                  "run the pre-check for {action, payload} (dry run)", tag=t),
        ]

    @_writes
    async def _h_push(self, request: web.Request) -> web.Response:
        q = await read_query(request, PushPolicyQuery)
        raw = await request.read()
        if not raw:
            raise ApiProblem(400, "bad_request", "the body must be the archive bytes (zip or tar)", "body")
        if len(raw) > MAX_BODY_BYTES:
            raise ApiProblem(413, "too_large", f"archive is larger than {MAX_BODY_BYTES} bytes", "body")
        tags = [x for x in q.tags.split(",") if x] if q.tags is not None else None
        try:
            rec = await self.publish(q.uri, raw, description=q.description, tags=tags)
        except PolicyError as e:
            raise policy_error(e) from None
        except SpecError as e:
            raise ApiProblem(422, "invalid", str(e), e.problems[0].path) from None
        return json_ok(self._view(rec), status=201)

    def _view(self, rec: PolicyRecord) -> dict[str, Any]:
        return {**rec.model_dump(mode="json", by_alias=True), "source": "published"}

    async def _h_list(self, request: web.Request) -> web.Response:
        rows = [self._view(r) for r in self.policies.all()]
        for uri in self.catalog.builtins.known_uris():
            entry = self.catalog.builtins.lookup(uri)
            rows.append({"uri": uri, "source": "builtin", "description": entry.description, "tags": [],
                         "publisher": "", "archive_sha256": ""})
        return json_ok({"policies": rows})

    async def _h_get(self, request: web.Request) -> web.Response:
        uri = request.match_info["uri"]
        rec = self.policies.get(uri)
        if rec is not None:
            running = [{"rule_id": i.spec.rule_id, "calls": i.calls, "restarts": max(0, i.restarts)}
                       for i in self.sandbox.instances() if i.uri == uri]
            return json_ok({**self._view(rec), "instances": running})
        entry = self.catalog.builtins.find(uri)
        if entry is None:
            raise policy_error(PolicyNotFound(uri, self.catalog.known_uris()))
        return json_ok({"uri": entry.uri, "source": "builtin", "description": entry.description,
                        "default_parameters": dict(entry.default_parameters),
                        "default_settings": dict(entry.default_settings)})

    @_writes
    async def _h_delete(self, request: web.Request) -> web.Response:
        uri = request.match_info["uri"]
        if self.policies.get(uri) is None:
            raise policy_error(PolicyNotFound(uri, [r.uri for r in self.policies.all()]))
        users = [t.templateUri for t in self.template_book.all() if t.templatePolicyRuleUri == uri]
        users += [f"actionsPolicyMap.{a}" for a, u in self.governance.mapping.items() if u == uri]
        if users:
            raise ApiProblem(409, "in_use", f"policy {uri} is used by {', '.join(users[:5])}; remove those first",
                             "uri")
        await self.policies.delete(uri)
        stopped = await self.sandbox.forget(uri)
        log.info("policy deleted", extra={"policy": uri, "workers_stopped": stopped})
        return json_ok({"deleted": uri, "workers_stopped": stopped})

    async def _h_run(self, request: web.Request) -> web.Response:
        uri = request.match_info["uri"]
        body = await read_model(request, RunRequest)
        t0 = time.perf_counter()
        try:
            handle = await self.runner.load(uri, parameters=body.parameters, settings=body.settings)
            result = await handle.eval(body.input, body.context, timeout_s=body.timeout_s)
        except PolicyError as e:
            raise policy_error(e) from None
        return json_ok({"uri": uri, "result": result, "took_ms": round((time.perf_counter() - t0) * 1000, 3)})

    async def _h_mgmt(self, request: web.Request) -> web.Response:
        uri = request.match_info["uri"]
        body = await read_model(request, MgmtRequest)
        try:
            handle = await self.runner.load(uri, parameters=body.parameters, settings=body.settings)
            result = await handle.management(body.action, body.data, timeout_s=body.timeout_s)
        except PolicyError as e:
            raise policy_error(e) from None
        return json_ok({"uri": uri, "result": result})

    @_writes
    async def _h_push_template(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        rec = _validate(TemplateRecord, body)
        if self.catalog.find(rec.templatePolicyRuleUri) is None:
            raise ApiProblem(422, "invalid", f"policy {rec.templatePolicyRuleUri[:80]!r} is not registered; push it "
                             "first with `aiosd policy push`", "templatePolicyRuleUri")
        await self.template_book.put(rec)
        return json_ok(rec.model_dump(mode="json"), status=201)

    async def _h_list_templates(self, request: web.Request) -> web.Response:
        return json_ok({"templates": [r.model_dump(mode="json") for r in self.template_book.all()]})

    @_writes
    async def _h_push_spec(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        rec = _validate(SpecRecord, body)
        try:
            converted = await self.templates.convert(rec.specData)
            parse_document(converted)
        except SpecError as e:
            raise ApiProblem(422, "invalid", str(e), "specData." + e.problems[0].path) from None
        except PolicyError as e:
            raise policy_error(e) from None
        await self.specs.put(rec)
        return json_ok(rec.model_dump(mode="json"), status=201)

    async def _h_list_specs(self, request: web.Request) -> web.Response:
        return json_ok({"specs": [r.model_dump(mode="json") for r in self.specs.all()]})

    async def _h_get_spec(self, request: web.Request) -> web.Response:
        uri = request.match_info["uri"]
        rec = self.specs.get(uri)
        if rec is None:
            raise ApiProblem(404, "not_found", f"spec {uri[:120]!r} is not in the spec store", "uri")
        return json_ok(rec.model_dump(mode="json"))

    async def _h_convert(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        try:
            converted = await self.templates.convert(body)
            parse_document(converted)
        except SpecError as e:
            raise ApiProblem(422, "invalid", str(e), e.problems[0].path) from None
        except PolicyError as e:
            raise policy_error(e) from None
        return json_ok({"document": converted})

    async def _h_get_gov(self, request: web.Request) -> web.Response:
        return json_ok({"actionsPolicyMap": self.governance.mapping})

    @_writes
    async def _h_put_gov(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        mapping = body.get("actionsPolicyMap") if isinstance(body, dict) else None
        if not isinstance(mapping, dict):
            raise ApiProblem(422, "invalid", "must be an object mapping action -> policy URI", "actionsPolicyMap")
        try:
            await self.governance.set_mapping(mapping)
        except SpecError as e:
            raise ApiProblem(422, "invalid", str(e), e.problems[0].path) from None
        return json_ok({"actionsPolicyMap": self.governance.mapping})

    async def _h_precheck(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("action"), str):
            raise ApiProblem(422, "invalid", "must be a string such as add_block", "action")
        payload = body.get("payload", {})
        if not isinstance(payload, dict):
            raise ApiProblem(422, "invalid", "must be an object", "payload")
        try:
            out = await self.governance.precheck(body["action"], payload)
        except PolicyError as e:
            raise policy_error(e) from None
        return json_ok({"action": body["action"], "payload": out})


def _validate(model: type[Any], body: Any) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or None
        raise ApiProblem(422, "invalid", err["msg"], field) from None


POLICIES_KEY: ServiceKey[PoliciesService] = ServiceKey("policies")


def policies_service(ctx: NodeContext) -> PoliciesService:
    return PoliciesService(ctx.data_dir, ctx.store, ctx.identity.key, registry=ctx.find(REGISTRY_KEY),
                           assets=ctx.find(ASSETS_KEY))


__all__ = ["POLICIES_KEY", "MgmtRequest", "PoliciesService", "RunRequest", "policies_service", "policy_error", "sandbox_root"]
