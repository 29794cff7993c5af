"""vDAG stage block: appends its suffix to `text` and its tag to `trail`; says how long the text is.

Input {"text": str, "trail": [str]?}; output {"text", "trail", "size": "long"|"short", "instance_id"}.
Parameters: suffix, tag, long_at (characters from which the text counts as long; default 12).
A task whose text is "fail" makes on_data fail (tests use it for the error path).
"""

import json

from sdk import Block, OnDataResult, PreProcessResult


class StageBlock:
    def __init__(self, context):
        self.context = context
        p = context.block_init_parameters
        self.suffix = p.get("suffix", "")
        self.tag = p.get("tag", context.block_id)
        self.long_at = int(p.get("long_at", 12))

    def on_preprocess(self, packet):
        try:
            data = json.loads(packet.data) if packet.data else {}
        except ValueError as e:
            return False, "data is not JSON: " + str(e)
        if not isinstance(data, dict) or not isinstance(data.get("text"), str):
            return False, "data.text: must be a string"
        return True, [PreProcessResult(packet=packet, extra_data=data)]

    def on_data(self, entry):
        data = entry.extra_data
        if data["text"] == "fail":
            return False, "asked to fail"
        text = data["text"] + self.suffix
        return True, OnDataResult(output={
            "text": text,
            "trail": list(data.get("trail") or []) + [self.tag],
            "size": "long" if len(text) >= self.long_at else "short",
            "instance_id": self.context.instance_id,
        }, files=list(entry.packet.files))

    def on_update(self, updated):
        self.suffix = updated.get("suffix", self.suffix)
        return True, updated

    def health(self):
        return {"status": "healthy"}

    def management(self, action, data):
        return {"status": "error", "message": "unknown action " + action}

    def get_muxer(self):
        return None


if __name__ == "__main__":
    Block(StageBlock).run()
