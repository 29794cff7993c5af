"""A block of exactly the AIOS example shape: a two-input join (fan-in) that adds up its inputs.

Two upstream stages each send a packet with the same (session_id, seq_no) and data {"source": str,
"value": number}; get_muxer() returns Muxer(2), so on_preprocess sees one packet whose data is
{"inputs": [a, b]}. Output: {"sum": (a.value + b.value) * scale, "sources": [...], "seq_no": n}.
Only the import line differs from AIOS.
"""

import json

from sdk import Block, Muxer, OnDataResult, PreProcessResult


class SumJoinBlock:
    def __init__(self, context):
        self.context = context
        self.scale = float(context.block_init_parameters.get("scale", 1.0))
        self.joined = 0

    def on_preprocess(self, packet):
        try:
            inputs = json.loads(packet.data)["inputs"]
            values = [float(i["value"]) for i in inputs]
            sources = [str(i.get("source", "")) for i in inputs]
        except Exception as e:  # noqa: BLE001  # AIOS callback shape: failures are returned, not raised
            return False, "expected two inputs with a numeric 'value': " + str(e)
        return True, [PreProcessResult(packet=packet, extra_data={"values": values, "sources": sources})]

    def on_data(self, preprocessed_entry):
        try:
            values = preprocessed_entry.extra_data["values"]
            self.joined += 1
            return True, OnDataResult(output={
                "sum": sum(values) * self.scale,
                "sources": preprocessed_entry.extra_data["sources"],
                "seq_no": preprocessed_entry.packet.seq_no,
            })
        except Exception as e:  # noqa: BLE001  # AIOS callback shape: failures are returned, not raised
            return False, str(e)

    def on_update(self, updated_parameters):
        try:
            if "scale" in updated_parameters:
                self.scale = float(updated_parameters["scale"])
            return True, updated_parameters
        except Exception as e:  # noqa: BLE001  # AIOS callback shape: failures are returned, not raised
            return False, str(e)

    def health(self):
        return {"status": "healthy", "joined": self.joined}

    def management(self, action, data):
        try:
            if action == "get_stats":
                return {"status": "success", "joined": self.joined, "scale": self.scale}
            if action == "reset":
                self.joined = 0
                return {"status": "success"}
            return {"status": "error", "message": "unknown action " + action}
        except Exception as e:  # noqa: BLE001  # AIOS callback shape: failures are returned, not raised
            return {"status": "error", "message": str(e)}

    def get_muxer(self):
        return Muxer(2)


if __name__ == "__main__":
    block = Block(SumJoinBlock)
    block.run()
