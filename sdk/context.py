"""The `context` a block class receives in `__init__`: ids, block data, allocation, metrics, sessions.

Built from the AIOSD_INSTANCE_CONTEXT JSON (see wire.py) or directly by tests and BlockTester.
Starting the server is block.py's job.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from sdk.errors import ConfigError
from sdk.metrics import AIOSMetrics

# Per-session state lives in instance memory; sessions come from callers, so the map is an LRU with a cap.
DEFAULT_MAX_SESSIONS = 4096


@dataclass(slots=True)
class AllocationInfo:
    """Where the instance runs. Reads as attributes (`info.gpus`) and as a dict (`info["gpus"]`), as in AIOS."""

    gpus: list[int | str] = field(default_factory=list)
    node_id: str = ""
    cluster_id: str = ""

    def __getitem__(self, key: str) -> Any:
        if key not in ("gpus", "node_id", "cluster_id"):
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        """dict-style read."""
        try:
            return self[key]
        except KeyError:
            return default


class SessionsManager:
    """Per-session state for stateful blocks: `get(session_id)` gives a dict kept across tasks (LRU-capped)."""

    def __init__(self, max_sessions: int = DEFAULT_MAX_SESSIONS) -> None:
        self.max_sessions = max_sessions
        self.evicted = 0
        self._lock = threading.Lock()
        self._data: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def get(self, session_id: str) -> dict[str, Any]:
        """The state dict of a session, created empty on first use (evicts the least recently used)."""
        with self._lock:
            state = self._data.get(session_id)
            if state is None:
                state = self._data[session_id] = {}
                while len(self._data) > self.max_sessions:
                    self._data.popitem(last=False)
                    self.evicted += 1
            else:
                self._data.move_to_end(session_id)
            return state

    def remove(self, session_id: str) -> None:
        """Forget a session (no error when unknown)."""
        with self._lock:
            self._data.pop(session_id, None)

    def __contains__(self, session_id: object) -> bool:
        with self._lock:
            return session_id in self._data

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)


@dataclass(slots=True)
class BlockContext:
    """Everything a block learns about itself at start (AIOS `context`)."""

    block_id: str = ""
    instance_id: str = ""
    node_id: str = ""
    cluster_id: str = ""
    block_data: dict[str, Any] = field(default_factory=dict)
    block_init_data: dict[str, Any] = field(default_factory=dict)
    block_init_settings: dict[str, Any] = field(default_factory=dict)
    block_init_parameters: dict[str, Any] = field(default_factory=dict)
    allocation_info: AllocationInfo = field(default_factory=AllocationInfo)
    metrics: AIOSMetrics = field(default_factory=AIOSMetrics)
    sessions: SessionsManager = field(default_factory=SessionsManager)
    side_cars: dict[str, Any] = field(default_factory=dict)


_STR_KEYS = ("block_id", "instance_id", "node_id", "cluster_id")
_DICT_KEYS = ("block_data", "block_init_data", "block_init_settings", "block_init_parameters")


def context_from_obj(obj: Any, path: str = "AIOSD_INSTANCE_CONTEXT") -> BlockContext:
    """Build a BlockContext from the decoded context JSON; missing keys default to empty.

    Raises:
        ConfigError: naming the first field of the wrong type.
    """
    if not isinstance(obj, dict):
        raise ConfigError(f"{path}: must be a JSON object")
    ids: dict[str, str] = {}
    for k in _STR_KEYS:
        v = obj.get(k) or ""
        if not isinstance(v, str):
            raise ConfigError(f"{path}.{k}: must be a string")
        ids[k] = v
    dicts: dict[str, dict[str, Any]] = {}
    for k in _DICT_KEYS:
        v = obj.get(k) or {}
        if not isinstance(v, dict):
            raise ConfigError(f"{path}.{k}: must be an object")
        dicts[k] = v
    alloc = obj.get("allocation_info") or {}
    if not isinstance(alloc, dict):
        raise ConfigError(f"{path}.allocation_info: must be an object")
    gpus = alloc.get("gpus") or []
    if not isinstance(gpus, list) or not all(isinstance(g, (int, str)) and not isinstance(g, bool) for g in gpus):
        raise ConfigError(f"{path}.allocation_info.gpus: must be a list of GPU indexes or uuids")
    for k in ("node_id", "cluster_id"):
        if not isinstance(alloc.get(k) or "", str):
            raise ConfigError(f"{path}.allocation_info.{k}: must be a string")
    info = AllocationInfo(
        gpus=list(gpus),
        node_id=alloc.get("node_id") or ids["node_id"],
        cluster_id=alloc.get("cluster_id") or ids["cluster_id"],
    )
    return BlockContext(
        block_id=ids["block_id"], instance_id=ids["instance_id"], node_id=ids["node_id"],
        cluster_id=ids["cluster_id"], block_data=dicts["block_data"], block_init_data=dicts["block_init_data"],
        block_init_settings=dicts["block_init_settings"], block_init_parameters=dicts["block_init_parameters"],
        allocation_info=info, metrics=AIOSMetrics(ids["block_id"], ids["instance_id"]),
    )


def context_from_json(text: str | None) -> BlockContext:
    """Parse AIOSD_INSTANCE_CONTEXT (None or empty = all defaults).

    Raises:
        ConfigError: not JSON, or a field of the wrong type.
    """
    if not text:
        return BlockContext()
    try:
        obj = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"AIOSD_INSTANCE_CONTEXT: not valid JSON ({e})") from None
    return context_from_obj(obj)
