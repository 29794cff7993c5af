"""A policy with a requirement: it scores with a helper from its own package (see requirements.txt)."""

import tinyscore


class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        self.parameters = parameters

    def eval(self, parameters, input_data, context):
        return {"score": tinyscore.score(input_data.get("values", [])), "version": tinyscore.__version__}
