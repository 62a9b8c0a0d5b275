"""Parse the shell snippets of README.md, so tests/test_readme.py runs whatever the README says today.

A snippet is a fenced code block whose language is a shell (```sh, ```bash, ```shell, ```console). Each
block becomes a :class:`Block` of :class:`Line`\\ s: backslash continuations joined into one command,
the trailing ``# comment`` split off (a ``#`` outside quotes, at the start or after whitespace), lines
that are only a comment or blank dropped. Every line keeps its README line number for messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

SHELL_LANGS = frozenset({"sh", "bash", "shell", "console"})
_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")


@dataclass(frozen=True)
class Line:
    command: str  # the command as bash gets it (continuations joined, comment removed)
    comment: str  # the README's trailing comment, without '#'
    lineno: int  # README line of its first physical line

    def __str__(self) -> str:
        return f"README.md:{self.lineno}: {self.command}"


@dataclass(frozen=True)
class Block:
    lang: str
    heading: str  # the nearest '#' heading above the block
    lineno: int  # README line of the opening fence
    lines: tuple[Line, ...]

    def __str__(self) -> str:
        first = self.lines[0].command if self.lines else "(empty)"
        return f"README.md:{self.lineno} (section {self.heading!r}, ```{self.lang}, first line {first!r})"


def split_comment(text: str) -> tuple[str, str]:
    """``(command, comment)``: the first ``#`` outside quotes that starts a word starts the comment."""
    quote = ""
    escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\" and quote != "'":
            escaped = True
        elif quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1].isspace()):
            return text[:i].rstrip(), text[i + 1 :].strip()
    return text.rstrip(), ""


def _logical_lines(body: list[tuple[int, str]]) -> list[Line]:
    out: list[Line] = []
    parts: list[str] = []
    comments: list[str] = []
    start = 0
    for lineno, raw in body:
        command, comment = split_comment(raw)
        if not parts:
            start = lineno
        if comment:
            comments.append(comment)
        if command.endswith("\\"):  # continued on the next line (a comment may follow the backslash)
            parts.append(command[:-1].rstrip())
            continue
        parts.append(command.strip() if parts else command.rstrip())
        joined = " ".join(p.strip() for p in parts if p.strip())
        if joined:
            out.append(Line(joined, " ".join(comments), start))
        parts, comments = [], []
    if parts and any(p.strip() for p in parts):  # a trailing backslash at the end of the block
        out.append(Line(" ".join(p.strip() for p in parts if p.strip()), " ".join(comments), start))
    return out


def parse(text: str) -> list[Block]:
    """Every shell block of a Markdown text, in order."""
    blocks: list[Block] = []
    heading = ""
    fence: str | None = None
    lang = ""
    opened = 0
    body: list[tuple[int, str]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if fence is None:
            m = _FENCE.match(line)
            if m:
                fence, lang, opened, body = m.group(2), m.group(3).lower(), lineno, []
            elif line.startswith("#"):
                heading = line.lstrip("#").strip()
            continue
        if line.strip().startswith(fence[0] * len(fence)) and not line.strip().strip(fence[0]):
            if lang in SHELL_LANGS:
                blocks.append(Block(lang, heading, opened, tuple(_logical_lines(body))))
            fence = None
            continue
        body.append((lineno, line))
    if fence is not None:
        raise ValueError(f"README.md:{opened}: code block never closed")
    return blocks


def parse_file(path: Path) -> list[Block]:
    return parse(path.read_text(encoding="utf-8"))


def words(command: str) -> str:
    """The command without leading ``VAR=value`` assignments (what to match a prefix against)."""
    return re.sub(r"^(\s*[A-Za-z_][A-Za-z0-9_]*=\S*\s+)+", "", command).strip()


def starts_with(command: str, prefix: str) -> bool:
    """``prefix`` is the command's first word(s) (after any ``VAR=value``), on a word boundary."""
    c = words(command)
    return c == prefix or c.startswith(prefix + " ")
