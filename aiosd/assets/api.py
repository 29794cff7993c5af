"""HTTP routes of the assets service: push (streamed body), list, look up, fetch, download; images.

Bodies of `POST /v1/assets` and answers of `GET /v1/blobs/{sha256}` are streamed, never held whole
in memory. The fault route (`POST /v1/assets/_faults`) exists only with AIOSD_TEST_FAULTS=1.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from aiosd.api.routes import ApiProblem, QueryOptInt, Route, json_ok, read_model, read_query
from aiosd.assets import images as image_dist
from aiosd.assets.errors import AssetError
from aiosd.assets.service import AssetsService
from storage.blobs import check_digest

# Pieces of a pushed body handed to the hashing/writing thread at once.
_PIECE_BYTES = 1 << 20


class PushQuery(BaseModel):
    """`POST /v1/assets` query parameters."""

    model_config = ConfigDict(extra="ignore")
    uri: str = Field("", max_length=1000, description="the asset's URI (name:version)")
    type: str = Field("file", max_length=64, description="the asset's type")
    name: str = Field("", max_length=1000, description="a display name")
    chunk_bytes: QueryOptInt = Field(None, ge=4096, le=16 << 20, description="chunk size of the stored blob")


class InfoQuery(BaseModel):
    """`GET /v1/assets/info` query parameters."""

    model_config = ConfigDict(extra="ignore")
    uri: str = Field("", max_length=1000, description="the asset's URI")


class FetchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    uri: str = Field(description="asset URI to fetch from the peers that hold it")


class ImageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200, description="image name, e.g. localhost/my-block:1")


class FaultsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    corrupt_next: int = Field(0, ge=0, description="corrupt this many of the next chunk answers")
    delay_s: float = Field(0.0, ge=0, le=10, description="delay every chunk answer by this much")


def _problem(e: AssetError) -> ApiProblem:
    return ApiProblem(e.status, e.code, str(e))


class AssetHandlers:
    """The assets' and images' HTTP handlers over one `AssetsService`."""

    def __init__(self, svc: AssetsService) -> None:
        self.svc = svc

    async def list_assets(self, _: web.Request) -> web.StreamResponse:
        try:
            return json_ok({"items": await self.svc.list()})
        except AssetError as e:
            raise _problem(e) from None

    async def push(self, request: web.Request) -> web.StreamResponse:
        q = await read_query(request, PushQuery)
        writer = self.svc.writer(q.chunk_bytes)
        try:
            while True:
                piece = await request.content.read(_PIECE_BYTES)
                if not piece:
                    break
                await asyncio.to_thread(writer.write, piece)
            record = await self.svc.publish(q.uri, writer, type_=q.type, name=q.name)
        except AssetError as e:
            writer.abort()
            raise _problem(e) from None
        except BaseException:
            writer.abort()
            raise
        return json_ok(record)

    async def info(self, request: web.Request) -> web.StreamResponse:
        try:
            rec = await self.svc.lookup((await read_query(request, InfoQuery)).uri)
            rec["holders"] = await self.svc.holders(str(rec["sha256"]), rec)
        except AssetError as e:
            raise _problem(e) from None
        rec["local"] = await asyncio.to_thread(self.svc.blobs.has, str(rec["sha256"]))
        return json_ok(rec)

    async def fetch(self, request: web.Request) -> web.StreamResponse:
        body = await read_model(request, FetchRequest)
        try:
            job = await self.svc.start_fetch(body.uri)
        except AssetError as e:
            raise _problem(e) from None
        return json_ok(job.to_json(), status=200 if job.state == "done" else 202)

    async def fetches(self, _: web.Request) -> web.StreamResponse:
        return json_ok({"items": [j.to_json() for j in self.svc.jobs.values()]})

    async def fetch_status(self, request: web.Request) -> web.StreamResponse:
        job = self.svc.jobs.get(request.match_info["sha256"])
        if job is None:
            raise ApiProblem(404, "not_found", "no fetch of that blob on this node", "sha256")
        return json_ok(job.to_json())

    async def blob(self, request: web.Request) -> web.StreamResponse:
        try:
            path = self.svc.blobs.path(check_digest(request.match_info["sha256"]))
        except ValueError as e:
            raise ApiProblem(400, "bad_request", str(e), "sha256") from None
        if not await asyncio.to_thread(path.is_file):
            raise ApiProblem(404, "not_found", "this node does not hold that blob (fetch it first)", "sha256")
        return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})

    async def faults(self, request: web.Request) -> web.StreamResponse:
        if self.svc.faults is None:
            raise ApiProblem(404, "not_found", "fault injection is off (AIOSD_TEST_FAULTS=1 enables it)")
        body = await read_model(request, FaultsRequest)
        self.svc.faults.corrupt_next, self.svc.faults.delay_s = body.corrupt_next, body.delay_s
        return json_ok({"corrupt_next": body.corrupt_next, "delay_s": body.delay_s,
                        "corrupted": self.svc.faults.corrupted, "served_chunks": self.svc.served_chunks})

    async def images(self, _: web.Request) -> web.StreamResponse:
        return json_ok({"items": await image_dist.list_images(self.svc)})

    async def image_push(self, request: web.Request) -> web.StreamResponse:
        body = await read_model(request, ImageRequest)
        try:
            return json_ok(await image_dist.push_image(self.svc, body.name))
        except AssetError as e:
            raise _problem(e) from None

    async def image_pull(self, request: web.Request) -> web.StreamResponse:
        body = await read_model(request, ImageRequest)
        try:
            return json_ok(await image_dist.pull_image(self.svc, body.name))
        except AssetError as e:
            raise _problem(e) from None

    def routes(self) -> list[Route]:
        out = [
            Route("GET", "/v1/assets", self.list_assets, "assets in the registry, with holders and whether this node has each",
                  tag="assets"),
            Route("POST", "/v1/assets", self.push, "publish the (streamed, octet-stream) body as asset ?uri=&type=&name="
                  "&chunk_bytes=", tag="assets", query=PushQuery),
            Route("GET", "/v1/assets/info", self.info, "one asset (?uri=) with its holders", tag="assets",
                  query=InfoQuery),
            Route("POST", "/v1/assets/fetch", self.fetch, "start or join fetching an asset from its holders "
                  "(202 running, 200 done)", request=FetchRequest, tag="assets"),
            Route("GET", "/v1/assets/fetches", self.fetches, "fetches on this node and their progress", tag="assets"),
            Route("GET", "/v1/assets/fetches/{sha256}", self.fetch_status, "progress of one fetch", tag="assets"),
            Route("GET", "/v1/blobs/{sha256}", self.blob, "download a blob this node holds (octet-stream)",
                  tag="assets"),
            Route("GET", "/v1/images", self.images, "images published to the network", tag="images"),
            Route("POST", "/v1/images/push", self.image_push, "podman save a local image into an asset and publish it",
                  request=ImageRequest, tag="images"),
            Route("POST", "/v1/images/pull", self.image_pull, "fetch a published image from peers and podman load it",
                  request=ImageRequest, tag="images"),
        ]
        if self.svc.faults is not None:
            out.append(Route("POST", "/v1/assets/_faults", self.faults, "test only: corrupt or delay chunk answers",
                             request=FaultsRequest, tag="assets"))
        return out


def asset_routes(svc: AssetsService) -> list[Route]:
    return AssetHandlers(svc).routes()


__all__ = ["AssetHandlers", "FaultsRequest", "FetchRequest", "ImageRequest", "asset_routes"]
