"""``aitbc-peer completion bash|zsh``: a shell completion script generated from the argparse tree.

No dependency (argcomplete is not used): the parser is walked once, and every command path (``""``,
``"job"``, ``"job submit"``, …) becomes one branch of a ``case`` in the script with its subcommands, its
options, the options that take a value and the choices of those that have them. At completion time the
script walks the words typed so far (skipping options and their values) to the deepest command path and
offers that path's subcommands, or its options after a ``-``, or an option's choices (else file names)
after an option that takes a value. The bash and zsh scripts share the same tables.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field

PROG = "aitbc-peer"
FUNC = "_aitbc_peer"
SHELLS = ("bash", "zsh")
_SAFE = re.compile(r"^[A-Za-z0-9_.,:/=+@%-]+$")  # words that need no quoting in a shell script


@dataclass
class CommandNode:
    """What one command path accepts."""

    subcommands: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)
    value_options: list[str] = field(default_factory=list)  # options that take a value
    choices: dict[str, list[str]] = field(default_factory=dict)  # option (or "" for a positional) -> choices


def command_tree(parser: argparse.ArgumentParser) -> dict[str, CommandNode]:
    """``{"": root, "job": …, "job submit": …}``: every command path of ``parser`` and what it accepts."""
    out: dict[str, CommandNode] = {}

    def walk(p: argparse.ArgumentParser, path: str) -> None:
        node = CommandNode()
        out[path] = node
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    node.subcommands.append(name)
                    walk(sub, f"{path} {name}".strip())
                continue
            if not action.option_strings:  # a positional: complete its choices, if any
                if action.choices:
                    node.choices.setdefault("", []).extend(str(c) for c in action.choices)
                continue
            node.options.extend(action.option_strings)
            if action.nargs != 0:
                node.value_options.extend(action.option_strings)
                if action.choices:
                    for opt in action.option_strings:
                        node.choices[opt] = [str(c) for c in action.choices]

    walk(parser, "")
    return out


def _words(items: list[str]) -> str:
    """Space-separated words for the script; a word that would need quoting (none today) is left out:
    it cannot be offered as a completion anyway."""
    return " ".join(w for w in items if _SAFE.match(w))


def _tables(tree: dict[str, CommandNode]) -> str:
    """The shell functions both scripts share: ``<FUNC>_subs PATH``, ``_opts PATH``, ``_valopts PATH`` and
    ``_choices PATH OPT`` print space-separated words (``case`` works the same in bash and zsh)."""

    def case(name: str, rows: list[tuple[str, str]], args: str = '"$1"') -> str:
        body = "".join(f'        "{k}") echo "{v}" ;;\n' for k, v in rows if v)
        return f"{FUNC}_{name}() {{\n    case {args} in\n{body}    esac\n}}\n"

    subs = [(p, _words(n.subcommands)) for p, n in tree.items()]
    opts = [(p, _words(n.options)) for p, n in tree.items()]
    vals = [(p, _words(n.value_options)) for p, n in tree.items()]
    choices = [(f"{p}|{o}", _words(c)) for p, n in tree.items() for o, c in n.choices.items()]
    return (case("subs", subs) + case("opts", opts) + case("valopts", vals)
            + case("choices", choices, '"$1|$2"'))


def _is_in() -> str:
    """``<FUNC>_in WORD "W1 W2 …"``: whether WORD is one of the words (no word splitting: same in zsh)."""
    return f'{FUNC}_in() {{\n    case " $2 " in\n        *" $1 "*) return 0 ;;\n    esac\n    return 1\n}}\n'


_BASH = """\
{FUNC}() {{
    local cur prev cmdpath="" word skip=0 i
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev=""
    (( COMP_CWORD > 0 )) && prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    for (( i = 1; i < COMP_CWORD; i++ )); do
        word="${{COMP_WORDS[i]}}"
        if (( skip )); then skip=0; continue; fi
        case "$word" in
            --*=*) continue ;;
            -*) {FUNC}_in "$word" "$({FUNC}_valopts "$cmdpath")" && skip=1; continue ;;
        esac
        if {FUNC}_in "$word" "$({FUNC}_subs "$cmdpath")"; then
            cmdpath="${{cmdpath:+$cmdpath }}$word"
        fi
    done
    COMPREPLY=()
    if (( skip )); then
        local ch
        ch="$({FUNC}_choices "$cmdpath" "$prev")"
        if [ -n "$ch" ]; then
            COMPREPLY=( $(compgen -W "$ch" -- "$cur") )
        else
            COMPREPLY=( $(compgen -f -- "$cur") )
        fi
        return 0
    fi
    if [[ "$cur" == -* ]]; then
        COMPREPLY=( $(compgen -W "$({FUNC}_opts "$cmdpath")" -- "$cur") )
    else
        COMPREPLY=( $(compgen -W "$({FUNC}_subs "$cmdpath") $({FUNC}_choices "$cmdpath" "")" -- "$cur") )
    fi
    return 0
}}
complete -o default -F {FUNC} {PROG}
"""

_ZSH = """\
{FUNC}() {{
    local cmdpath="" word skip=0 i prev cur
    cur="${{words[CURRENT]}}"
    prev="${{words[CURRENT-1]}}"
    for (( i = 2; i < CURRENT; i++ )); do
        word="${{words[i]}}"
        if (( skip )); then skip=0; continue; fi
        case "$word" in
            --*=*) continue ;;
            -*) {FUNC}_in "$word" "$({FUNC}_valopts "$cmdpath")" && skip=1; continue ;;
        esac
        if {FUNC}_in "$word" "$({FUNC}_subs "$cmdpath")"; then
            cmdpath="${{cmdpath:+$cmdpath }}$word"
        fi
    done
    if (( skip )); then
        local ch
        ch="$({FUNC}_choices "$cmdpath" "$prev")"
        if [[ -n "$ch" ]]; then
            compadd -- ${{=ch}}
        else
            _files
        fi
        return
    fi
    if [[ "$cur" == -* ]]; then
        local -a opts
        opts=( ${{=$({FUNC}_opts "$cmdpath")}} )
        compadd -- $opts
    else
        local -a subs
        subs=( ${{=$({FUNC}_subs "$cmdpath")}} ${{=$({FUNC}_choices "$cmdpath" "")}} )
        (( $#subs )) && compadd -- $subs || _files
    fi
}}
if [[ "${{funcstack[1]}}" == "{FUNC}" ]]; then
    {FUNC} "$@"
else
    compdef {FUNC} {PROG}
fi
"""


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script of ``parser`` for ``shell`` (``bash`` or ``zsh``)."""
    tree = command_tree(parser)
    fmt = {"FUNC": FUNC, "PROG": PROG}
    if shell == "bash":
        head = (f"# {PROG} bash completion, generated by `{PROG} completion bash`.\n"
                f"# Load it with: source <({PROG} completion bash)   (e.g. in ~/.bashrc), or save it as\n"
                f"# ~/.local/share/bash-completion/completions/{PROG}\n")
        return head + _tables(tree) + _is_in() + _BASH.format(**fmt)
    if shell == "zsh":
        head = (f"#compdef {PROG}\n"
                f"# {PROG} zsh completion, generated by `{PROG} completion zsh`.\n"
                f"# Load it with: source <({PROG} completion zsh)   (after compinit), or save it as _{PROG}\n"
                f"# in a directory of $fpath\n")
        return head + _tables(tree) + _is_in() + _ZSH.format(**fmt)
    raise ValueError(f"unknown shell {shell!r}: one of {', '.join(SHELLS)}")


def cmd_completion(args: argparse.Namespace) -> int:
    from .cli import build_parser

    print(completion_script(build_parser(), args.shell), end="")
    return 0


def add_completion_command(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser("completion", help="print a shell completion script (bash or zsh)",
                        description="Print a completion script: `source <(aitbc-peer completion bash)`.")
    sp.add_argument("shell", choices=SHELLS)
    sp.set_defaults(func=cmd_completion)
