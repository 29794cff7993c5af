"""Compile a `createvDAG` document: assignment (nodeLabel → block) and the stage graph. Sans-IO.

Two pure steps the vdag service drives:

1. `assign(spec, known_blocks, candidates)`: a node's `manualBlockId` must name a known block;
   a node with an `assignmentPolicyRule` gets the block ids its policy answered (`candidates`,
   computed by the driver), which must be exactly one; nested vDAG nodes are left to step 2.
2. `compile_graph(spec, assignment, nested)`: nested vDAGs (already compiled and stored) are
   expanded inline under `outer/inner` labels (their heads take the edges into the nested node,
   their tails the edges out of it); heads are stages with no inbound edge, tails stages with no
   outbound edge. Stages are keyed by nodeLabel, not block id, so a block used by two nodes of one
   vDAG keeps two stages (AIOS's t2 graph collapses them; reference/aios-vdag.md §4).

Every error is a SpecError whose path names the node (`nodes[i].manualBlockId`, ...); nothing is
stored by the caller when one is raised.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiosd.specs.base import rule_values
from aiosd.specs.errors import Problem, SpecError, join_path
from aiosd.specs.vdag import VdagNodeValues, VdagSpec, WrappedVdagNode

VALUES = "body.spec.values"
NESTED_SEP = "/"


@dataclass(frozen=True, slots=True)
class PolicyRef:
    uri: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"uri": self.uri, "parameters": dict(self.parameters), "settings": dict(self.settings)}

    @staticmethod
    def from_json(raw: Any) -> PolicyRef | None:
        if not isinstance(raw, Mapping) or not raw.get("uri"):
            return None
        return PolicyRef(str(raw["uri"]), dict(raw.get("parameters") or {}), dict(raw.get("settings") or {}))


@dataclass(frozen=True, slots=True)
class Stage:
    """One node of the compiled graph: the block it runs and its neighbours (by label)."""

    label: str
    block_id: str
    children: tuple[str, ...] = ()
    parents: tuple[str, ...] = ()
    preprocessing: PolicyRef | None = None
    postprocessing: PolicyRef | None = None
    model_parameters: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"block_id": self.block_id, "children": list(self.children), "parents": list(self.parents),
                "preprocessing": self.preprocessing.to_json() if self.preprocessing else None,
                "postprocessing": self.postprocessing.to_json() if self.postprocessing else None,
                "model_parameters": dict(self.model_parameters)}


@dataclass(frozen=True, slots=True)
class CompiledVdag:
    uri: str
    stages: Mapping[str, Stage]
    heads: tuple[str, ...]
    tails: tuple[str, ...]
    nested: tuple[str, ...] = ()  # every vDAG expanded into this one, transitively

    @property
    def assignment(self) -> dict[str, str]:
        return {label: s.block_id for label, s in self.stages.items()}

    def t2(self) -> dict[str, list[str]]:
        """AIOS's type-2 graph: block → downstream blocks."""
        out: dict[str, set[str]] = {}
        for s in self.stages.values():
            out.setdefault(s.block_id, set()).update(self.stages[c].block_id for c in s.children)
        return {b: sorted(c) for b, c in sorted(out.items())}

    def rev_mapping(self) -> dict[str, list[str]]:
        """block → the nodeLabels it serves (AIOS keeps one label; a block may serve several)."""
        out: dict[str, list[str]] = {}
        for label, s in self.stages.items():
            out.setdefault(s.block_id, []).append(label)
        return out

    def blocks(self) -> list[str]:
        return sorted({s.block_id for s in self.stages.values()})

    def to_record(self) -> dict[str, Any]:
        return {"assignment": self.assignment, "nested": list(self.nested),
                "graph": {"head": self.heads[0] if self.heads else "", "heads": list(self.heads),
                          "tails": list(self.tails), "t2": self.t2(), "rev_mapping": self.rev_mapping(),
                          "stages": {label: s.to_json() for label, s in self.stages.items()}}}

    @staticmethod
    def from_record(uri: str, rec: Mapping[str, Any]) -> CompiledVdag:
        """The compiled graph of a stored record (raises KeyError/TypeError on a damaged one)."""
        g = rec["graph"]
        stages = {}
        for label, s in g["stages"].items():
            stages[label] = Stage(label, str(s["block_id"]), tuple(s["children"]), tuple(s["parents"]),
                                  PolicyRef.from_json(s.get("preprocessing")),
                                  PolicyRef.from_json(s.get("postprocessing")), dict(s.get("model_parameters") or {}))
        return CompiledVdag(uri, stages, tuple(g["heads"]), tuple(g["tails"]), tuple(rec.get("nested") or ()))


def node_path(spec: VdagSpec, i: int) -> str:
    p = join_path(join_path(VALUES, "nodes"), i)
    return f"{p}.spec.values" if isinstance(spec.nodes[i], WrappedVdagNode) else p


def _ref(raw: Any) -> PolicyRef | None:
    if raw is None:
        return None
    v = rule_values(raw)
    return PolicyRef(v.policy_rule_uri, dict(v.parameters), dict(v.settings)) if v.policy_rule_uri else None


def assign(spec: VdagSpec, known_blocks: Container[str],
           candidates: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """nodeLabel → block id for the block nodes. `candidates[label]`: what the node's assignment
    policy answered (driver's work). Raises SpecError naming every node that fails."""
    out: dict[str, str] = {}
    problems: list[Problem] = []
    for i, node in enumerate(spec.node_values()):
        if node.node_type == "vdag":
            continue
        path = node_path(spec, i)
        if node.manual_block_id:
            if node.manual_block_id not in known_blocks:
                problems.append(Problem(join_path(path, "manualBlockId"),
                                        f"node '{node.node_label}': no block {node.manual_block_id!r} is known "
                                        "to this node (apply it first, or check the id)"))
            out[node.node_label] = node.manual_block_id
            continue
        got = list(dict.fromkeys(candidates.get(node.node_label, ())))
        if len(got) != 1:
            shown = ", ".join(got[:5]) + (" ..." if len(got) > 5 else "")
            problems.append(Problem(join_path(path, "assignmentPolicyRule"),
                                    f"node '{node.node_label}': the assignment policy must yield exactly one block, "
                                    f"it yielded {len(got)}" + (f" ({shown})" if got else "")))
            continue
        if got[0] not in known_blocks:
            problems.append(Problem(join_path(path, "assignmentPolicyRule"),
                                    f"node '{node.node_label}': the assignment policy chose {got[0]!r}, "
                                    "which is not a known block"))
            continue
        out[node.node_label] = got[0]
    if problems:
        raise SpecError(problems)
    return out


def _own_stage(node: VdagNodeValues, block_id: str) -> Stage:
    return Stage(node.node_label, block_id, preprocessing=_ref(node.preprocessing_policy_rule),
                 postprocessing=_ref(node.postprocessing_policy_rule), model_parameters=dict(node.model_parameters))


def compile_graph(spec: VdagSpec, assignment: Mapping[str, str],
                  nested: Mapping[str, CompiledVdag]) -> CompiledVdag:
    """The stage graph, nested vDAGs expanded. Raises SpecError (unknown or looping nested vDAG)."""
    uri = spec.uri
    stages: dict[str, Stage] = {}
    # For each outer label: the stage labels that receive its inputs / send its outputs.
    entry_of: dict[str, tuple[str, ...]] = {}
    exit_of: dict[str, tuple[str, ...]] = {}
    edges: list[tuple[str, str]] = []
    problems: list[Problem] = []
    nested_uris: list[str] = []
    for i, node in enumerate(spec.node_values()):
        label = node.node_label
        if node.node_type != "vdag":
            stages[label] = _own_stage(node, assignment[label])
            entry_of[label] = exit_of[label] = (label,)
            continue
        path = join_path(node_path(spec, i), "vdagURI")
        sub_uri = node.vdag_uri or ""
        sub = nested.get(sub_uri)
        if sub_uri == uri or (sub is not None and uri in sub.nested):
            chain = " -> ".join([uri, sub_uri, *([uri] if sub_uri != uri else [])])
            problems.append(Problem(path, f"node '{label}': nested vDAGs loop ({chain})"))
            continue
        if sub is None:
            problems.append(Problem(path, f"node '{label}': no vDAG {sub_uri[:200]!r} is stored "
                                    "(apply the nested vDAG first)"))
            continue
        nested_uris += [sub.uri, *sub.nested]
        pre = label + NESTED_SEP
        for sl, s in sub.stages.items():
            stages[pre + sl] = Stage(pre + sl, s.block_id, (), (), s.preprocessing, s.postprocessing,
                                     s.model_parameters)
            edges += [(pre + sl, pre + c) for c in s.children]
        entry_of[label] = tuple(pre + h for h in sub.heads)
        exit_of[label] = tuple(pre + t for t in sub.tails)
    if problems:
        raise SpecError(problems)
    for src, dst in spec.edges():
        edges += [(a, b) for a in exit_of[src] for b in entry_of[dst]]
    children: dict[str, list[str]] = {label: [] for label in stages}
    parents: dict[str, list[str]] = {label: [] for label in stages}
    for a, b in dict.fromkeys(edges):
        children[a].append(b)
        parents[b].append(a)
    final = {label: Stage(label, s.block_id, tuple(children[label]), tuple(parents[label]), s.preprocessing,
                          s.postprocessing, s.model_parameters) for label, s in stages.items()}
    heads = tuple(label for label in final if not parents[label])
    tails = tuple(label for label in final if not children[label])
    return CompiledVdag(uri, final, heads, tails, tuple(dict.fromkeys(nested_uris)))


__all__ = ["NESTED_SEP", "CompiledVdag", "PolicyRef", "Stage", "assign", "compile_graph", "node_path"]
