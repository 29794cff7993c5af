"""One set of record names for `aiosd get`, `watch`, `describe` and `delete`.

A name is a kind of record and where this node reads it from:
- `blocks`, `components`: the network's records (every node's blocks, the components admin nodes
  applied; registry tables of the same names); `--local` reads this node's catalog instead (what
  `aiosd apply` stored here; `/v1/blocks`, `/v1/components`);
- `nodes`: the membership view (`/v1/nodes`, the same as `aiosd nodes`);
- every other name: a table of the network's replicated registry (`/v1/registry/TABLE`).
`--registry` (or `--filter`) reads the replicated table of the same name instead, where there is one.
Singular forms and a few short forms are accepted everywhere.
"""

from __future__ import annotations

from aiosd.errors import UsageError

# Registry tables (aiosd.registry.service.TABLES; not imported: the CLI starts without the registry
# stack; a unit test keeps the two equal).
REGISTRY_TABLES = ("assets", "audit", "blocks", "clusters", "components", "images", "inference_servers", "metrics",
                   "nodes", "policies", "specs", "tasks", "templates", "users", "vdags")
CATALOG = ("blocks", "components")
MEMBERS = "nodes"
NAMES = tuple(sorted({*REGISTRY_TABLES, *CATALOG}))
_ALIASES = {"comp": "components", "comps": "components", "inference-servers": "inference_servers",
            "inference_server": "inference_servers", "policy": "policies"}


def canonical(raw: str) -> str | None:
    """RAW as one of NAMES (plural, lower case), or None when it names no kind of record."""
    name = raw.lower()
    if name in NAMES:
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    if name + "s" in NAMES:
        return name + "s"
    return None


def resolve(raw: str, *, what: str = "kind") -> str:
    """RAW as one of NAMES. Raises UsageError listing the names."""
    name = canonical(raw)
    if name is None:
        raise UsageError(f"unknown {what} {raw!r}; use one of: {', '.join(NAMES)} (singular forms work too)")
    return name


def source(name: str, *, registry: bool = False, local: bool = False) -> str:
    """Where NAME is read: "catalog" (this node's, `local=True`), "network" (blocks and components as the
    network's registry holds them), "members" or "registry" (`registry=True`: the replicated table)."""
    if registry and name in REGISTRY_TABLES:
        return "registry"
    if name in CATALOG:
        return "catalog" if local else "network"
    if name == MEMBERS:
        return "members"
    return "registry"


__all__ = ["CATALOG", "MEMBERS", "NAMES", "REGISTRY_TABLES", "canonical", "resolve", "source"]
