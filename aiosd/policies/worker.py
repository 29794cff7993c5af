"""The sandbox worker: a child process that loads ONE policy and answers eval/management calls.

Standalone on purpose: stdlib only, imports nothing of ours, because it runs under the policy's
own virtualenv interpreter (or a system Python) as an unprivileged user. The daemon copies this
file into the sandbox directory and runs `python -I -B worker.py LIMITS_JSON`.

Wire: frames on the pipes the daemon gave as stdin/stdout: 4-byte big-endian length + JSON.
Requests `{"op": "load"|"eval"|"mgmt"|"ping", ...}`; answers `{"ok": true, "result": ...}` or
`{"ok": false, "stage": "load"|"eval"|"output"|"protocol", "type": ..., "message": ...}`.
The policy's prints go to stderr (never into the protocol stream).
"""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import sys
import traceback
from typing import Any

_HDR = 4


def _apply_limits(limits: dict[str, Any]) -> None:
    mem = int(limits.get("memory_bytes", 0))
    if mem > 0:
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    nofile = int(limits.get("nofile", 0))
    if nofile > 0:
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        cap = nofile if hard == resource.RLIM_INFINITY else min(nofile, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (cap, cap))
    fsize = int(limits.get("fsize_bytes", 0))
    if fsize > 0:
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))


def _read_exact(fd: int, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def _send(fd: int, obj: dict[str, Any], max_bytes: int) -> None:
    try:
        body = json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        body = json.dumps({"ok": False, "stage": "output", "type": type(e).__name__,
                           "message": f"the result is not JSON-serialisable ({str(e)[:200]})"}).encode()
    if len(body) > max_bytes:
        body = json.dumps({"ok": False, "stage": "output", "type": "ResultTooLarge",
                           "message": f"the result is {len(body)} bytes; the limit is {max_bytes}"}).encode()
    data = len(body).to_bytes(_HDR, "big") + body
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _error(stage: str, exc: BaseException) -> dict[str, Any]:
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
    return {"ok": False, "stage": stage, "type": type(exc).__name__, "message": str(exc)[:500],
            "trace": "".join(tb)[-2000:]}


class _Host:
    def __init__(self) -> None:
        self.rule: Any = None

    def load(self, req: dict[str, Any]) -> dict[str, Any]:
        code_dir = req["code_dir"]
        path = os.path.join(code_dir, "function.py")
        sys.path.insert(0, code_dir)
        spec = importlib.util.spec_from_file_location("function", path)
        if spec is None or spec.loader is None:
            return {"ok": False, "stage": "load", "type": "ImportError", "message": f"cannot load {path}"}
        module = importlib.util.module_from_spec(spec)
        sys.modules["function"] = module
        spec.loader.exec_module(module)
        cls = getattr(module, "AIOSv1PolicyRule", None)
        if cls is None:
            return {"ok": False, "stage": "load", "type": "AttributeError",
                    "message": "function.py defines no class AIOSv1PolicyRule"}
        self.rule = cls(req.get("rule_id", ""), req.get("settings", {}), req.get("parameters", {}))
        if not callable(getattr(self.rule, "eval", None)):
            return {"ok": False, "stage": "load", "type": "AttributeError",
                    "message": "AIOSv1PolicyRule has no eval(parameters, input_data, context) method"}
        return {"ok": True, "result": {"management": callable(getattr(self.rule, "management", None))}}

    def eval(self, req: dict[str, Any]) -> dict[str, Any]:
        out = self.rule.eval(req.get("parameters", {}), req.get("input", {}), req.get("context"))
        return self._result(out)

    def mgmt(self, req: dict[str, Any]) -> dict[str, Any]:
        fn = getattr(self.rule, "management", None)
        if not callable(fn):
            return {"ok": False, "stage": "eval", "type": "AttributeError",
                    "message": "this policy has no management(action, data) method"}
        return self._result(fn(req.get("action", ""), req.get("data", {})))

    @staticmethod
    def _result(out: Any) -> dict[str, Any]:
        if not isinstance(out, dict):
            return {"ok": False, "stage": "output", "type": type(out).__name__,
                    "message": f"expected a JSON object (dict), got {type(out).__name__}"}
        return {"ok": True, "result": out}


def main() -> int:
    limits = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    _apply_limits(limits)
    max_bytes = int(limits.get("max_result_bytes", 8 << 20))
    inp, out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # print() inside a policy lands on stderr, never in the protocol stream
    host = _Host()
    while True:
        try:
            n = int.from_bytes(_read_exact(inp, _HDR), "big")
            req = json.loads(_read_exact(inp, n))
        except EOFError:
            return 0
        op = req.get("op")
        try:
            if op == "load":
                resp = host.load(req)
            elif op == "eval" and host.rule is not None:
                resp = host.eval(req)
            elif op == "mgmt" and host.rule is not None:
                resp = host.mgmt(req)
            elif op == "ping":
                resp = {"ok": True, "result": {}}
            else:
                resp = {"ok": False, "stage": "protocol", "type": "BadRequest", "message": f"bad op {op!r}"}
        except BaseException as e:  # the policy's failure is the answer, the worker lives on
            if isinstance(e, KeyboardInterrupt):
                raise
            resp = _error("load" if op == "load" else "eval", e)
        _send(out, resp, max_bytes)


if __name__ == "__main__":
    sys.exit(main())
