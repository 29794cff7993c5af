"""What a node runs: the service context and the ordered list of services the daemon starts.

Each service is a factory `(NodeContext) -> Service`, where a Service is an async context
manager that may contribute API routes. `aiosd/node.py` enters them in this order and leaves
them in reverse, so a service may use any service listed before it (through the context).
Adding a role to the daemon = writing its service module and adding one line to `SERVICES`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aiosd.api.routes import Route
from aiosd.config import Settings
from aiosd.identity_files import NodeIdentity
from storage import Store


@dataclass
class NodeContext:
    """What services share: settings, the store, the identity and each other (by name)."""

    settings: Settings
    data_dir: Path
    store: Store
    identity: NodeIdentity
    started: float = field(default_factory=time.monotonic)
    services: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str) -> Any:
        """A service started earlier, by name; KeyError if it is not running on this node."""
        return self.services[name]


class Service(Protocol):
    name: str

    async def __aenter__(self) -> Any: ...

    async def __aexit__(self, *exc: object) -> None: ...

    def routes(self) -> list[Route]: ...


ServiceFactory = Callable[[NodeContext], Service]


def default_services() -> list[ServiceFactory]:
    """The daemon's services in start order (imports are local so a missing role stays cheap)."""
    factories: list[ServiceFactory] = []
    from aiosd.tasks import task_service

    factories.append(task_service)
    from aiosd.runtime_service import runtime_service

    factories.append(runtime_service)
    from aiosd.membership_service import membership_service

    factories.append(membership_service)
    from aiosd.registry import registry_service

    factories.append(registry_service)
    from aiosd.assets_service import assets_service

    factories.append(assets_service)
    # After the registry and assets: policy records are replicated, archives fetched from peers.
    from aiosd.policies.service import policies_service

    factories.append(policies_service)
    from aiosd.metrics_service import metrics_service

    factories.append(metrics_service)
    from aiosd.control.controller import controller_service

    factories.append(controller_service)
    from aiosd.control.blocks import block_service

    factories.append(block_service)
    return factories


__all__ = ["NodeContext", "Service", "ServiceFactory", "default_services"]
