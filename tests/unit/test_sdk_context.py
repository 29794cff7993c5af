"""The instance environment: context JSON and AIOSD_INSTANCE_* parsing, with errors that name the field."""

from __future__ import annotations

import json

import pytest

from sdk import ConfigError, InstanceConfig, SessionsManager
from sdk.context import context_from_json


def test_full_context_reaches_every_attribute() -> None:
    ctx = context_from_json(json.dumps({
        "block_id": "b", "instance_id": "b-0", "node_id": "n", "cluster_id": "c",
        "block_data": {"k": 1}, "block_init_data": {"max_threads": 2}, "block_init_settings": {"s": 1},
        "block_init_parameters": {"p": 1},
        "allocation_info": {"gpus": [0, "GPU-1234"], "node_id": "n", "cluster_id": "c"},
    }))
    assert (ctx.block_id, ctx.instance_id, ctx.node_id, ctx.cluster_id) == ("b", "b-0", "n", "c")
    assert ctx.block_data == {"k": 1} and ctx.block_init_settings == {"s": 1} and ctx.block_init_parameters == {"p": 1}
    assert ctx.allocation_info.gpus == [0, "GPU-1234"]
    assert ctx.allocation_info["gpus"] == [0, "GPU-1234"] and ctx.allocation_info.get("node_id") == "n"
    assert ctx.allocation_info.get("nope", 5) == 5
    assert 'block_id="b",instance_id="b-0"' in ctx.metrics.render()


def test_missing_keys_default_to_empty() -> None:
    for text in (None, "", "{}"):
        ctx = context_from_json(text)
        assert ctx.block_id == "" and ctx.block_init_data == {} and ctx.allocation_info.gpus == []
    ctx = context_from_json('{"node_id": "n", "allocation_info": {}}')
    assert ctx.allocation_info.node_id == "n"  # falls back to the top-level id


@pytest.mark.parametrize(("text", "field"), [
    ("[1]", "AIOSD_INSTANCE_CONTEXT: must be a JSON object"),
    ("{oops", "AIOSD_INSTANCE_CONTEXT: not valid JSON"),
    ('{"block_id": 1}', "AIOSD_INSTANCE_CONTEXT.block_id"),
    ('{"block_init_data": [1]}', "AIOSD_INSTANCE_CONTEXT.block_init_data"),
    ('{"allocation_info": 3}', "AIOSD_INSTANCE_CONTEXT.allocation_info"),
    ('{"allocation_info": {"gpus": "all"}}', "AIOSD_INSTANCE_CONTEXT.allocation_info.gpus"),
    ('{"allocation_info": {"gpus": [true]}}', "AIOSD_INSTANCE_CONTEXT.allocation_info.gpus"),
    ('{"allocation_info": {"node_id": 5}}', "AIOSD_INSTANCE_CONTEXT.allocation_info.node_id"),
])
def test_bad_context_names_the_field(text: str, field: str) -> None:
    with pytest.raises(ConfigError) as e:
        context_from_json(text)
    assert str(e.value).startswith(field)


def test_env_defaults_and_init_data_defaults() -> None:
    c = InstanceConfig.from_env({"AIOSD_INSTANCE_SOCKET": "/tmp/x.sock"})
    assert (c.socket_path, c.port, c.workers, c.queue_max) == ("/tmp/x.sock", None, 4, 64)
    ctx = json.dumps({"block_init_data": {"max_threads": 3, "max_queue_size": 5}})
    c = InstanceConfig.from_env({"AIOSD_INSTANCE_PORT": "0", "AIOSD_INSTANCE_CONTEXT": ctx})
    assert (c.socket_path, c.port, c.workers, c.queue_max) == (None, 0, 3, 5)
    c = InstanceConfig.from_env({"AIOSD_INSTANCE_PORT": "8080", "AIOSD_INSTANCE_CONTEXT": ctx,
                                 "AIOSD_INSTANCE_WORKERS": "8", "AIOSD_INSTANCE_QUEUE": "0"})
    assert (c.port, c.workers, c.queue_max) == (8080, 8, 0)


@pytest.mark.parametrize(("env", "words"), [
    ({}, "neither AIOSD_INSTANCE_SOCKET nor AIOSD_INSTANCE_PORT"),
    ({"AIOSD_INSTANCE_PORT": "http"}, "AIOSD_INSTANCE_PORT: must be an integer"),
    ({"AIOSD_INSTANCE_PORT": "70000"}, "AIOSD_INSTANCE_PORT: must be an integer in 0..65535"),
    ({"AIOSD_INSTANCE_SOCKET": "/" + "x" * 200}, "AIOSD_INSTANCE_SOCKET: path longer"),
    ({"AIOSD_INSTANCE_SOCKET": "/s", "AIOSD_INSTANCE_WORKERS": "0"}, "AIOSD_INSTANCE_WORKERS"),
    ({"AIOSD_INSTANCE_SOCKET": "/s", "AIOSD_INSTANCE_WORKERS": "100000"}, "AIOSD_INSTANCE_WORKERS"),
    ({"AIOSD_INSTANCE_SOCKET": "/s", "AIOSD_INSTANCE_QUEUE": "-1"}, "AIOSD_INSTANCE_QUEUE"),
    ({"AIOSD_INSTANCE_SOCKET": "/s", "AIOSD_INSTANCE_CONTEXT": '{"block_init_data": {"max_threads": "4"}}'},
     "block_init_data.max_threads"),
])
def test_bad_env_names_the_variable(env: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
        InstanceConfig.from_env(env)


def test_sessions_are_lru_capped() -> None:
    s = SessionsManager(max_sessions=2)
    s.get("a")["n"] = 1
    s.get("b")
    assert s.get("a") == {"n": 1}  # touching a makes b the oldest
    s.get("c")
    assert "b" not in s and "a" in s and len(s) == 2 and s.evicted == 1
    s.remove("a")
    s.remove("zzz")
    assert len(s) == 1
