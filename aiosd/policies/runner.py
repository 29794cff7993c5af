"""One way to run any policy by URI: built-ins in process, published policies in the sandbox.

`AsyncPolicyRunner.load(uri, ...)` returns an `AsyncPolicyHandle` (`eval`, `management`) either
way, so callers switch between a built-in and a custom policy by changing a URI. Published
archives are verified (hash + publisher signature) before their first use in this process.
`Catalog` is the `aiosd.specs.resolve.PolicyCatalog` over both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from aiosd.policies.archive import read_archive
from aiosd.policies.contract import PolicyHandle
from aiosd.policies.errors import PolicyArchiveError, PolicyConfigError, PolicyNotFound
from aiosd.policies.loading import load_entry
from aiosd.policies.registry import PolicyRegistry
from aiosd.policies.sandbox import LoadSpec, Sandbox
from aiosd.policies.store import Book, PolicyRecord, compiled, verify_record
from aiosd.policies.venvs import Installer
from aiosd.specs.resolve import PolicyInfo
from storage.blobs import BlobNotFound, BlobStore

# Brings a published policy's archive to this node (from the peers that hold it); raises PolicyArchiveError.
ArchiveFetcher = Callable[[PolicyRecord], Awaitable[None]]


class AsyncPolicyHandle(Protocol):
    uri: str

    async def eval(self, input_data: Mapping[str, Any], context: Any = None,
                   parameters: Mapping[str, Any] | None = None, *,
                   timeout_s: float | None = None) -> dict[str, Any]: ...

    async def management(self, action: str, data: Mapping[str, Any], *,
                         timeout_s: float | None = None) -> dict[str, Any]: ...


class BuiltinHandle:
    """A built-in (trusted, fast) policy behind the async handle interface."""

    def __init__(self, handle: PolicyHandle) -> None:
        self.handle = handle
        self.uri = handle.uri

    async def eval(self, input_data: Mapping[str, Any], context: Any = None,
                   parameters: Mapping[str, Any] | None = None, *,
                   timeout_s: float | None = None) -> dict[str, Any]:
        return self.handle.eval(input_data, context, parameters)

    async def management(self, action: str, data: Mapping[str, Any], *,
                         timeout_s: float | None = None) -> dict[str, Any]:
        return self.handle.management(action, data)


class Catalog:
    """Built-ins first, then published policies (a published URI never shadows a built-in)."""

    def __init__(self, builtins: PolicyRegistry, published: Book[PolicyRecord]) -> None:
        self.builtins = builtins
        self.published = published

    def find(self, uri: str) -> PolicyInfo | None:
        found = self.builtins.find(uri)
        if found is not None:
            return found
        return self.published.get(uri)

    def known_uris(self) -> list[str]:
        return sorted({*self.builtins.known_uris(), *(r.uri for r in self.published.all())})


class AsyncPolicyRunner:
    """`h = await runner.load(uri, parameters=..., settings=...)`; `await h.eval(input)`."""

    def __init__(self, catalog: Catalog, sandbox: Sandbox, installer: Installer, blobs: BlobStore) -> None:
        self.catalog = catalog
        self.sandbox = sandbox
        self.installer = installer
        self.blobs = blobs
        self.fetch_archive: ArchiveFetcher | None = None  # set by the daemon; tests run without peers

    async def load(self, uri: str, *, parameters: Mapping[str, Any] | None = None,
                   settings: Mapping[str, Any] | None = None, rule_id: str | None = None) -> AsyncPolicyHandle:
        """The policy under `uri`, configured: stored defaults < `parameters`/`settings`.

        Raises:
            PolicyNotFound (listing what exists), PolicyConfigError, PolicyArchiveError (verification),
            PolicyLoadError (import, constructor or venv failure).
        """
        entry = self.catalog.builtins.find(uri)
        if entry is not None:
            return BuiltinHandle(load_entry(entry, parameters, settings, rule_id))
        rec = self.catalog.published.get(uri)
        if rec is None:
            raise PolicyNotFound(uri, self.catalog.known_uris())
        params = {**rec.default_parameters, **(parameters or {})}
        sets = {**rec.default_settings, **(settings or {})}
        problems = rec.check_config(params, sets, "")
        if problems:
            raise PolicyConfigError(uri, problems)
        data = await self._archive(rec)
        verify_record(rec, data)
        contents = await asyncio.to_thread(read_archive, data)
        await self.sandbox.ensure_root()
        prepared = await self.installer.prepare(rec.archive_sha256, uri, contents)
        schemas = compiled(rec)
        spec = LoadSpec(uri=uri, code_dir=prepared.code_dir, python=prepared.python, rule_id=rule_id or uri,
                        parameters=params, settings=sets, input_protocol=schemas.input,
                        output_protocol=schemas.output, archive_sha256=rec.archive_sha256)
        return await self.sandbox.load(spec)

    async def _archive(self, rec: PolicyRecord) -> bytes:
        """The archive's bytes: local, or fetched from the nodes that hold it (then verified by load)."""
        try:
            return await asyncio.to_thread(self.blobs.get, rec.archive_sha256)
        except BlobNotFound:
            if self.fetch_archive is None:
                raise PolicyArchiveError("archive_sha256", f"policy {rec.uri}: its archive is not on this node") from None
        await self.fetch_archive(rec)
        return await asyncio.to_thread(self.blobs.get, rec.archive_sha256)

    async def run(self, uri: str, input_data: Mapping[str, Any], *, parameters: Mapping[str, Any] | None = None,
                  settings: Mapping[str, Any] | None = None, context: Any = None,
                  timeout_s: float | None = None) -> dict[str, Any]:
        """Load (or reuse the warm instance with the same configuration) and evaluate once."""
        handle = await self.load(uri, parameters=parameters, settings=settings)
        return await handle.eval(input_data, context, timeout_s=timeout_s)


__all__ = ["AsyncPolicyHandle", "AsyncPolicyRunner", "BuiltinHandle", "Catalog"]
