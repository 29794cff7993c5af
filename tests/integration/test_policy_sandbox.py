"""The policy sandbox with real worker processes, real LMDB and real blobs: hostile policies are
contained and reported, a requirement installs offline from a wheel the test builds, stateful
policies keep state and answer management commands."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aiosd.policies.archive import pack_files
from aiosd.policies.errors import (
    PolicyConfigError,
    PolicyCrashed,
    PolicyFailed,
    PolicyInputError,
    PolicyLoadError,
    PolicyNotFound,
    PolicyOutputError,
    PolicyTimeout,
)
from aiosd.policies.sandbox import SandboxConfig, SandboxedPolicy
from aiosd.policies.service import PoliciesService, sandbox_root
from federation.identity import NodeKey
from storage import Store
from tests.waiting import eventually

HOSTILE = '''
import os, time
class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        self.n = 0
    def eval(self, parameters, input_data, context):
        self.n += 1
        mode = input_data.get("mode")
        if mode == "loop":
            while True:
                pass
        if mode == "exit":
            os._exit(7)
        if mode == "alloc":
            return {"len": len(bytearray(10 * 2**30))}
        if mode == "read":
            with open(input_data["path"], "rb") as f:
                return {"leak": f.read().hex()}
        if mode == "nondict":
            return ["not", "a", "dict"]
        if mode == "notjson":
            return {"x": object()}
        if mode == "print":
            print("chatty policy output that must not reach the protocol stream")
            os.write(1, b"raw bytes on fd 1 too")
            return {"printed": True}
        if mode == "env":
            return {"env": sorted(os.environ), "cwd": os.getcwd(), "uid": os.getuid()}
        return {"n": self.n, "p": parameters}
    def management(self, action, data):
        return {"n": self.n, "action": action, "data": data}
'''


def _archive(function: str, extra: dict[str, bytes] | None = None) -> bytes:
    return pack_files({"code/function.py": function.encode(), **(extra or {})})


@pytest.fixture
async def svc(tmp_path: Path) -> AsyncIterator[PoliciesService]:
    data = tmp_path / "node"
    data.mkdir(mode=0o700)
    store = Store.open(data / "db")
    base = SandboxConfig.default(sandbox_root(data))
    cfg = SandboxConfig(root=base.root, python=base.python, run_as_uid=base.run_as_uid,
                        run_as_gid=base.run_as_gid, call_timeout_s=1.0, memory_limit_mb=512)
    try:
        async with PoliciesService(data, store, NodeKey.generate(), cfg) as s:
            yield s
    finally:
        store.close()
        shutil.rmtree(cfg.root, ignore_errors=True)


async def test_hostile_policies_are_contained_and_the_next_call_works(svc: PoliciesService, tmp_path: Path) -> None:
    await svc.publish("test.hostile:v1-a", _archive(HOSTILE))
    h = await svc.runner.load("test.hostile:v1-a")
    assert (await h.eval({}))["n"] == 1
    with pytest.raises(PolicyTimeout, match="no answer within 1 s"):
        await h.eval({"mode": "loop"})
    assert (await h.eval({}))["n"] == 1  # a fresh worker (state lost), still serving
    with pytest.raises(PolicyCrashed, match="exit code 7"):
        await h.eval({"mode": "exit"})
    assert (await h.eval({}))["n"] == 1
    with pytest.raises(PolicyFailed, match="MemoryError"):
        await h.eval({"mode": "alloc"})
    with pytest.raises(PolicyOutputError, match="expected a JSON object"):
        await h.eval({"mode": "nondict"})
    with pytest.raises(PolicyOutputError, match="not JSON"):
        await h.eval({"mode": "notjson"})
    assert await h.eval({"mode": "print"}) == {"printed": True}  # prints go to stderr, not the pipe
    assert (await h.eval({}))["n"] == 6  # failures inside the worker keep it (and its state)


@pytest.mark.skipif(os.geteuid() != 0, reason="hiding the node key needs a root daemon (workers run as nobody)")
async def test_policy_cannot_read_the_node_key_or_inherit_secrets(svc: PoliciesService, tmp_path: Path) -> None:
    key = tmp_path / "node" / "identity" / "node.key"
    key.parent.mkdir(mode=0o700)
    key.write_bytes(b"secret-seed")
    os.chmod(key, 0o600)
    os.environ["AIOSD_TEST_SECRET"] = "token"
    try:
        await svc.publish("test.hostile:v1-a", _archive(HOSTILE))
        h = await svc.runner.load("test.hostile:v1-a")
        with pytest.raises(PolicyFailed, match="PermissionError"):
            await h.eval({"mode": "read", "path": str(key)})
        env = await h.eval({"mode": "env"})
    finally:
        del os.environ["AIOSD_TEST_SECRET"]
    assert not [k for k in env["env"] if k.startswith("AIOSD")]
    assert env["uid"] != 0 and not env["cwd"].startswith(str(tmp_path))


async def test_import_error_and_missing_class_fail_at_load(svc: PoliciesService) -> None:
    await svc.publish("test.broken:v1-a", _archive("import no_such_module_here\n"))
    with pytest.raises(PolicyLoadError, match="ModuleNotFoundError.*no_such_module_here"):
        await svc.runner.load("test.broken:v1-a")
    await svc.publish("test.noclass:v1-a", _archive("x = 1\n"))
    with pytest.raises(PolicyLoadError, match="no class AIOSv1PolicyRule"):
        await svc.runner.load("test.noclass:v1-a")
    with pytest.raises(PolicyNotFound, match="registered:.*test.broken:v1-a"):
        await svc.runner.load("test.nothing:v1")


async def test_stateful_policy_keeps_state_and_management_reaches_it(svc: PoliciesService) -> None:
    await svc.publish("test.state:v1-a", _archive(HOSTILE))
    h = await svc.runner.load("test.state:v1-a", parameters={"k": 1})
    for _ in range(3):
        await h.eval({})
    again = await svc.runner.load("test.state:v1-a", parameters={"k": 1})
    assert again is h  # the same configuration reaches the same sticky worker
    assert await again.management("stats", {"x": 1}) == {"n": 3, "action": "stats", "data": {"x": 1}}
    other = await svc.runner.load("test.state:v1-a", parameters={"k": 2})
    assert (await other.eval({}))["n"] == 1


async def test_schemas_and_overrides(svc: PoliciesService) -> None:
    manifest = (b'{"input_schema": {"x": {"type": "number", "required": true}},'
                b' "output_schema": {"n": {"type": "integer", "required": true}},'
                b' "parameters_schema": {"k": {"type": "integer", "min": 0}}, "parameters": {"k": 1, "j": 5}}')
    await svc.publish("test.schema:v1-a", _archive(HOSTILE, {"policy.json": manifest}))
    h = await svc.runner.load("test.schema:v1-a", parameters={"k": 3})
    out = await h.eval({"x": 1}, parameters={"j": 6})
    assert out["p"] == {"k": 3, "j": 6}  # stored < load-time caller < per-call
    with pytest.raises(PolicyInputError, match="input.x"):
        await h.eval({})
    with pytest.raises(PolicyOutputError, match="result.n: is required"):
        await h.eval({"x": 1, "mode": "env"})
    with pytest.raises(PolicyConfigError, match="parameters.k"):
        await svc.runner.load("test.schema:v1-a", parameters={"k": -1})


def _wheel(name: str, version: str, module_src: str) -> tuple[str, bytes]:
    """A minimal pure-Python wheel built by hand (no network, no build backend)."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": module_src.encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return f"{name}-{version}-py3-none-any.whl", buf.getvalue()


async def test_requirement_installs_offline_into_a_venv_keyed_by_the_archive(svc: PoliciesService) -> None:
    wheel_name, wheel = _wheel("tinyscore", "0.1.0", "__version__ = '0.1.0'\n"
                               "def score(values):\n    return sum(values) / max(1, len(values))\n")
    src = (Path(__file__).resolve().parents[2] / "examples" / "policies" / "with-requirement" / "code"
           / "function.py").read_text()
    archive = _archive(src, {"code/requirements.txt": b"tinyscore==0.1.0\n", f"code/wheels/{wheel_name}": wheel})
    rec = await svc.publish("test.req:v1-a", archive)
    assert rec.has_requirements
    h = await svc.runner.load("test.req:v1-a")
    assert await h.eval({"values": [1, 2, 3]}) == {"score": 2.0, "version": "0.1.0"}
    venv = svc.cfg.root / "venvs" / rec.archive_sha256
    assert (venv / ".ready").exists()
    # A missing wheel is a clear install error naming the requirement, not a hang or a crash.
    bad = _archive(src, {"code/requirements.txt": b"tinyscore==9.9\n", f"code/wheels/{wheel_name}": wheel})
    await svc.publish("test.req:v2-a", bad)
    with pytest.raises(PolicyLoadError, match="(?s)pip install failed.*tinyscore==9.9"):
        await svc.runner.load("test.req:v2-a")


async def test_tampered_blob_is_refused(svc: PoliciesService) -> None:
    rec = await svc.publish("test.tamper:v1-a", _archive(HOSTILE))
    path = svc.blobs.path(rec.archive_sha256)
    os.chmod(path, 0o600)
    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(Exception, match="corrupt"):
        await svc.runner.load("test.tamper:v1-a")


async def test_workers_are_bounded_and_records_survive_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "node"
    data.mkdir(mode=0o700)
    base = SandboxConfig.default(sandbox_root(data))
    cfg = SandboxConfig(root=base.root, python=base.python, run_as_uid=base.run_as_uid,
                        run_as_gid=base.run_as_gid, max_workers=2)
    key = NodeKey.generate()
    try:
        with Store.open(data / "db") as store:
            async with PoliciesService(data, store, key, cfg) as s:
                await s.publish("test.lru:v1-a", _archive(HOSTILE))
                handles = [await s.runner.load("test.lru:v1-a", parameters={"i": i}) for i in range(4)]
                assert len(s.sandbox.instances()) == 2
                assert (await handles[0].eval({}))["p"] == {"i": 0}  # an evicted instance restarts on use
        with Store.open(data / "db") as store:
            async with PoliciesService(data, store, key, cfg) as s:
                rec = s.policies.get("test.lru:v1-a")
                assert rec is not None and s.blobs.has(rec.archive_sha256)
                assert (await s.runner.run("test.lru:v1-a", {}))["n"] == 1
        assert not (cfg.root / "scratch").exists()  # worker scratch dirs go with the sandbox
    finally:
        shutil.rmtree(cfg.root, ignore_errors=True)


async def test_publish_refuses_builtin_uris_and_bad_archives_without_storing(svc: PoliciesService) -> None:
    from aiosd.policies.errors import PolicyArchiveError

    with pytest.raises(PolicyArchiveError, match="built-in policy"):
        await svc.publish("policy.loadBalancer.round-robin:v1", _archive(HOSTILE))
    with pytest.raises(PolicyArchiveError, match="has no code/function.py"):
        await svc.publish("test.empty:v1-a", pack_files({"README": b"x"}))
    with pytest.raises(PolicyArchiveError, match="policy.json.colour"):
        await svc.publish("test.man:v1-a", pack_files({"code/function.py": b"", "policy.json": b'{"colour": 1}'}))
    assert svc.policies.all() == [] and list(svc.blobs.digests()) == []


async def test_a_cancelled_call_does_not_leak_its_answer_into_the_next(svc: PoliciesService) -> None:
    import asyncio

    await svc.publish("test.cancel:v1-a", _archive(HOSTILE))
    h = await svc.runner.load("test.cancel:v1-a")
    assert isinstance(h, SandboxedPolicy)
    task = asyncio.ensure_future(h.eval({"mode": "loop"}))
    await eventually(lambda: h.calls == 1, timeout_s=5)  # the request is with the worker
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await h.eval({}))["n"] == 1  # a fresh worker answered this call, not the old one


async def test_a_block_spec_names_the_custom_load_balancer_and_it_runs(svc: PoliciesService) -> None:
    from aiosd.policies.archive import pack_dir
    from aiosd.specs.errors import SpecError
    from aiosd.specs.resolve import resolve_block
    from tests.unit.test_specs_protocol import _block, _component, _pair

    lb = "policy.loadBalancer.least-busy:v1-stable"
    await svc.publish(lb, pack_dir(Path(__file__).resolve().parents[2] / "examples" / "policies" / "least-busy"))
    rules = [{"values": {"name": "loadBalancer", "policyRuleURI": lb, "parameters": {"penalty": 2}}}]
    b, c = _pair(_component(), _block(policyRulesSpec=rules))
    slot = resolve_block(b, c, catalog=svc.catalog).policies["loadBalancer"]
    assert slot.uri == lb and slot.parameters == {"penalty": 2}
    h = await svc.runner.load(slot.uri, parameters=slot.parameters, settings=slot.settings, rule_id="b1/lb")
    out = await h.eval({"instances": [{"instance_id": "b1-0", "outstanding": 1, "errors": 1},
                                      {"instance_id": "b1-1", "outstanding": 2}]})
    assert out == {"instance_id": "b1-1"}  # 1 + 2*1 errors > 2
    bad = [{"values": {"name": "loadBalancer", "policyRuleURI": lb, "parameters": {"penalty": -1}}}]
    b, c = _pair(_component(), _block(policyRulesSpec=bad))
    with pytest.raises(SpecError, match="parameters.penalty: must be >= 0"):
        resolve_block(b, c, catalog=svc.catalog)
