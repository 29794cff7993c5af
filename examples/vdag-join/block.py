"""vDAG fan-in block: its Muxer(N) joins the N branches of one (session_id, seq_no); the answer
joins their texts (sorted, so the order of arrival does not matter) and trails.

blockInitData.inputs = N (default 2). Output {"text": "a|b|c", "trail": [...], "joined": N}.
"""

from sdk import Block, Muxer, OnDataResult, PreProcessResult


class JoinBlock:
    def __init__(self, context):
        self.context = context
        self.n = int(context.block_init_data.get("inputs", 2))

    def on_preprocess(self, packet):
        data = packet.json()
        parts = data.get("inputs") if isinstance(data, dict) else None
        if not isinstance(parts, list):
            return False, "expected a merged packet {inputs: [...]}"
        return True, [PreProcessResult(packet=packet, extra_data=parts)]

    def on_data(self, entry):
        parts = [p for p in entry.extra_data if isinstance(p, dict)]
        trail = sorted({t for p in parts for t in p.get("trail", [])})
        return True, OnDataResult(output={
            "text": "|".join(sorted(str(p.get("text")) for p in parts)),
            "trail": trail + ["join"],
            "joined": len(parts),
            "instance_id": self.context.instance_id,
        })

    def health(self):
        return {"status": "healthy"}

    def management(self, action, data):
        return {"status": "error", "message": "unknown action " + action}

    def get_muxer(self):
        return Muxer(self.n)


if __name__ == "__main__":
    Block(JoinBlock).run()
