"""`aitbc-peer completion bash|zsh`: scripts generated from the argparse tree, checked by the real shells
(bash always; zsh when installed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from nodeproc import run_cli

from node.cli import build_parser
from node.cli_completion import command_tree, completion_script


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    r = run_cli("completion", "bash")  # the command as a user runs it
    assert r.returncode == 0 and r.stderr == "", r.stderr
    path = tmp_path_factory.mktemp("completion") / "aitbc-peer.bash"
    path.write_text(r.stdout)
    return path


def bash_complete(script: Path, *words: str) -> list[str]:
    """COMPREPLY of the script's function in a real bash, for the command line ``words`` (the last one is
    the word being completed)."""
    quoted = " ".join("'" + w.replace("'", "'\\''") + "'" for w in words)
    prog = (f"source '{script}'\nCOMP_WORDS=({quoted})\nCOMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))\n"
            'COMP_LINE="${COMP_WORDS[*]}"\n_aitbc_peer\nprintf "%s\\n" "${COMPREPLY[@]}"\n')
    r = subprocess.run(["bash", "--norc", "--noprofile", "-c", prog], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    return [ln for ln in r.stdout.splitlines() if ln]


def test_the_bash_script_is_valid_and_registers_the_function(bash_script: Path) -> None:
    r = subprocess.run(["bash", "-n", str(bash_script)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["bash", "--norc", "-c", f"source '{bash_script}' && complete -p aitbc-peer"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "-F _aitbc_peer aitbc-peer" in r.stdout, r.stdout + r.stderr


def test_bash_completes_commands_options_and_choices(bash_script: Path) -> None:
    assert bash_complete(bash_script, "aitbc-peer", "jo") == ["job"]
    top = bash_complete(bash_script, "aitbc-peer", "")
    assert {"init", "run", "job", "miner", "validator", "completion"} <= set(top)
    assert bash_complete(bash_script, "aitbc-peer", "job", "s") == ["submit", "status"]
    assert bash_complete(bash_script, "aitbc-peer", "job", "submit", "--max-") == ["--max-price", "--max-units",
                                                                                  "--max-tokens"]
    # an option's value is skipped while walking, and its choices are offered
    assert bash_complete(bash_script, "aitbc-peer", "job", "--home", "job", "li") == ["list"]
    assert bash_complete(bash_script, "aitbc-peer", "job", "list", "--state", "C") == ["COMPLETED", "CANCELED"]
    assert bash_complete(bash_script, "aitbc-peer", "completion", "") == ["bash", "zsh"]
    assert bash_complete(bash_script, "aitbc-peer", "validator", "create", "--from", "dev", "--y") == ["--yes"]


def test_the_tables_follow_the_parser() -> None:
    parser = build_parser()
    tree = command_tree(parser)
    assert tree[""].subcommands == list(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert set(tree["job"].subcommands) >= {"submit", "status", "cancel", "result", "challenge-availability",
                                            "chunks", "list"}
    for path in tree:  # every command path is reachable from the root
        assert path == "" or path.rsplit(" ", 1)[-1] in tree[path.rpartition(" ")[0]].subcommands, path
    assert "--from" in tree["job submit"].value_options and "--wait" not in tree["job submit"].value_options
    assert tree["completion"].choices[""] == ["bash", "zsh"]
    with pytest.raises(ValueError, match="unknown shell"):
        completion_script(parser, "fish")
    r = run_cli("completion", "fish")
    assert r.returncode == 2 and "invalid choice" in r.stderr


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_the_zsh_script_is_valid_and_completes(tmp_path: Path) -> None:
    script = tmp_path / "_aitbc-peer"
    script.write_text(completion_script(build_parser(), "zsh"))
    r = subprocess.run(["zsh", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    # with the real completion system: sourcing registers the function for the command
    r = subprocess.run(["zsh", "-f", "-c", f"autoload -U compinit && compinit -u -D && source '{script}' && "
                        "print -r -- $_comps[aitbc-peer]"], capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "_aitbc_peer", r.stdout + r.stderr
    # the function's choice of candidates (compadd and _files stubbed: they only work inside a widget)
    prog = (f"compdef() {{ :; }}; compadd() {{ shift; print -r -- \"$*\"; }}; _files() {{ print -r -- FILES; }}\n"
            f"source '{script}'\n"
            "t() { words=(\"$@\"); CURRENT=$#words; _aitbc_peer; }\n"
            "t aitbc-peer jo; t aitbc-peer job list --state ''; t aitbc-peer job submit --from ''\n")
    r = subprocess.run(["zsh", "-f", "-c", prog], capture_output=True, text=True, timeout=30)
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and len(lines) == 3, r.stdout + r.stderr
    assert "job" in lines[0].split() and "completion" in lines[0].split()
    assert lines[1].split() == ["QUEUED", "RUNNING", "COMPLETED", "FAILED", "CANCELED", "EXPIRED"]
    assert lines[2] == "FILES"
