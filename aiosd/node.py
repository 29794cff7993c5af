"""Daemon assembly — the only module that knows every role: open the store, load the identity, start
each role's service in order, mount its routes, wait for a stop signal.

Services are async context managers composed with an AsyncExitStack, so teardown runs in
reverse order and every error is reported. Shutdown order (STYLE §21): stop accepting →
drain for shutdown_grace_s → cancel what remains → flush and close LMDB.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiosd import __version__
from aiosd.api.admin import admin_routes
from aiosd.api.routes import Route
from aiosd.api.server import ApiServer
from aiosd.api.status import PeerView, status_routes
from aiosd.assets import api as assets_api
from aiosd.assets.service import assets_service
from aiosd.blocks import api as blocks_api
from aiosd.blocks.service import block_service
from aiosd.config import Settings
from aiosd.console import api as console_api
from aiosd.console.roles import with_roles
from aiosd.console.service import CONSOLE_KEY, console_service
from aiosd.context import NodeContext, ServiceFactory
from aiosd.controller import api as controller_api
from aiosd.controller.service import controller_service
from aiosd.errors import AiosdError
from aiosd.identity_files import init_network, is_initialised, load_identity
from aiosd.instances.service import RuntimeService, runtime_service
from aiosd.llm import api as llm_api
from aiosd.llm.service import llm_service
from aiosd.membership import api as membership_api
from aiosd.membership.service import MEMBERSHIP_KEY, membership_service
from aiosd.metrics.service import METRICS_KEY, MetricsService, metrics_service
from aiosd.policies.service import PoliciesService, policies_service
from aiosd.ports import check_free
from aiosd.registry import api as registry_api
from aiosd.registry.service import registry_service
from aiosd.sdnotify import sd_notify
from aiosd.tasks.service import TaskService, task_service
from aiosd.vdag import api as vdag_api
from aiosd.vdag.service import vdag_service
from storage import Store

log = logging.getLogger(__name__)

# systemd's default TimeoutStopSec is 90 s; we promise 10 s (issue: stop cleanly within 10 s).
STOP_BUDGET_S = 10.0


def check_data_dir(data_dir: Path) -> None:
    """Create the data dir (0700) or say in one sentence why it cannot be used."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except PermissionError:
        raise AiosdError(f"cannot create the data dir {data_dir}: permission denied "
                         "(run as root, or pick one you own with --data-dir)") from None
    except (NotADirectoryError, FileExistsError):
        raise AiosdError(f"the data dir {data_dir} is not a directory") from None
    if not os.access(data_dir, os.R_OK | os.W_OK | os.X_OK):
        raise AiosdError(f"the data dir {data_dir} is not writable by this user; "
                         "fix its permissions or pick another --data-dir")


@dataclass(frozen=True, slots=True)
class Role:
    """One role of the daemon: how to build its service, and the API routes it mounts."""

    factory: ServiceFactory
    routes: Callable[[Any], list[Route]]


def default_roles() -> list[Role]:
    """The daemon's roles in start order: a role may use any role above it (through the context)."""
    return [
        Role(task_service, TaskService.routes),
        Role(runtime_service, RuntimeService.routes),
        Role(membership_service, membership_api.membership_routes),
        Role(registry_service, registry_api.registry_routes),
        Role(assets_service, assets_api.asset_routes),
        # After the registry and assets: policy records are replicated, archives fetched from peers.
        Role(policies_service, PoliciesService.routes),
        Role(metrics_service, MetricsService.routes),
        Role(controller_service, controller_api.controller_routes),
        Role(block_service, blocks_api.spec_routes),
        Role(vdag_service, vdag_api.vdag_routes),
        Role(llm_service, llm_api.llm_routes),  # OpenAI-compatible endpoint over LLM blocks
        Role(console_service, console_api.console_routes),
    ]


@contextlib.asynccontextmanager
async def open_store(path: Path) -> AsyncIterator[Store]:
    store = await asyncio.to_thread(Store.open, path)
    log.info("store opened", extra={"path": str(path)})
    try:
        yield store
    finally:
        await asyncio.to_thread(store.close)
        log.info("store closed")


class Node:
    """One running daemon. `await Node(settings).run()` returns when a stop signal arrives."""

    def __init__(self, settings: Settings, roles: list[Role] | None = None) -> None:
        self.settings = settings
        self._roles = default_roles() if roles is None else roles
        self.data_dir = settings.data_dir
        self._stop = asyncio.Event()
        self._started = time.monotonic()

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        t0 = time.monotonic()
        # Before anything is created: a taken port must leave no half identity behind.
        p2p = self.settings.p2p
        check_free(p2p.host, p2p.port, "p2p", "--p2p-port")
        if self.settings.api.tcp_port:
            check_free("127.0.0.1", self.settings.api.tcp_port, "the TCP API", "--api-port")
        check_data_dir(self.data_dir)
        async with contextlib.AsyncExitStack() as stack:
            store = await stack.enter_async_context(open_store(self.data_dir / "db"))
            if not is_initialised(self.data_dir):
                ident = await asyncio.to_thread(init_network, self.data_dir, cluster=self.settings.node.cluster)
                log.info("initialised a new single-node network",
                         extra={"node": ident.node_id, "network": ident.network.network_id})
            ident = await asyncio.to_thread(load_identity, self.data_dir)
            log.info("identity loaded", extra={"node": ident.node_id, "network": ident.network.network_id,
                                               "cluster": ident.cert.cluster})
            self.store = store
            ctx = NodeContext(self.settings, self.data_dir, store, ident, started=self._started)
            self.ctx = ctx
            routes = status_routes(
                node_id=ident.node_id, network_id=ident.network.network_id, cluster=ident.cert.cluster,
                version=__version__, data_dir=self.data_dir, roles=sorted(ident.cert.roles),
                started=self._started, peers=self._peers,
            ) + admin_routes(stop=self.request_stop)
            for role in self._roles:
                service = role.factory(ctx)
                await stack.enter_async_context(service)
                ctx.provide(service)
                routes += role.routes(service)
                log.info("service started", extra={"service": service.name})
            console = ctx.find(CONSOLE_KEY)
            api = await stack.enter_async_context(ApiServer(
                with_roles(routes), version=__version__, socket_path=self.settings.socket_path,
                data_dir=self.data_dir, tcp_port=self.settings.api.tcp_port, tcp_host=self.settings.api.host,
                tls_cert=self.settings.api.tls_cert, tls_key=self.settings.api.tls_key,
                authenticate=None if console is None else console.authenticate,
                local_role=self.settings.api.local_role, audit=None if console is None else console.audit.record,
            ))
            self.api = api
            metrics = ctx.find(METRICS_KEY)
            if metrics is not None:  # the TCP API's edge counters in /v1/metrics and /metrics
                metrics.edges["api"] = api.edge_metrics
            self._install_signals()
            sd_notify("READY=1")
            log.info("daemon ready", extra={"node": ident.node_id, "took_s": round(time.monotonic() - t0, 3)})
            await self._stop.wait()
            log.info("daemon stopping")
            sd_notify("STOPPING=1")
            async with asyncio.timeout(STOP_BUDGET_S):
                await api.stop_accepting()
        log.info("daemon stopped")

    def _peers(self) -> list[PeerView]:
        membership = self.ctx.find(MEMBERSHIP_KEY) if hasattr(self, "ctx") else None
        return list(membership.peer_views()) if membership is not None else []

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)


__all__ = ["Node", "Role", "check_data_dir", "default_roles"]
