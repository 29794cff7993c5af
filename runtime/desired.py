"""Decode the body of the node-local desired-instances API (`PUT /v1/local/instances`) into specs.

Body: {"block_id": str, "instances": [{"instance_id", "image" | "block_dir", "command": [str],
"env": {str: str}, "context": {...}, "gpus": {"count", "ids", "mode", "min_free_mb"},
"resources": {"cpus", "memory_mb", "pids"}, "mounts": [{"source", "target", "read_only"}],
"stabilityChecker": {"parameters": {...}, "settings": {...}}, "workers", "queue"}]}.
Every error names its field path (`instances[1].gpus.count: ...`). No IO beyond validate()'s path checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runtime.errors import SpecError
from runtime.spec import GpuMode, GpuRequest, HealthSettings, InstanceSpec, Mount, Resources

MAX_INSTANCES_PER_BLOCK = 256  # one node rarely runs more; bounds the work one request can ask for
_INSTANCE_KEYS = {"instance_id", "image", "block_dir", "command", "env", "context", "gpus", "resources", "mounts",
                  "stabilityChecker", "workers", "queue"}


def _get(doc: Mapping[str, Any], key: str, kind: type | tuple[type, ...], path: str, default: Any = None) -> Any:
    v = doc.get(key, default)
    if v is None:
        return default
    if not isinstance(v, kind) or (isinstance(v, bool) and kind in (int, float, (int, float))):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise SpecError(f"{path}.{key}" if path else key, f"must be {names}, got {type(v).__name__}")
    return v


def _obj(doc: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(doc, Mapping):
        raise SpecError(path, f"must be an object, got {type(doc).__name__}")
    return doc


def specs_from_request(body: Any) -> tuple[str, list[InstanceSpec]]:
    """(block_id, specs) from the API body, each spec validated. Raises SpecError naming the field."""
    doc = _obj(body, "body")
    block_id = _get(doc, "block_id", str, "")
    if block_id is None:
        raise SpecError("block_id", "is required")
    raw = _get(doc, "instances", list, "", [])
    if len(raw) > MAX_INSTANCES_PER_BLOCK:
        raise SpecError("instances", f"at most {MAX_INSTANCES_PER_BLOCK} per block and node")
    specs = []
    for i, item in enumerate(raw):
        path = f"instances[{i}]"
        spec = _instance(block_id, _obj(item, path), path)
        try:
            spec.validate()
        except SpecError as e:
            raise SpecError(f"{path}.{e.field}", str(e).split(": ", 1)[1]) from None
        specs.append(spec)
    return block_id, specs


def _instance(block_id: str, d: Mapping[str, Any], path: str) -> InstanceSpec:
    unknown = sorted(set(d) - _INSTANCE_KEYS)
    if unknown:
        raise SpecError(f"{path}.{unknown[0]}", f"unknown field; known: {', '.join(sorted(_INSTANCE_KEYS))}")
    iid = _get(d, "instance_id", str, path)
    if iid is None:
        raise SpecError(f"{path}.instance_id", "is required")
    command = _get(d, "command", list, path, [])
    if not all(isinstance(c, str) for c in command):
        raise SpecError(f"{path}.command", "must be a list of strings")
    g = _obj(d.get("gpus") or {}, f"{path}.gpus")
    ids = _get(g, "ids", list, f"{path}.gpus", [])
    if not all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in ids):
        raise SpecError(f"{path}.gpus.ids", "must be a list of GPU uuids or indexes")
    mode = _get(g, "mode", str, f"{path}.gpus", "exclusive")
    if mode not in ("exclusive", "shared"):
        raise SpecError(f"{path}.gpus.mode", "must be exclusive or shared")
    gpus = GpuRequest(count=_get(g, "count", int, f"{path}.gpus", 0), ids=tuple(str(x) for x in ids),
                      mode=GpuMode(mode), min_free_mb=_get(g, "min_free_mb", int, f"{path}.gpus", 0))
    r = _obj(d.get("resources") or {}, f"{path}.resources")
    res = Resources(cpus=_get(r, "cpus", (int, float), f"{path}.resources"),
                    memory_mb=_get(r, "memory_mb", int, f"{path}.resources"),
                    pids=_get(r, "pids", int, f"{path}.resources"))
    mounts = []
    for j, m in enumerate(_get(d, "mounts", list, path, [])):
        mp = f"{path}.mounts[{j}]"
        mo = _obj(m, mp)
        src, tgt = _get(mo, "source", str, mp), _get(mo, "target", str, mp)
        if src is None or tgt is None:
            raise SpecError(mp, "needs source and target")
        mounts.append(Mount(Path(src), tgt, _get(mo, "read_only", bool, mp, True)))
    sc = _obj(d.get("stabilityChecker") or {}, f"{path}.stabilityChecker")
    try:
        health = HealthSettings.from_policy(_obj(sc.get("parameters") or {}, f"{path}.stabilityChecker.parameters"),
                                            _obj(sc.get("settings") or {}, f"{path}.stabilityChecker.settings"))
    except SpecError as e:
        raise SpecError(f"{path}.{e.field}", str(e).split(": ", 1)[1]) from None
    env = _obj(d.get("env") or {}, f"{path}.env")
    block_dir = _get(d, "block_dir", str, path)
    return InstanceSpec(
        block_id=block_id, instance_id=iid, image=_get(d, "image", str, path),
        block_dir=Path(block_dir) if block_dir is not None else None, command=tuple(command),
        env=dict(env), context=dict(_obj(d.get("context") or {}, f"{path}.context")), gpus=gpus, resources=res,
        mounts=tuple(mounts), health=health, workers=_get(d, "workers", int, path),
        queue=_get(d, "queue", int, path))
