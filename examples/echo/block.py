"""Echo block: answers every task with its own `data`, plus each file's size and sha256.

Written exactly as an AIOS block; only the import line differs (`from aios_instance import ...`).
Block settings used: blockInitData.greeting, parameters.prefix (live-updatable), management "reset",
and a test hook: a task whose data is {"raise": "message"} makes on_data raise RuntimeError(message).
"""

import hashlib
import json
import threading

from sdk import Block, OnDataResult, PreProcessResult


class EchoBlock:
    def __init__(self, context):
        self.context = context
        self.greeting = context.block_init_data.get("greeting", "echo")
        self.prefix = context.block_init_parameters.get("prefix", "")
        self.count = 0
        self.lock = threading.Lock()
        self.context.metrics.register_counter("echo_file_bytes", "bytes of files echoed")

    def on_preprocess(self, packet):
        try:
            data = json.loads(packet.data) if packet.data else None
        except ValueError as e:
            return False, "data is not JSON: " + str(e)
        return True, [PreProcessResult(packet=packet, extra_data={"input": data})]

    def on_data(self, preprocessed_entry):
        data = preprocessed_entry.extra_data["input"]
        if isinstance(data, dict) and "raise" in data:
            raise RuntimeError(str(data["raise"]))
        files = []
        total = 0
        for f in preprocessed_entry.packet.files:
            files.append({
                "metadata": f.metadata,
                "size": len(f.file_data),
                "sha256": hashlib.sha256(f.file_data).hexdigest(),
            })
            total += len(f.file_data)
        with self.lock:
            self.count += 1
            count = self.count
        if total:
            self.context.metrics.increment_counter("echo_file_bytes", total)
        return True, OnDataResult(output={
            "data": data,
            "files": files,
            "greeting": self.greeting,
            "prefix": self.prefix,
            "count": count,
            "instance_id": self.context.instance_id,
        })

    def on_update(self, updated_parameters):
        if "prefix" in updated_parameters and not isinstance(updated_parameters["prefix"], str):
            return False, "prefix must be a string"
        self.prefix = updated_parameters.get("prefix", self.prefix)
        return True, updated_parameters

    def health(self):
        return {"status": "healthy", "count": self.count}

    def management(self, action, data):
        if action == "reset":
            with self.lock:
                self.count = 0
            return {"status": "success", "count": 0}
        if action == "get_count":
            return {"status": "success", "count": self.count}
        return {"status": "error", "message": "unknown action " + action}

    def get_muxer(self):
        return None


if __name__ == "__main__":
    block = Block(EchoBlock)
    block.run()
