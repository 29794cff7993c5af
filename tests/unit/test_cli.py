"""The CLI's own parts with no daemon: global options, the command table, lazy loading, record names,
settings resolution without the settings models, completion scripts."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aiosd.cli import tables
from aiosd.cli.common import Env, json_arg, split_globals
from aiosd.cli.main import BY_NAME, COMMANDS, GROUPS, build_parser, overview
from aiosd.errors import UsageError, describe_type

ROOT = Path(__file__).resolve().parents[2]


def run_py(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT,
                       check=False)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.parametrize("argv", [
    ["--socket", "S", "token", "create", "--json"],
    ["token", "create", "--socket", "S", "--json"],
    ["token", "--json", "create", "--socket=S"],
    ["--json", "--socket=S", "token", "create"],
])
def test_global_options_anywhere(argv: list[str]) -> None:
    rest, found = split_globals(argv)
    assert rest == ["token", "create"] and found == {"socket": "S", "json": True}


def test_global_options_stop_at_double_dash_and_check_values() -> None:
    rest, found = split_globals(["logs", "x", "--", "--json"])
    assert rest == ["logs", "x", "--", "--json"] and found == {}
    with pytest.raises(UsageError, match="--socket needs a value"):
        split_globals(["status", "--socket"])
    with pytest.raises(UsageError, match="--log-level: 'loud' is not one of"):
        split_globals(["run", "--log-level", "loud"])
    # only exact names: --data (infer) is not --data-dir
    assert split_globals(["infer", "b", "--data", "1"]) == (["infer", "b", "--data", "1"], {})


def test_command_table_matches_the_parsers() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(BY_NAME)
    helps = {a.dest: a.help for a in sub._choices_actions}
    for c in COMMANDS:
        assert helps[c.name] == c.summary, c.name
        assert c.group in GROUPS
    text = overview()
    assert all(f"{g}:" in text for g in GROUPS) and all(c.name in text for c in COMMANDS)


def test_every_leaf_has_an_example_and_the_global_options() -> None:
    def leaves(p: argparse.ArgumentParser, path: str) -> list[tuple[str, argparse.ArgumentParser]]:
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            return [(path, p)]
        return [x for name, child in subs[0].choices.items() for x in leaves(child, f"{path} {name}")]

    for path, p in leaves(build_parser(), "aiosd"):
        text = p.format_help()
        assert "example" in text, f"`{path} --help` shows no example"
        assert "--socket" in text and "global options" in text, path


def test_version_and_status_load_no_daemon_modules() -> None:
    out = run_py("import sys, io, contextlib\n"
                 "from aiosd.cli.main import main\n"
                 "with contextlib.redirect_stdout(io.StringIO()):\n"
                 "    main(['version'])\n"
                 "    main(['status', '--json', '--socket', '/nonexistent/aiosd.sock'])\n"
                 "print(sorted(m for m in sys.modules if m.split('.')[0] in "
                 "('aiohttp', 'pydantic', 'msgpack', 'lmdb', 'nacl', 'storage', 'federation', 'runtime') "
                 "or m.startswith('aiosd.cli.') and m.endswith('_cmds')))")
    assert out.strip() == "['aiosd.cli.node_cmds']"


def test_help_of_one_command_loads_one_module() -> None:
    out = run_py("import sys, io, contextlib\n"
                 "from aiosd.cli.main import main\n"
                 "with contextlib.redirect_stdout(io.StringIO()):\n"
                 "    try:\n        main(['infer', '--help'])\n    except SystemExit:\n        pass\n"
                 "print(sorted(m for m in sys.modules if m.endswith('_cmds')))")
    assert out.strip() == "['aiosd.cli.spec_cmds']"


def test_record_names_are_one_set() -> None:
    from aiosd.registry.service import TABLES

    assert tables.REGISTRY_TABLES == TABLES
    for raw, want in [("block", "blocks"), ("Blocks", "blocks"), ("component", "components"), ("comp", "components"),
                      ("node", "nodes"), ("policy", "policies"), ("spec", "specs"), ("vdag", "vdags")]:
        assert tables.canonical(raw) == want
    assert tables.canonical("widgets") is None
    with pytest.raises(UsageError, match="unknown kind 'widgets'; use one of: assets, audit, blocks"):
        tables.resolve("widgets")
    assert tables.source("nodes") == "members" and tables.source("nodes", registry=True) == "registry"
    assert tables.source("blocks") == "network" and tables.source("blocks", local=True) == "catalog"
    assert tables.source("blocks", registry=True) == "registry" and tables.source("specs") == "registry"


def test_constants_copied_to_keep_the_cli_light_match_their_source() -> None:
    from aiosd.cli.common import DEFAULT_CONFIG
    from aiosd.cli.image_cmds import BASE_LATEST
    from aiosd.config import DEFAULT_CONFIG as REAL_CONFIG
    from runtime.images import BASE_LATEST as REAL_BASE

    assert DEFAULT_CONFIG == REAL_CONFIG and BASE_LATEST == REAL_BASE


@pytest.mark.parametrize("flags, environ, toml", [
    ({}, {}, ""),
    ({"data_dir": "/d1"}, {}, ""),
    ({}, {"AIOSD_DATA_DIR": "/d2"}, ""),
    ({}, {"AIOSD_SOCKET": "/s/a.sock"}, ""),
    ({}, {"AIOSD_API_SOCKET": "/s/b.sock", "XDG_RUNTIME_DIR": "/run/u"}, ""),
    ({}, {}, '[node]\ndata_dir = "/d3"\n[api]\nsocket = "/s/c.sock"\n'),
    ({"socket": "/s/flag.sock"}, {"AIOSD_SOCKET": "/s/env.sock"}, '[api]\nsocket = "/s/c.sock"\n'),
    ({}, {"AIOSD_NODE_DATA_DIR": "/d4"}, '[node]\ndata_dir = "/d3"\n'),
])
def test_light_paths_equal_the_full_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             flags: dict[str, str], environ: dict[str, str], toml: str) -> None:
    from aiosd.config import load_settings

    for name in ("AIOSD_DATA_DIR", "AIOSD_SOCKET", "AIOSD_API_SOCKET", "AIOSD_NODE_DATA_DIR", "AIOSD_CONFIG",
                 "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(name, raising=False)
    for k, v in environ.items():
        monkeypatch.setenv(k, v)
    config = None
    if toml:
        config = tmp_path / "aiosd.toml"
        config.write_text(toml)
    args = argparse.Namespace(config=str(config) if config else None, data_dir=flags.get("data_dir"),
                              socket=flags.get("socket"))
    full = load_settings(config, flags={"node": {"data_dir": args.data_dir}, "api": {"socket": args.socket}})
    env = Env(args)
    assert env.data_dir == full.data_dir and env.socket_path == full.socket_path


def test_json_arg_inline_file_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    assert json_arg('"hi"', "--data") == "hi" and json_arg("3", "--data") == 3 and json_arg(None, "--data") is None
    (tmp_path / "in.json").write_text('{"text": "big"}')
    assert json_arg(f"@{tmp_path / 'in.json'}", "--data") == {"text": "big"}
    monkeypatch.setattr(sys, "stdin", io.StringIO("[1, 2]"))
    assert json_arg("-", "--data") == [1, 2]
    with pytest.raises(UsageError, match="--data is not valid JSON"):
        json_arg("not json", "--data")
    with pytest.raises(UsageError, match="cannot read"):
        json_arg(f"@{tmp_path / 'missing.json'}", "--data")
    with pytest.raises(UsageError, match="must be a JSON object, not an array"):
        json_arg("[]", "--data", want_object=True)


def test_one_describe_type_wording() -> None:
    values: list[object] = [None, True, 1, 1.5, "s", [], {}]
    assert [describe_type(v) for v in values] == [
        "null", "a boolean", "a number", "a number", "a string", "an array", "an object"]
    from aiosd.specs import envelope, errors, filters, protocol

    assert all(m.describe_type is describe_type for m in (envelope, errors, filters, protocol))


def aiosd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aiosd.cli", *args], capture_output=True, text=True, timeout=60,
                          check=False)


def test_no_arguments_prints_grouped_commands_and_exits_0() -> None:
    r = aiosd()
    assert r.returncode == 0 and "Start and inspect a node:" in r.stdout and "  status" in r.stdout
    assert aiosd("--version").stdout.startswith("aiosd ")
    wrong = aiosd("statu")
    assert wrong.returncode == 2 and "did you mean `aiosd status`" in wrong.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_bash_completion_script_parses_and_completes() -> None:
    script = aiosd("completion", "bash").stdout
    check = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True, timeout=30, check=False)
    assert check.returncode == 0, check.stderr

    def complete(*words: str) -> list[str]:
        prog = (script + f"\nCOMP_WORDS=({' '.join(words)}); COMP_CWORD={len(words) - 1}; _aiosd; "
                'printf "%s\\n" "${COMPREPLY[@]}"\n')
        r = subprocess.run(["bash", "-c", prog], text=True, capture_output=True, timeout=30, check=False)
        assert r.returncode == 0, r.stderr
        return r.stdout.split()

    assert complete("aiosd", "sta") == ["status"]
    assert complete("aiosd", "--socket", "/tmp/s", "tok") == ["token"]
    assert complete("aiosd", "token", "cr") == ["create"]
    assert "blocks" in complete("aiosd", "get", "bl") and complete("aiosd", "--so") == ["--socket"]


def test_zsh_completion_script_names_every_command() -> None:
    r = aiosd("completion", "zsh")
    assert r.returncode == 0 and r.stdout.startswith("#compdef aiosd")
    assert all(f"'{c.name}:" in r.stdout for c in COMMANDS)
    if shutil.which("zsh"):
        check = subprocess.run(["zsh", "-n"], input=r.stdout, text=True, capture_output=True, timeout=30,
                               check=False)
        assert check.returncode == 0, check.stderr


def test_not_running_hint_names_systemctl_only_with_the_unit(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    from aiosd import errors

    monkeypatch.setattr(errors, "SYSTEMD_UNITS", (str(tmp_path / "aiosd.service"),))
    msg = str(errors.DaemonNotRunning.at("/x.sock"))
    assert "`aiosd run`" in msg and "systemctl" not in msg
    (tmp_path / "aiosd.service").write_text("[Unit]\n")
    assert "systemctl start aiosd" in str(errors.DaemonNotRunning.at("/x.sock"))


def test_version_json_before_the_command() -> None:
    r = aiosd("--json", "version")
    assert json.loads(r.stdout)["version"]
