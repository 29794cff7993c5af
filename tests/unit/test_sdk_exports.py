"""The sdk package: public surface pinned, each module imports alone, imports only stdlib/aiohttp/msgpack."""

from __future__ import annotations

import ast
import pathlib
import sys

import sdk
from tests.imports import assert_each_imports_alone

PKG_DIR = pathlib.Path(sdk.__file__).parent
MODULES = sorted(p.stem for p in PKG_DIR.glob("*.py") if p.stem != "__init__")
AIOS_NAMES = {"Block", "PreProcessResult", "OnDataResult", "Muxer", "Batcher", "TimeBasedBatcher", "BlockTester",
              "AIOSPacket", "AIOSMetrics"}
EXPECTED_ALL = AIOS_NAMES | {
    "AIOSFile", "AllocationInfo", "BlockContext", "Busy", "CallbackFailed", "ConfigError", "FileInfo",
    "InstanceConfig", "MetricError", "PacketError", "SdkError", "SessionsManager", "decode_packet", "decode_reply",
    "encode_packet",
}
# What a Debian bookworm block image has: the standard library, python3-aiohttp and python3-msgpack.
ALLOWED_THIRD_PARTY = {"aiohttp", "msgpack"}


def test_public_surface_is_pinned_and_has_the_aios_names() -> None:
    assert set(sdk.__all__) == EXPECTED_ALL
    assert all(hasattr(sdk, name) for name in sdk.__all__)


def test_every_module_imports_alone() -> None:
    assert_each_imports_alone([f"sdk.{m}" for m in MODULES])


def test_imports_only_the_standard_library_aiohttp_msgpack_and_itself() -> None:
    for path in PKG_DIR.rglob("*.py"):
        if path.parent.name == "llm":  # sdk.llm is the optional `llm` extra (torch); test_llm_exports.py
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module.split(".")[0]]
            else:
                continue
            for name in names:
                assert name in sys.stdlib_module_names or name in ALLOWED_THIRD_PARTY or name == "sdk", (
                    path.name, name)
