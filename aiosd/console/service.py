"""Service "console": users (network records in the admin-written `users` table) and token checks.

Users live in the registry, so a token made on one node works on every node once the record has
gossiped there. The API server asks `authenticate(token)` for each TCP request with a user token.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Self

from aiosd.api.auth import Principal
from aiosd.console.audit import AuditEntry, entries_of_summary
from aiosd.console.auditlog import AUDIT_TABLE, AuditLog
from aiosd.console.errors import ConsoleError
from aiosd.console.historylog import HistoryLog
from aiosd.console.users import (
    SECRET_BYTES,
    NewUser,
    UserRecord,
    mint_token,
    new_record,
    record_of,
    revoked,
    token_matches,
    token_user,
)
from aiosd.context import NodeContext, ServiceKey
from aiosd.metrics.service import METRICS_KEY
from aiosd.registry.service import REGISTRY_KEY, RegistryService
from federation.replication import WriteRefused

log = logging.getLogger(__name__)

USERS_TABLE = "users"


class ConsoleService:
    name = "console"

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.node_id = ctx.identity.node_id
        self._registry: RegistryService | None = None
        self.audit = AuditLog(ctx.store, self.node_id, None)
        self.history = HistoryLog(ctx.store, lambda: None)

    async def __aenter__(self) -> Self:
        self._registry = self.ctx.get(REGISTRY_KEY)
        self.audit = AuditLog(self.ctx.store, self.node_id, self._registry)
        await self.audit.start()
        metrics = self.ctx.find(METRICS_KEY)

        def current() -> dict[str, float] | None:
            return None if metrics is None or metrics.current is None else metrics.current.flat()

        self.history = HistoryLog(self.ctx.store, current)
        await self.history.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.history.stop()
        await self.audit.stop()
        self._registry = None

    async def audit_entries(self, *, network: bool) -> list[AuditEntry]:
        """This node's audit entries; with `network`, plus every other node's published summary."""
        own = await self.audit.entries()
        if not network:
            return own
        out = list(own)
        for e in await self.registry.scan(AUDIT_TABLE):
            if e.key != self.node_id:
                out += [x for x in entries_of_summary(e.value) if x.node == e.key]
        return out

    @property
    def registry(self) -> RegistryService:
        if self._registry is None:
            raise RuntimeError("console service is not running")
        return self._registry

    async def user(self, name: str) -> UserRecord | None:
        e = await self.registry.get(USERS_TABLE, name)
        return None if e is None else record_of(e.value)

    async def users(self) -> list[UserRecord]:
        out = []
        for e in await self.registry.scan(USERS_TABLE):
            rec = record_of(e.value)
            if rec is not None:
                out.append(rec)
        return out

    async def create_user(self, body: NewUser, *, by: str) -> tuple[UserRecord, str]:
        """A new user and its token (shown once; only its hash is kept)."""
        token = mint_token(body.name, secrets.token_bytes(SECRET_BYTES))
        rec = new_record(body, token, now=time.time(), by=by, old=await self.user(body.name))
        await self._write(rec)
        log.info("user created", extra={"user": rec.name, "role": rec.role, "by": by})
        return rec, token

    async def revoke_user(self, name: str, *, by: str) -> UserRecord:
        rec = await self.user(name)
        if rec is None:
            raise ConsoleError(f"no user {name!r}", field="name", status=404)
        rec = revoked(rec, now=time.time(), by=by)
        await self._write(rec)
        log.info("user revoked", extra={"user": name, "by": by})
        return rec

    async def authenticate(self, token: str) -> Principal | None:
        """The live user a token belongs to, or None (unknown, wrong or revoked)."""
        name = token_user(token)
        if name is None:
            return None
        rec = await self.user(name)
        if rec is None or not token_matches(rec, token):
            return None
        return Principal(rec.name, rec.role, "token")

    async def _write(self, rec: UserRecord) -> None:
        try:
            await self.registry.put(USERS_TABLE, rec.name, rec.model_dump())
        except WriteRefused as e:
            raise ConsoleError(f"this node may not write users (its certificate is not an admin's): {e}",
                               field="node", status=403) from None


CONSOLE_KEY: ServiceKey[ConsoleService] = ServiceKey("console")


def console_service(ctx: NodeContext) -> ConsoleService:
    return ConsoleService(ctx)


__all__ = ["CONSOLE_KEY", "USERS_TABLE", "ConsoleService", "console_service"]
