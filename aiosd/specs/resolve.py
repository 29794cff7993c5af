"""Resolve a block against its component: inherit init data, settings, parameters and policies.

Rules (AIOS §2.2): block values are laid over the component's defaults key by key; block policy
entries replace component policies of the same name and add new ones. Settings and parameters
are checked against the component's protocols; policy URIs against a catalog when one is given.
Keys a protocol does not name are kept and reported as warnings (AIOS specs carry such keys),
or rejected when `strict=True`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from aiosd.specs.block import KNOWN_POLICY_SLOTS
from aiosd.specs.envelope import VALUES_PATH
from aiosd.specs.errors import Problem, SpecError, join_path
from aiosd.specs.parse import ParsedBlock, ParsedComponent
from aiosd.specs.policy_rules import component_policies, component_policy_problems
from aiosd.specs.protocol import Protocol as FieldProtocol
from aiosd.specs.protocol import check_value, unknown_keys

# Why 20: enough registered URIs to see what exists, short enough for one error line.
MAX_LISTED_URIS = 20


class PolicyInfo(Protocol):
    """What a policy catalog knows about one registered policy."""

    @property
    def uri(self) -> str: ...

    def check_config(
        self, parameters: Mapping[str, Any], settings: Mapping[str, Any], path: str
    ) -> list[Problem]:
        """Problems with a slot's parameters/settings (paths under `path`.parameters / .settings)."""
        ...


class PolicyCatalog(Protocol):
    """The policies that exist here (the policy registry implements this)."""

    def find(self, uri: str) -> PolicyInfo | None:
        """The policy a URI names, after any override mapping; None if none."""
        ...

    def known_uris(self) -> Sequence[str]: ...


@dataclass(frozen=True, slots=True)
class PolicySlot:
    """One resolved policy slot of a block."""

    name: str
    uri: str  # the URI to run (after the catalog's override mapping)
    requested_uri: str  # the URI the spec wrote
    parameters: Mapping[str, Any]
    settings: Mapping[str, Any]
    source: Literal["component", "block"]


@dataclass(frozen=True, slots=True)
class ResolvedBlock:
    """A block with everything inherited from its component, ready to store and place."""

    block_id: str | None
    component_uri: str
    image: str
    component_mode: Literal["aios", "third_party"]
    min_instances: int
    max_instances: int
    init_data: Mapping[str, Any]
    settings: Mapping[str, Any]
    parameters: Mapping[str, Any]
    policies: Mapping[str, PolicySlot]
    input_protocol: FieldProtocol
    output_protocol: FieldProtocol
    metadata: Mapping[str, Any]
    tags: tuple[str, ...]
    warnings: tuple[Problem, ...] = field(default=())
    # Component `policies` entries without a policyRuleURI (e.g. `resource_affinity` in the AIOS
    # examples): kept for whoever reads them, never run.
    policy_hints: Mapping[str, Any] = field(default_factory=dict)

    def policy(self, name: str) -> PolicySlot | None:
        return self.policies.get(name)

    def to_record(self) -> dict[str, Any]:
        """The AIOS block-registry record shape (`policies{name -> {policyRuleURI, ...}}`)."""
        return {
            "id": self.block_id,
            "componentUri": self.component_uri,
            "blockMetadata": dict(self.metadata),
            "policies": {
                n: {"policyRuleURI": s.uri, "parameters": dict(s.parameters), "settings": dict(s.settings)}
                for n, s in self.policies.items()
            },
            "blockInitData": dict(self.init_data),
            "initSettings": dict(self.settings),
            "parameters": dict(self.parameters),
            "minInstances": self.min_instances,
            "maxInstances": self.max_instances,
            "tags": list(self.tags),
        }


def _policy_slots(block: ParsedBlock, component: ParsedComponent, warnings: list[Problem]
                  ) -> tuple[dict[str, PolicySlot], dict[str, str], dict[str, Any]]:
    """The block's policy slots (the component's, overridden by the block's policyRulesSpec), the
    path each came from, and the component's hints; a slot name the system does not read is a warning."""
    spec, comp = block.spec, component.spec
    base = VALUES_PATH
    comp_slots, hints = component_policies(comp)
    slots: dict[str, PolicySlot] = {}
    slot_paths: dict[str, str] = {}
    for name, rule in comp_slots.items():
        slots[name] = PolicySlot(
            name=name,
            uri=rule.policy_rule_uri,
            requested_uri=rule.policy_rule_uri,
            parameters=rule.parameters,
            settings=rule.settings,
            source="component",
        )
        slot_paths[name] = f"component {comp.uri}: policies.{name}"
    for i, entry in enumerate(spec.policy_rules_spec):
        v = entry.values
        slots[v.name] = PolicySlot(
            name=v.name,
            uri=v.policy_rule_uri,
            requested_uri=v.policy_rule_uri,
            parameters=v.parameters,
            settings=v.settings,
            source="block",
        )
        slot_paths[v.name] = f"{join_path(join_path(base, 'policyRulesSpec'), i)}.values"
        if v.name not in KNOWN_POLICY_SLOTS:  # kept (custom slots are allowed), but a typo is likely
            warnings.append(
                Problem(
                    f"{slot_paths[v.name]}.name",
                    f"{v.name!r} is not a slot the system reads (known: "
                    f"{', '.join(sorted(KNOWN_POLICY_SLOTS))})",
                )
            )
    return slots, slot_paths, hints


def _check_slots(slots: dict[str, PolicySlot], slot_paths: dict[str, str], catalog: PolicyCatalog) -> list[Problem]:
    """Check each slot's policy against the catalog (its URI known, its configuration accepted); a slot
    whose URI the catalog resolves to another (an override) is rewritten in `slots`."""
    problems: list[Problem] = []
    for name, slot in list(slots.items()):
        spath = slot_paths[name]
        info = catalog.find(slot.uri)
        if info is None:
            known = list(catalog.known_uris())
            listed = ", ".join(known[:MAX_LISTED_URIS]) + (" ..." if len(known) > MAX_LISTED_URIS else "")
            problems.append(
                Problem(
                    join_path(spath, "policyRuleURI"),
                    f"policy {slot.uri!r} is not registered; registered: {listed or 'none'}",
                )
            )
            continue
        problems += info.check_config(slot.parameters, slot.settings, spath)
        if info.uri != slot.uri:
            slots[name] = replace(slot, uri=info.uri)
    return problems


def resolve_block(
    block: ParsedBlock,
    component: ParsedComponent,
    *,
    catalog: PolicyCatalog | None = None,
    strict: bool = False,
) -> ResolvedBlock:
    """Lay the block over its component and check the result.

    Raises:
        SpecError: block/component mismatch, settings or parameters that break the component's
            protocols, policy URIs the catalog does not know (listing what exists), or policy
            parameters the policy rejects. Every problem names its path.
    """
    spec, comp = block.spec, component.spec
    base = VALUES_PATH
    problems: list[Problem] = []
    warnings: list[Problem] = []
    if spec.block_component_uri != comp.uri:
        raise SpecError.at(
            join_path(base, "blockComponentURI"),
            f"names {spec.block_component_uri!r} but the component given is {comp.uri!r}",
        )
    init_data = {**comp.component_init_data, **(spec.block_init_data or {})}
    settings = {**comp.component_init_settings, **(spec.init_settings or {})}
    parameters = {**comp.component_parameters, **(spec.parameters or {})}
    for key, merged, given, proto in (
        ("initSettings", settings, spec.init_settings or {}, component.protocols["settings"]),
        ("parameters", parameters, spec.parameters or {}, component.protocols["parameters"]),
    ):
        path = join_path(base, key)
        problems += check_value(proto, merged, path)
        extra = unknown_keys(proto, given, path)
        (problems if strict else warnings).extend(extra)
    slots, slot_paths, hints = _policy_slots(block, component, warnings)
    if catalog is not None:
        problems += _check_slots(slots, slot_paths, catalog)
    if problems:
        raise SpecError(problems)
    return ResolvedBlock(
        block_id=spec.block_id,
        component_uri=comp.uri,
        image=comp.container_registry_info.container_image,
        component_mode=comp.mode,
        min_instances=spec.min_instances,
        max_instances=spec.max_instances,
        init_data=init_data,
        settings=settings,
        parameters=parameters,
        policies=slots,
        input_protocol=component.protocols["input"],
        output_protocol=component.protocols["output"],
        metadata=spec.block_metadata if spec.block_metadata is not None else comp.component_metadata,
        tags=tuple(spec.tags if spec.tags is not None else comp.tags),
        warnings=tuple(warnings),
        policy_hints=hints,
    )


__all__ = [
    "PolicyCatalog",
    "PolicyInfo",
    "PolicySlot",
    "ResolvedBlock",
    "component_policies",
    "component_policy_problems",
    "resolve_block",
]
