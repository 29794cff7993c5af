"""The vDAG spec (`createvDAG`): blocks (or nested vDAGs) joined into a directed acyclic graph.

Derives `vdagURI = name:version-release-tag`; checks labels, edges and acyclicity. Compiling the
graph into routes is the vdag package's job, not this module's.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Discriminator, Field, Tag

from aiosd.specs.base import AiosModel, JsonObject, Name, PolicyRuleRef, rule_values
from aiosd.specs.errors import Problem, join_path

# Why 1,000: a vDAG is a pipeline a human drew; 1,000 stages is far past any real one and keeps
# the cycle check and route compile bounded.
MAX_VDAG_NODES = 1000


class VdagVersion(AiosModel):
    version: Name
    release_tag: Name = Field(alias="release-tag")


class VdagNodeValues(AiosModel):
    node_label: Name = Field(alias="nodeLabel")
    node_type: Literal["block", "vdag"] = Field(default="block", alias="nodeType")
    vdag_uri: str | None = Field(default=None, alias="vdagURI")
    manual_block_id: str | None = Field(default=None, alias="manualBlockId")
    assignment_policy_rule: PolicyRuleRef | None = Field(default=None, alias="assignmentPolicyRule")
    preprocessing_policy_rule: PolicyRuleRef | None = Field(default=None, alias="preprocessingPolicyRule")
    postprocessing_policy_rule: PolicyRuleRef | None = Field(default=None, alias="postprocessingPolicyRule")
    model_parameters: JsonObject = Field(default_factory=dict, alias="modelParameters")
    input_protocol: dict[str, Any] = Field(default_factory=dict, alias="inputProtocol")
    output_protocol: dict[str, Any] = Field(default_factory=dict, alias="outputProtocol")


class VdagNodeSpec(AiosModel):
    template_type: str = Field(default="", alias="@templateType")
    values: VdagNodeValues


class WrappedVdagNode(AiosModel):
    """The repo example's form: `{"spec": {"values": {...}}, "IOMap": [...]}`."""

    spec: VdagNodeSpec
    io_map: list[JsonObject] = Field(default_factory=list, alias="IOMap")


def _node_form(v: Any) -> str:
    return "<wrapped>" if isinstance(v, dict) and "spec" in v else "<flat>"


VdagNode = Annotated[
    Annotated[WrappedVdagNode, Tag("<wrapped>")] | Annotated[VdagNodeValues, Tag("<flat>")],
    Discriminator(_node_form),
]


class EdgeRef(AiosModel):
    node_label: str = Field(alias="nodeLabel")


class Connection(AiosModel):
    node_label: str = Field(alias="nodeLabel")
    inputs: list[EdgeRef] = Field(min_length=1)


class Graph(AiosModel):
    connections: list[Connection] = Field(default_factory=list)
    # AIOS docs say inputs/outputs; the repo example says input/output (+ inputNames/outputNames).
    inputs: list[EdgeRef] = Field(default_factory=list, validation_alias=AliasChoices("inputs", "input"))
    outputs: list[EdgeRef] = Field(default_factory=list, validation_alias=AliasChoices("outputs", "output"))


class VdagController(AiosModel):
    input_sources: list[JsonObject] = Field(default_factory=list, alias="inputSources")
    init_parameters: JsonObject = Field(default_factory=dict, alias="initParameters")
    init_settings: JsonObject = Field(default_factory=dict, alias="initSettings")
    policies: list[PolicyRuleRef] = Field(default_factory=list)


class VdagSpec(AiosModel):
    vdag_name: Name = Field(alias="vdagName")
    vdag_version: VdagVersion = Field(alias="vdagVersion")
    mode: Literal["create", "dry-run"] = "create"
    discovery_tags: list[str] = Field(default_factory=list, alias="discoveryTags")
    controller: VdagController = Field(default_factory=VdagController)
    nodes: list[VdagNode] = Field(min_length=1, max_length=MAX_VDAG_NODES)
    graph: Graph = Field(default_factory=Graph)

    @property
    def uri(self) -> str:
        return f"{self.vdag_name}:{self.vdag_version.version}-{self.vdag_version.release_tag}"

    def node_values(self) -> list[VdagNodeValues]:
        return [n.spec.values if isinstance(n, WrappedVdagNode) else n for n in self.nodes]

    def edges(self) -> list[tuple[str, str]]:
        """(source label, destination label) pairs."""
        return [(src.node_label, c.node_label) for c in self.graph.connections for src in c.inputs]

    def problems(self, base: str) -> list[Problem]:
        out: list[Problem] = []
        labels: dict[str, int] = {}
        nodes_path = join_path(base, "nodes")
        for i, (raw, node) in enumerate(zip(self.nodes, self.node_values(), strict=True)):
            npath = join_path(nodes_path, i)
            if isinstance(raw, WrappedVdagNode):
                npath = f"{npath}.spec.values"
            if node.node_label in labels:
                out.append(
                    Problem(
                        join_path(npath, "nodeLabel"),
                        f"'{node.node_label}' is already used by nodes[{labels[node.node_label]}]",
                    )
                )
            labels.setdefault(node.node_label, i)
            if node.node_type == "vdag":
                if not node.vdag_uri:
                    out.append(Problem(join_path(npath, "vdagURI"), "is required when nodeType is 'vdag'"))
            else:
                assigned = node.assignment_policy_rule is not None and bool(
                    rule_values(node.assignment_policy_rule).policy_rule_uri
                )
                if not node.manual_block_id and not assigned:
                    out.append(
                        Problem(
                            npath,
                            "a block node needs manualBlockId or an assignmentPolicyRule"
                            " with a policyRuleURI",
                        )
                    )
        gpath = join_path(base, "graph")
        known = ", ".join(sorted(labels)[:20])

        def check(label: str, path: str) -> None:
            if label not in labels:
                out.append(
                    Problem(path, f"names node '{label[:60]}', which is not in nodes (known: {known})")
                )

        for ci, conn in enumerate(self.graph.connections):
            cpath = join_path(join_path(gpath, "connections"), ci)
            check(conn.node_label, join_path(cpath, "nodeLabel"))
            for ii, src in enumerate(conn.inputs):
                check(src.node_label, join_path(join_path(join_path(cpath, "inputs"), ii), "nodeLabel"))
        for key, refs in (("inputs", self.graph.inputs), ("outputs", self.graph.outputs)):
            for ri, ref in enumerate(refs):
                check(ref.node_label, join_path(join_path(join_path(gpath, key), ri), "nodeLabel"))
        if not out:
            cycle = find_cycle(self.edges())
            if cycle:
                out.append(
                    Problem(join_path(gpath, "connections"), "the graph has a cycle: " + " -> ".join(cycle))
                )
        return out


def find_cycle(edges: list[tuple[str, str]]) -> list[str]:
    """One cycle as a list of labels (first label repeated at the end), or [] if acyclic."""
    adj: dict[str, list[str]] = {}
    for a, b in edges:
        adj.setdefault(a, []).append(b)
    white, grey, black = 0, 1, 2
    color: dict[str, int] = {}
    for root in list(adj):
        if color.get(root, white) != white:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = [root]
        color[root] = grey
        while stack:
            node, idx = stack[-1]
            nxt = adj.get(node, [])
            if idx < len(nxt):
                stack[-1] = (node, idx + 1)
                child = nxt[idx]
                c = color.get(child, white)
                if c == grey:
                    return path[path.index(child) :] + [child]
                if c == white:
                    color[child] = grey
                    stack.append((child, 0))
                    path.append(child)
            else:
                color[node] = black
                stack.pop()
                path.pop()
    return []


__all__ = [
    "MAX_VDAG_NODES",
    "Connection",
    "EdgeRef",
    "Graph",
    "VdagController",
    "VdagNodeValues",
    "VdagSpec",
    "VdagVersion",
    "WrappedVdagNode",
    "find_cycle",
]
