"""Settings: file → environment → flags, with errors that name the key and its source."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiosd.config import load_settings, render_toml
from aiosd.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "aiosd.toml"
    p.write_text(text)
    return p


def test_defaults_without_file_or_env() -> None:
    s = load_settings(env={})
    assert s.discovery.mdns is False  # never multicast unless asked
    assert s.p2p.port == 7701
    assert s.node.cluster == "default"


def test_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    cfg = write(tmp_path, '[api]\ntcp_port = 1000\n[node]\ncluster = "from-file"\n[p2p]\nport = 1\n')
    s = load_settings(cfg, env={"AIOSD_API_TCP_PORT": "2000", "AIOSD_P2P_PORT": "2"},
                      flags={"p2p": {"port": 3}})
    assert (s.node.cluster, s.api.tcp_port, s.p2p.port) == ("from-file", 2000, 3)


def test_env_lists_and_shortcuts(tmp_path: Path) -> None:
    s = load_settings(env={"AIOSD_DISCOVERY_SEEDS": "a:1, b:2", "AIOSD_DATA_DIR": str(tmp_path)})
    assert s.discovery.seeds == ["a:1", "b:2"]
    assert s.data_dir == tmp_path


def test_unknown_key_in_file_names_key_and_file(tmp_path: Path) -> None:
    cfg = write(tmp_path, "[api]\ntcp_prot = 1\n")
    with pytest.raises(ConfigError, match=rf"unknown key api.tcp_prot in {cfg}"):
        load_settings(cfg, env={})


def test_unknown_section_in_file(tmp_path: Path) -> None:
    cfg = write(tmp_path, "[nodes]\nx = 1\n")
    with pytest.raises(ConfigError, match="unknown key 'nodes'"):
        load_settings(cfg, env={})


def test_bad_value_names_key_and_file(tmp_path: Path) -> None:
    cfg = write(tmp_path, '[node]\ncluster = "Bad Name"\n')
    with pytest.raises(ConfigError, match=rf"bad value for node.cluster in {cfg}"):
        load_settings(cfg, env={})


def test_bad_env_value_names_the_environment() -> None:
    with pytest.raises(ConfigError, match="api.tcp_port in the environment"):
        load_settings(env={"AIOSD_API_TCP_PORT": "http"})


def test_unknown_env_setting_is_an_error() -> None:
    with pytest.raises(ConfigError, match="unknown setting AIOSD_API_PROT"):
        load_settings(env={"AIOSD_API_PROT": "1"})


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[api\n"), env={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", env={})


def test_render_round_trips(tmp_path: Path) -> None:
    s = load_settings(env={"AIOSD_DISCOVERY_SEEDS": "h:1"})
    again = load_settings(write(tmp_path, render_toml(s)), env={})
    assert again == s
