"""A custom load balancer: the instance with the fewest outstanding tasks, ties by id.

Input (AIOS load balancer contract): {"mode", "packet", "instances": [{"instance_id", "outstanding"}]}.
Output: {"instance_id": ...}. Stateful: counts the picks per instance (management "stats").
"""


class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        self.rule_id = rule_id
        self.settings = settings
        self.parameters = parameters
        self.picks = {}

    def eval(self, parameters, input_data, context):
        instances = input_data.get("instances") or []
        if not instances:
            return {"instance_id": None, "reason": "no instances"}
        penalty = float(parameters.get("penalty", 0.0))
        best = min(instances, key=lambda i: (i.get("outstanding", 0) + penalty * i.get("errors", 0),
                                             str(i["instance_id"])))
        iid = best["instance_id"]
        self.picks[iid] = self.picks.get(iid, 0) + 1
        return {"instance_id": iid}

    def management(self, action, data):
        if action == "stats":
            return {"picks": dict(self.picks)}
        if action == "reset":
            self.picks.clear()
            return {"ok": True}
        return {"ok": False, "error": "unknown action " + str(action)[:60]}
