"""What the roles of a node share: settings, the store, the identity, and each other by typed key.

A role is a service (an async context manager) built by a factory `(NodeContext) -> Service`.
`aiosd/node.py` — the only module that knows every role — enters them in start order and mounts
their routes; a role may use any role started before it, looked up with that role's `ServiceKey`
(typed, like aiohttp's `AppKey`), so what a role gets back is the service class, not `Any`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar, cast

from aiosd.config import Settings
from aiosd.identity_files import NodeIdentity
from storage import Store

T = TypeVar("T")


class ServiceKey(Generic[T]):
    """The typed name of a role's service: `MEMBERSHIP = ServiceKey[MembershipService]("membership")`."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"ServiceKey({self.name!r})"


@dataclass
class NodeContext:
    """What services share: settings, the store, the identity and the services started so far."""

    settings: Settings
    data_dir: Path
    store: Store
    identity: NodeIdentity
    started: float = field(default_factory=time.monotonic)
    _services: dict[str, object] = field(default_factory=dict)

    def provide(self, service: Service) -> None:
        """Make a started service visible to the roles started after it (node.py calls this)."""
        self._services[service.name] = service

    def get(self, key: ServiceKey[T]) -> T:
        """A service started earlier; KeyError naming it when it does not run on this node."""
        try:
            return cast(T, self._services[key.name])
        except KeyError:
            raise KeyError(f"the {key.name} service is not running on this node") from None

    def find(self, key: ServiceKey[T]) -> T | None:
        """A service started earlier, or None where this node runs without it."""
        return cast("T | None", self._services.get(key.name))


class Service(Protocol):
    """A role's service: entered at start, left at stop, in reverse order."""

    name: str

    async def __aenter__(self) -> Any: ...

    async def __aexit__(self, *exc: object) -> None: ...


ServiceFactory = Callable[[NodeContext], Service]

__all__ = ["NodeContext", "Service", "ServiceFactory", "ServiceKey"]
