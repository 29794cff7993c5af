"""The instance contract: how a daemon starts a block process and talks to its task endpoint.

This module encodes and decodes the msgpack bodies of that contract; `server.py` serves it.

THE INSTANCE CONTRACT (v1; also docs/instance-contract.md)

Start: `python3 block.py` (the user's file ends in `Block(Cls).run()`). Environment:
  AIOSD_INSTANCE_SOCKET   path of a unix socket to serve on (preferred), or
  AIOSD_INSTANCE_PORT     TCP port on 127.0.0.1 (0 = pick one; the "listening" log line names it)
  AIOSD_INSTANCE_CONTEXT  JSON object {"block_id", "instance_id", "node_id", "cluster_id",
                          "block_data": {}, "block_init_data": {}, "block_init_settings": {},
                          "block_init_parameters": {}, "allocation_info": {"gpus": [int|uuid], "node_id",
                          "cluster_id"}}; missing keys default to empty
  AIOSD_INSTANCE_WORKERS  worker pool size (default block_init_data.max_threads, else 4)
  AIOSD_INSTANCE_QUEUE    bounded queue size (default block_init_data.max_queue_size, else 64)
  AIOSD_INSTANCE_MAX_BODY_BYTES  largest task body accepted (default 64 MiB)
Without SOCKET/PORT, run() prints how to run the block (or to use BlockTester) and exits 2.
A malformed environment exits 2 with one line naming the variable and field.

Routes (aiohttp; tasks are msgpack, Content-Type application/msgpack; the rest JSON):
  POST /v1/task   body: map AIOSPacket {"session_id": str, "seq_no": int, "data": str (JSON text),
                  "files": [{"metadata": str, "file_data": bin}], "frame_ptr": str, "output_ptr": str,
                  "ts": float}; missing keys default, unknown keys are ignored (forward compatible).
                  Runs vDAG hooks (none yet) -> muxer (if get_muxer()) -> on_preprocess -> on_data per item.
      200 {"ok": true, "packets": [AIOSPacket...]}   outputs; `data` = JSON text of OnDataResult.output;
                                                     [] when held back by the muxer or a batcher
      422 {"ok": false, "error": {"type", "message", "block_id", "stage"}}   a callback raised (type = the
          exception class name) or returned (False, err) (type = PreprocessFailed | OnDataFailed) or a
          result of the wrong shape (type = BadCallbackResult); stage = on_preprocess | on_data. The
          instance keeps serving.
      400 {"ok": false, "error": {"type": "BadRequest", "message": "<field path>: <problem>",
          "stage": "decode", ...}}   undecodable body or a field of the wrong type
      413 body larger than AIOSD_INSTANCE_MAX_BODY_BYTES
      503 {"ok": false, "error": {"type": "Busy" | "ShuttingDown", ...}}   the bounded queue is full (or the
          instance is stopping); answered at once, never queued
  GET  /health         200 {"healthy": true, "detail": health()}; 503 {"healthy": false, ...} when health()
                       raises, returns a falsy value, or takes longer than 10 s
  POST /setParameters  JSON object -> on_update(params) -> 200 {"ok": true, "parameters": ...} or
                       422 {"ok": false, "error": {...}}; 400 when the body is not a JSON object
  POST /mgmt           JSON {"mgmt_action": str, "mgmt_data": any} -> 200 {"ok": true, "result": ...} or
                       422 {"ok": false, "error": {...}}
  GET  /metrics        Prometheus text (0.0.4)
Blocking callbacks run in a bounded pool of daemon threads (size = workers); health/setParameters/mgmt
use a separate small pool, so a slow block never stalls health checks.
SIGTERM/SIGINT: stop accepting, drain in-flight tasks for at most 2 s, exit 0. Logs: stderr, key=value,
one line per lifecycle step ("instance listening", "instance stopping", "instance stopped").
"""

from __future__ import annotations

import math
from typing import Any

import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published

from sdk.errors import PacketError
from sdk.packet import AIOSFile, AIOSPacket

MSGPACK = "application/msgpack"
TASK_PATH = "/v1/task"
# A task body may carry images or activations; 64 MiB bounds one request's memory while leaving room
# for a batch of frames. Larger data belongs behind frame_ptr.
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024

_STR_FIELDS = ("session_id", "data", "frame_ptr", "output_ptr")


def packet_from_obj(obj: Any, path: str = "packet") -> AIOSPacket:
    """Build an AIOSPacket from a decoded msgpack map, checking every field's type.

    Raises:
        PacketError: naming the first bad field (e.g. `packet.files[2].file_data`).
    """
    if not isinstance(obj, dict):
        raise PacketError(path, f"must be a map, got {type(obj).__name__}")
    values: dict[str, Any] = {}
    for name in _STR_FIELDS:
        v = obj.get(name, "")
        if v is None:
            v = ""
        if not isinstance(v, str):
            raise PacketError(f"{path}.{name}", f"must be a string, got {type(v).__name__}")
        values[name] = v
    seq = obj.get("seq_no", 0)
    if seq is None:
        seq = 0
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise PacketError(f"{path}.seq_no", f"must be an integer, got {type(seq).__name__}")
    ts = obj.get("ts", 0.0)
    if ts is None:
        ts = 0.0
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
        raise PacketError(f"{path}.ts", "must be a finite number")
    files_obj = obj.get("files", [])
    if files_obj is None:
        files_obj = []
    if not isinstance(files_obj, list):
        raise PacketError(f"{path}.files", f"must be a list, got {type(files_obj).__name__}")
    files = [_file_from_obj(f, f"{path}.files[{i}]") for i, f in enumerate(files_obj)]
    return AIOSPacket(
        session_id=values["session_id"],
        seq_no=seq,
        data=values["data"],
        files=files,
        frame_ptr=values["frame_ptr"],
        output_ptr=values["output_ptr"],
        ts=float(ts),
    )


def _file_from_obj(obj: Any, path: str) -> AIOSFile:
    if not isinstance(obj, dict):
        raise PacketError(path, f"must be a map, got {type(obj).__name__}")
    metadata = obj.get("metadata", "")
    if metadata is None:
        metadata = ""
    if not isinstance(metadata, str):
        raise PacketError(f"{path}.metadata", f"must be a string, got {type(metadata).__name__}")
    data = obj.get("file_data", b"")
    if data is None:
        data = b""
    if not isinstance(data, (bytes, bytearray)):
        raise PacketError(f"{path}.file_data", f"must be bytes (msgpack bin), got {type(data).__name__}")
    return AIOSFile(metadata=metadata, file_data=bytes(data))


def packet_to_obj(p: AIOSPacket) -> dict[str, Any]:
    """The msgpack map of a packet (file bytes stay bytes: msgpack bin, no base64)."""
    return {
        "session_id": p.session_id,
        "seq_no": p.seq_no,
        "data": p.data,
        "files": [{"metadata": f.metadata, "file_data": f.file_data} for f in p.files],
        "frame_ptr": p.frame_ptr,
        "output_ptr": p.output_ptr,
        "ts": p.ts,
    }


def encode_packet(p: AIOSPacket) -> bytes:
    """A task request body."""
    return msgpack.packb(packet_to_obj(p), use_bin_type=True)  # type: ignore[no-any-return]  # untyped lib


def decode_packet(body: bytes) -> AIOSPacket:
    """Decode a task request body.

    Raises:
        PacketError: the body is not msgpack, or a field has the wrong type.
    """
    try:
        obj = msgpack.unpackb(body, raw=False)
    except Exception as e:  # noqa: BLE001  # msgpack raises several unrelated types (ExtraData, ValueError, UnicodeError...)
        raise PacketError("body", f"not a msgpack map ({type(e).__name__})") from None
    return packet_from_obj(obj)


def encode_reply(packets: list[AIOSPacket]) -> bytes:
    """A 200 task reply."""
    obj = {"ok": True, "packets": [packet_to_obj(p) for p in packets]}
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return,unused-ignore]  # untyped lib


def encode_error(error: dict[str, str]) -> bytes:
    """A 4xx/5xx task reply."""
    return msgpack.packb({"ok": False, "error": error}, use_bin_type=True)  # type: ignore[no-any-return]


def decode_reply(body: bytes) -> tuple[list[AIOSPacket], dict[str, Any] | None]:
    """Decode a task reply: (packets, None) on success, ([], error) on failure (client side helper).

    Raises:
        PacketError: the reply is not a well-formed reply map.
    """
    try:
        obj = msgpack.unpackb(body, raw=False)
    except Exception as e:  # noqa: BLE001  # see decode_packet
        raise PacketError("reply", f"not msgpack ({type(e).__name__})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("ok"), bool):
        raise PacketError("reply.ok", "missing or not a bool")
    if not obj["ok"]:
        err = obj.get("error")
        if not isinstance(err, dict):
            raise PacketError("reply.error", "must be a map")
        return [], err
    packets = obj.get("packets")
    if not isinstance(packets, list):
        raise PacketError("reply.packets", "must be a list")
    return [packet_from_obj(p, f"reply.packets[{i}]") for i, p in enumerate(packets)], None
