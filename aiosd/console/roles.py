"""The role each API route needs, for routes whose role packages do not declare one on their Route.

viewer: reads; operator: apply/scale/delete blocks and vDAGs, infer, mgmt, local instances, images and
assets; admin: users, tokens, policies, governance, registry writes, node removal, test hooks;
inference: the inference routes (operators and admins may call them too). A route declared nowhere
needs admin (auth.py), and tests/integration/test_console_roles.py fails on it.
"""

from __future__ import annotations

import dataclasses

from aiosd.api.routes import Route

V, O, A, INF = "viewer", "operator", "admin", "inference"

ROUTE_ROLES: dict[tuple[str, str], str] = {
    ("POST", "/v1/stop"): A, ("GET", "/v1/sessions"): V,
    ("POST", "/v1/infer/vdag/{uri}"): INF, ("GET", "/v1/vdags"): V, ("GET", "/v1/vdags/{uri}"): V,
    ("DELETE", "/v1/vdags/{uri}"): O, ("POST", "/v1/vdag/verify"): V,
    ("POST", "/v1/chat/completions"): INF, ("POST", "/v1/completions"): INF, ("GET", "/v1/models"): INF,
    ("GET", "/v1/status"): V, ("GET", "/v1/healthz"): V, ("PUT", "/v1/log-level"): A,
    ("GET", "/v1/tasks"): V, ("GET", "/v1/tasks/{id}"): V, ("POST", "/v1/tasks/{id}/wait"): V,
    ("GET", "/v1/local/instances"): V, ("PUT", "/v1/local/instances"): O, ("GET", "/v1/ps"): V,
    ("GET", "/v1/logs/{instance}"): V, ("GET", "/v1/gpus"): V,
    ("GET", "/v1/nodes"): V, ("DELETE", "/v1/nodes/{id}"): A, ("POST", "/v1/tokens"): A,
    ("GET", "/v1/tokens"): A, ("DELETE", "/v1/tokens/{id}"): A, ("GET", "/v1/doctor"): V,
    ("GET", "/v1/registry"): V, ("GET", "/v1/registry/_digests"): V, ("GET", "/v1/registry/{table}"): V,
    ("POST", "/v1/registry/{table}"): A, ("POST", "/v1/registry/{table}/query"): V,
    ("GET", "/v1/registry/{table}/{key}"): V, ("PUT", "/v1/registry/{table}/{key}"): A,
    ("DELETE", "/v1/registry/{table}/{key}"): A, ("GET", "/v1/watch"): V,
    ("GET", "/v1/assets"): V, ("POST", "/v1/assets"): O, ("GET", "/v1/assets/info"): V,
    ("POST", "/v1/assets/fetch"): O, ("GET", "/v1/assets/fetches"): V, ("GET", "/v1/assets/fetches/{sha256}"): V,
    ("GET", "/v1/blobs/{sha256}"): V, ("POST", "/v1/assets/_faults"): A,
    ("GET", "/v1/images"): V, ("POST", "/v1/images/push"): O, ("POST", "/v1/images/pull"): O,
    ("POST", "/v1/policies"): A, ("GET", "/v1/policies"): V, ("GET", "/v1/policies/{uri}"): V,
    ("DELETE", "/v1/policies/{uri}"): A, ("POST", "/v1/policies/{uri}/run"): O,
    ("POST", "/v1/policies/{uri}/management"): A,
    ("POST", "/v1/templates"): O, ("GET", "/v1/templates"): V, ("POST", "/v1/specs"): O, ("GET", "/v1/specs"): V,
    ("GET", "/v1/specs/{uri}"): V, ("POST", "/v1/convert"): V,
    ("GET", "/v1/governance"): V, ("PUT", "/v1/governance"): A, ("POST", "/v1/governance/precheck"): O,
    ("GET", "/v1/metrics"): V, ("GET", "/v1/metrics/nodes"): V, ("GET", "/v1/metrics/nodes/{node}"): V,
    ("GET", "/v1/metrics/clusters"): V, ("GET", "/v1/metrics/series/{name}"): V, ("GET", "/metrics"): V,
    ("GET", "/v1/controller"): V, ("GET", "/v1/controller/placements"): V,
    ("POST", "/v1/controller/placements"): O, ("DELETE", "/v1/controller/placements/{block_id}"): O,
    ("GET", "/v1/controller/local"): V, ("GET", "/v1/controller/tasks"): V,
    ("POST", "/v1/allocate/dry-run"): V, ("GET", "/v1/clusters"): V, ("GET", "/v1/clusters/{name}"): V,
    ("POST", "/v1/test/faults"): A,
    ("POST", "/v1/apply"): O, ("POST", "/v1/infer/block/{id}"): INF, ("POST", "/v1/mgmt/block/{id}"): O,
    ("GET", "/v1/components"): V, ("GET", "/v1/components/{id}"): V, ("DELETE", "/v1/components/{id}"): O,
    ("GET", "/v1/blocks"): V, ("GET", "/v1/blocks/{id}"): V, ("DELETE", "/v1/blocks/{id}"): O,
}


def with_roles(routes: list[Route]) -> list[Route]:
    """`routes` with each undeclared role filled from ROUTE_ROLES (one still None needs admin)."""
    return [r if r.role is not None else dataclasses.replace(r, role=ROUTE_ROLES.get((r.method, r.path)))
            for r in routes]


def undeclared(routes: list[Route]) -> list[str]:
    """'METHOD path' of each route that declares no role anywhere."""
    return [f"{r.method} {r.path}" for r in routes
            if r.role is None and (r.method, r.path) not in ROUTE_ROLES]


__all__ = ["ROUTE_ROLES", "undeclared", "with_roles"]
