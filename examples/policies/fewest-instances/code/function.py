"""A custom resource allocator: the node running the fewest instances that has the room, ties by id.

Input (AIOS resource-allocator contract): {"action": "allocation" | "dry_run", "payload": {"block",
"nodes": [{"node_id", "vcpus_free", "memory_free_mb", "instances", "gpus": [...]}], "requirement",
"instance_index"}}. Output: {"node_id", "gpus"} (node_id null: no node fits); a dry run answers
{"selection_score_data": {"score", "node_info"}}. CPU only: it never assigns GPUs.
"""


class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        self.rule_id = rule_id

    def eval(self, parameters, input_data, context):
        payload = input_data.get("payload") or {}
        cpus = float(parameters.get("cpus", 0))
        memory_mb = float(parameters.get("memory_mb", 0))
        fits = [n for n in payload.get("nodes") or []
                if n.get("vcpus_free", 0) >= cpus and n.get("memory_free_mb", 0) >= memory_mb]
        best = min(fits, key=lambda n: (n.get("instances", 0), n["node_id"]), default=None)
        node = {"node_id": best["node_id"], "gpus": []} if best is not None else None
        if input_data.get("action") == "dry_run":
            return {"selection_score_data": {"score": 1.0 if node else 0.0, "node_info": node}}
        return node or {"node_id": None, "gpus": []}
