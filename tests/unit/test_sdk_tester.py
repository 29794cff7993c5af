"""BlockTester (and the TaskRunner behind the endpoint): callbacks run locally with AIOS semantics."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from sdk import (
    AIOSFile,
    AIOSPacket,
    Block,
    BlockTester,
    CallbackFailed,
    Muxer,
    OnDataResult,
    PacketError,
    PreProcessResult,
)

ROOT = Path(__file__).resolve().parents[2]


def load(example: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{example}", ROOT / "examples" / example / "block.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_echo_example_answers_with_file_sizes_and_hashes() -> None:
    t = BlockTester(load("echo").EchoBlock, block_init_data={"greeting": "yo"}, block_init_parameters={"prefix": "!"})
    files = [b"abc", b"", bytes(range(256)) * 10]
    (out,) = t.run_packet(t.packet({"q": 1}, files=files, session_id="s9", seq_no=4))
    assert (out.session_id, out.seq_no) == ("s9", 4)
    body = json.loads(out.data)
    assert body["data"] == {"q": 1} and body["greeting"] == "yo" and body["prefix"] == "!"
    assert [(f["size"], f["sha256"]) for f in body["files"]] == [(len(b), hashlib.sha256(b).hexdigest()) for b in files]
    assert t.context.metrics.value("echo_file_bytes") == sum(map(len, files))
    assert t.context.metrics.value("on_data_count") == 1


def test_echo_example_failures_name_stage_and_type() -> None:
    t = BlockTester(load("echo").EchoBlock, block_id="echo-7")
    with pytest.raises(CallbackFailed) as e:
        t.run_packet(t.packet({"raise": "bad"}))
    assert (e.value.stage, e.value.type, e.value.message, e.value.block_id) == ("on_data", "RuntimeError", "bad",
                                                                                 "echo-7")
    ok, failure = t.process(t.packet("{nope"))
    assert not ok and isinstance(failure, CallbackFailed)
    assert (failure.stage, failure.type) == ("on_preprocess", "PreprocessFailed")
    assert t.outputs(t.packet([1]))[0]["data"] == [1]  # and it keeps working


def test_aios_compat_example_joins_two_inputs_and_updates_live() -> None:
    t = BlockTester(load("aios_compat").SumJoinBlock, block_init_parameters={"scale": 10})
    assert isinstance(t.runner.muxer, Muxer) and t.runner.muxer.n_inputs == 2
    assert t.run_packet(t.packet({"source": "a", "value": 1}, seq_no=1)) == []
    assert t.outputs(t.packet({"source": "b", "value": 2}, seq_no=1)) == [{"sum": 30.0, "sources": ["a", "b"],
                                                                          "seq_no": 1}]
    assert t.update({"scale": 1}) == {"scale": 1}
    with pytest.raises(CallbackFailed) as e:
        t.update({"scale": "x"})
    assert e.value.type == "UpdateFailed" and e.value.stage == "on_update"
    assert t.management("get_stats") == {"status": "success", "joined": 1, "scale": 1.0}
    assert t.health() == (True, {"status": "healthy", "joined": 1})
    t.run_packet(t.packet({"source": "a"}, seq_no=2))
    with pytest.raises(CallbackFailed, match="numeric 'value'"):
        t.run_packet(t.packet({"source": "b"}, seq_no=2))


class Shapes:
    """A block whose results come from its init data, to drive every result shape through the runner."""

    def __init__(self, context: Any) -> None:
        self.mode = context.block_init_data["mode"]

    def on_preprocess(self, packet: AIOSPacket) -> Any:
        if self.mode == "fanout":
            return True, [PreProcessResult(packet=packet, extra_data=i) for i in range(3)]
        if self.mode == "single":
            return True, PreProcessResult(packet=packet, extra_data=0)
        if self.mode == "pre_not_tuple":
            return [PreProcessResult(packet=packet)]
        if self.mode == "pre_not_list":
            return True, {"x": 1}
        if self.mode == "pre_false":
            return False, ValueError("nope")
        return True, [PreProcessResult(packet=packet, extra_data=self.mode)]

    def on_data(self, entry: PreProcessResult) -> Any:
        mode = self.mode
        if mode in ("fanout", "single"):
            return True, OnDataResult(output={"i": entry.extra_data})
        if mode == "hold":
            return True, None
        if mode == "many":
            return True, [OnDataResult(output=1), OnDataResult(output=2, files=[AIOSFile("m", b"z")])]
        if mode == "dict":
            return True, {"output": 1}
        if mode == "unjsonable":
            return True, OnDataResult(output={1, 2})
        if mode == "false":
            return False, "model not loaded"
        if mode == "bad_files":
            return True, OnDataResult(output=1, files=[b"raw"])  # type: ignore[list-item]  # deliberately wrong
        raise AssertionError(mode)

    def health(self) -> Any:
        if self.mode == "hold":
            return None
        if self.mode == "false":
            raise OSError("gpu gone")
        return {"ok": 1}


def make_tester(mode: str) -> BlockTester:
    return BlockTester(Shapes, block_init_data={"mode": mode}, block_id="shapes")


def test_fanout_preprocess_gives_one_output_per_item() -> None:
    assert make_tester("fanout").outputs(AIOSPacket(seq_no=3)) == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert make_tester("single").outputs(AIOSPacket()) == [{"i": 0}]


def test_hold_back_and_multiple_results() -> None:
    t = make_tester("hold")
    assert t.run_packet(AIOSPacket()) == []
    assert t.context.metrics.value("end_to_end_count") == 1
    out = make_tester("many").run_packet(AIOSPacket(session_id="s", seq_no=2, output_ptr="o"))
    assert [(p.data, p.session_id, p.seq_no, p.output_ptr) for p in out] == [("1", "s", 2, "o"), ("2", "s", 2, "o")]
    assert out[1].files == [AIOSFile("m", b"z")]


@pytest.mark.parametrize(("mode", "stage", "type_", "words"), [
    ("pre_not_tuple", "on_preprocess", "BadCallbackResult", "(ok: bool, value)"),
    ("pre_not_list", "on_preprocess", "BadCallbackResult", "[PreProcessResult"),
    ("pre_false", "on_preprocess", "PreprocessFailed", "nope"),
    ("dict", "on_data", "BadCallbackResult", "OnDataResult(output=...)"),
    ("unjsonable", "on_data", "BadCallbackResult", "JSON"),
    ("false", "on_data", "OnDataFailed", "model not loaded"),
    ("bad_files", "on_data", "BadCallbackResult", "AIOSFile"),
])
def test_wrong_results_fail_with_a_named_stage_and_type(mode: str, stage: str, type_: str, words: str) -> None:
    t = make_tester(mode)
    with pytest.raises(CallbackFailed) as e:
        t.run_packet(AIOSPacket())
    assert (e.value.stage, e.value.type, e.value.block_id) == (stage, type_, "shapes")
    assert words in e.value.message
    assert t.context.metrics.value("callback_errors", {"stage": stage}) == 1
    assert e.value.to_dict() == {"type": type_, "message": e.value.message, "block_id": "shapes", "stage": stage}


def test_health_is_false_when_it_returns_falsy_or_raises() -> None:
    assert make_tester("fanout").health() == (True, {"ok": 1})
    assert make_tester("hold").health() == (False, None)
    assert make_tester("false").health() == (False, {"type": "OSError", "message": "gpu gone"})


def test_missing_optional_callbacks_have_defaults() -> None:
    class Minimal:
        def __init__(self, context: Any) -> None:
            pass

        def on_data(self, entry: PreProcessResult) -> Any:
            return True, OnDataResult(output=entry.packet.data)

    t = BlockTester(Minimal)
    assert t.outputs(t.packet("x")) == ["x"]
    assert t.health() == (True, {"status": "healthy"})
    assert t.update({"a": 1}) == {"a": 1}
    with pytest.raises(CallbackFailed) as e:
        t.management("x")
    assert e.value.type == "NotImplemented"


def test_get_muxer_must_return_a_muxer() -> None:
    class BadMux(Shapes):
        def get_muxer(self) -> Any:
            return 2

    with pytest.raises(CallbackFailed, match="get_muxer must return a Muxer"):
        BlockTester(BadMux, block_init_data={"mode": "x"})


def test_block_refuses_what_is_not_a_block_class() -> None:
    with pytest.raises(TypeError, match="block class itself"):
        Block("x")  # type: ignore[arg-type]  # deliberately wrong
    with pytest.raises(TypeError, match="no on_data"):
        Block(int)


def test_aios_shaped_test_file_passes_unchanged_but_for_the_import() -> None:
    """examples/aios_compat/test_block.py is an AIOS block test; pytest runs it as it is."""
    path = ROOT / "examples" / "aios_compat" / "test_block.py"
    text = path.read_text()
    assert "from sdk import BlockTester" in text and "aios_instance import" not in text.split('"""', 2)[2]
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "4 passed" in r.stdout


def test_aios_run_takes_data_and_builds_the_packet() -> None:
    t = BlockTester(load("echo").EchoBlock, block_id="echo-1")
    (out,) = t.run({"q": 1}, files=[({"n": 1}, b"abc")])
    assert out["data"] == {"q": 1}
    assert out["files"] == [{"metadata": '{"n": 1}', "size": 3, "sha256": hashlib.sha256(b"abc").hexdigest()}]
    assert t.context.block_data == {"block_id": "echo-1"}  # AIOS's TestContext carries the block id here
    p = t.create_packet("hi")
    assert p.data == '"hi"' and p.seq_no == 0 and p.session_id.startswith("test-session-") and p.ts > 0
    assert t.create_packet(None, session_id="s", seq_no=3).session_id == "s"


def test_aios_run_skips_the_muxer_like_aios() -> None:
    t = BlockTester(load("aios_compat").SumJoinBlock)
    assert t.run({"inputs": [{"value": 1}, {"value": 2}]}) == [{"sum": 3.0, "sources": ["", ""], "seq_no": 0}]
    assert t.run_packet(t.packet({"source": "a", "value": 1})) == []  # the packet form goes through Muxer(2)


def test_aios_create_packet_names_bad_input() -> None:
    t = BlockTester(load("aios_compat").SumJoinBlock)
    with pytest.raises(PacketError, match="^data: is not JSON"):
        t.run({"x": object()})
    with pytest.raises(PacketError, match=r"^files\[1\]: must be a \(metadata, file_data"):
        t.create_packet({}, files=[({}, b""), b"raw"])
    with pytest.raises(PacketError, match=r"^files\[0\].metadata"):
        t.create_packet({}, files=[({1j}, b"")])


def test_init_with_context_takes_any_context_object() -> None:
    class Ctx:
        def __init__(self) -> None:
            self.block_init_parameters = {"scale": 3}

    t = BlockTester.init_with_context(load("aios_compat").SumJoinBlock, Ctx())
    assert isinstance(t.context, Ctx) and t.runner.block_id == "test-block"
    assert t.run({"inputs": [{"value": 1}]}) == [{"sum": 3.0, "sources": [""], "seq_no": 0}]
