"""`aiosd completion bash|zsh`: a shell completion script for the command names, their actions and
the global options (from the command table in aiosd.cli.main, so it never goes stale)."""

from __future__ import annotations

import argparse
import sys

from aiosd.cli.common import GLOBAL_SWITCHES, GLOBAL_VALUES, Env, Sub, command

BASH = """\
# aiosd bash completion: `source <(aiosd completion bash)`, or save it as
# /etc/bash_completion.d/aiosd
_aiosd() {
    local cur prev words cword
    cur="${COMP_WORDS[COMP_CWORD]}"
    prev="${COMP_WORDS[COMP_CWORD-1]}"
    local commands="__COMMANDS__"
    local globals="__GLOBALS__"
    case "$prev" in
        --socket|--config|--data-dir) COMPREPLY=( $(compgen -f -- "$cur") ); return 0;;
        --log-level) COMPREPLY=( $(compgen -W "debug info warning error" -- "$cur") ); return 0;;
        --log-format) COMPREPLY=( $(compgen -W "text json" -- "$cur") ); return 0;;
    esac
    local cmd="" i
    for (( i=1; i < COMP_CWORD; i++ )); do
        case "${COMP_WORDS[i]}" in
            --socket|--config|--data-dir|--log-level|--log-format) (( i++ ));;
            -*) ;;
            *) cmd="${COMP_WORDS[i]}"; break;;
        esac
    done
    if [[ "$cur" == -* ]]; then
        COMPREPLY=( $(compgen -W "$globals --help" -- "$cur") )
    elif [[ -z "$cmd" ]]; then
        COMPREPLY=( $(compgen -W "$commands" -- "$cur") )
    else
        case "$cmd" in
__ACTIONS__
            *) COMPREPLY=( $(compgen -f -- "$cur") );;
        esac
    fi
    return 0
}
complete -F _aiosd aiosd
"""

ZSH = """\
#compdef aiosd
# aiosd zsh completion: `source <(aiosd completion zsh)`, or save it as _aiosd in a $fpath directory
_aiosd() {
    local -a commands
    commands=(
__COMMANDS__
    )
    if (( CURRENT == 2 )); then
        _describe 'command' commands
        return
    fi
    case "${words[2]}" in
__ACTIONS__
        *) _files;;
    esac
}
compdef _aiosd aiosd 2>/dev/null || true
"""

# Actions of the commands that have them (the second word); the parsers are not loaded for this.
ACTIONS = {
    "token": "create list revoke", "node": "remove", "cluster": "list describe",
    "image": "build-base build list push pull published", "asset": "push list info get",
    "policy": "push list describe delete run mgmt", "template": "push list", "spec": "push list",
    "governance": "show set unset check", "completion": "bash zsh",
    "get": "__NAMES__", "watch": "__NAMES__", "describe": "__NAMES__",
}


def _actions() -> dict[str, str]:
    from aiosd.cli.tables import NAMES

    return {k: (" ".join(NAMES) if v == "__NAMES__" else v) for k, v in ACTIONS.items()}


def bash_script() -> str:
    from aiosd.cli.main import COMMANDS

    cases = "\n".join(f'            {name}) COMPREPLY=( $(compgen -W "{words}" -- "$cur") );;'
                      for name, words in _actions().items())
    return (BASH.replace("__COMMANDS__", " ".join(c.name for c in COMMANDS))
            .replace("__GLOBALS__", " ".join([*GLOBAL_VALUES, *GLOBAL_SWITCHES, "--version"]))
            .replace("__ACTIONS__", cases))


def zsh_script() -> str:
    from aiosd.cli.main import COMMANDS

    names = "\n".join(f"        '{c.name}:{c.summary.replace(chr(39), '')}'" for c in COMMANDS)
    cases = "\n".join(f"        {name}) compadd {words};;" for name, words in _actions().items())
    return ZSH.replace("__COMMANDS__", names).replace("__ACTIONS__", cases)


def cmd_completion(args: argparse.Namespace, env: Env) -> int:
    sys.stdout.write(bash_script() if args.shell == "bash" else zsh_script())
    return 0


def register_completion(sub: Sub) -> argparse.ArgumentParser:
    p = command(sub, "completion", "print a bash or zsh completion script",
                "Print a completion script for SHELL: command names, their actions, record names for\n"
                "get/watch/describe, and the global options.",
                "examples:\n  source <(aiosd completion bash)\n"
                "  aiosd completion bash > /etc/bash_completion.d/aiosd\n"
                "  aiosd completion zsh > \"${fpath[1]}/_aiosd\"", cmd_completion, json_help=None)
    p.add_argument("shell", choices=["bash", "zsh"], help="the shell")
    return p


REGISTER = [register_completion]

__all__ = ["REGISTER", "bash_script", "zsh_script"]
