"""Reading the documentation as the tests check it: README.md and the pages of docs/, their fenced
code blocks, tables and links, and the `--help` text the command-line page must hold.

The docs are Markdown written for people; these helpers find in them what a test compares with the
code (a setting's row, a route's line, a command's help, a snippet to render), so the page itself
is what is tested.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
# argparse wraps help to the terminal's width (COLUMNS); the page holds it at this width.
HELP_COLUMNS = "100"

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,})(?P<info>[^`]*)$")
_TITLE = re.compile(r'title="(?P<title>[^"]*)"')


@dataclasses.dataclass(frozen=True)
class Block:
    """A fenced code block: its language, its `title="..."` if any, its text, where it starts."""

    page: str
    line: int
    lang: str
    title: str | None
    text: str

    def where(self) -> str:
        return f"{self.page}:{self.line}"


def pages() -> list[Path]:
    """README.md and every Markdown page of docs/."""
    return [README, *sorted(DOCS.rglob("*.md"))]


def page_name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def fenced_blocks(path: Path) -> list[Block]:
    """Every fenced block of a page, indented ones (inside list items) included, de-indented."""
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent, fence, info = opening["indent"], opening["fence"], opening["info"].strip()
        start = index + 1
        body: list[str] = []
        index += 1
        while index < len(lines) and lines[index].strip() != fence:
            line = lines[index]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            index += 1
        lang = info.split()[0] if info else ""
        title = _TITLE.search(info)
        blocks.append(Block(page_name(path), start, lang, title["title"] if title else None,
                            "\n".join(body) + "\n"))
        index += 1
    return blocks


def block_titled(path: Path, title: str) -> Block:
    found = [block for block in fenced_blocks(path) if block.title == title]
    assert len(found) == 1, f"{page_name(path)} has {len(found)} blocks titled {title!r}"
    return found[0]


def without_code(text: str) -> str:
    """The page's prose: fenced blocks removed (links and anchors inside code are not links)."""
    kept, fence = [], None
    for line in text.splitlines():
        opening = _FENCE.match(line)
        if fence is None and opening:
            fence = opening["fence"]
        elif fence is not None and line.strip() == fence:
            fence = None
        elif fence is None:
            kept.append(line)
    return "\n".join(kept)


def table_rows(text: str, header_first_cell: str) -> list[list[str]]:
    """The rows (cells, stripped) of every table whose header row starts with this cell."""
    rows: list[list[str]] = []
    lines = text.splitlines()
    for number, line in enumerate(lines):
        cells = _cells(line)
        if not cells or cells[0] != header_first_cell:
            continue
        for row in lines[number + 2:]:
            if not row.startswith("|"):
                break
            rows.append(_cells(row))
    return rows


def _cells(line: str) -> list[str]:
    if not line.startswith("|"):
        return []
    # A `\|` inside a cell is a literal bar, not a cell boundary.
    parts = re.split(r"(?<!\\)\|", line.strip().strip("|"))
    return [part.strip().replace("\\|", "|") for part in parts]


def code_spans(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


# --- headings and anchors, as MkDocs' toc extension makes them ------------------------------------

def heading_anchors(text: str) -> set[str]:
    """The anchors of a page's headings (Python-Markdown's toc slugify, unique with _1, _2...)."""
    from markdown.extensions.toc import slugify

    anchors: set[str] = set()
    for line in without_code(text).splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        plain = re.sub(r"`([^`]*)`", r"\1", match[1])
        plain = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", plain)
        slug = slugify(plain, "-")
        unique, number = slug, 0
        while unique in anchors:
            number += 1
            unique = f"{slug}_{number}"
        anchors.add(unique)
    return anchors


def links(text: str) -> Iterator[str]:
    """The targets of the page's Markdown links and images (not those inside code)."""
    prose = re.sub(r"`[^`]*`", "", without_code(text))
    yield from re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", prose)


# --- the command line ----------------------------------------------------------------------------

def cli_commands() -> list[list[str]]:
    """Every command of `catalog-enricher` as the words after the program's name ([] for the
    program itself), from the parser the console script uses."""
    from service.cli import build_parser

    found: list[list[str]] = []

    def walk(parser: argparse.ArgumentParser, words: list[str]) -> None:
        found.append(words)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, [*words, name])

    walk(build_parser(), [])
    return found


def cli_help(words: list[str]) -> str:
    """What `catalog-enricher WORDS --help` prints, at the page's width: the console script's
    own entry point (`service.cli:main`), run in this process."""
    from service.cli import main

    out = io.StringIO()
    with mock.patch.dict(os.environ, {"COLUMNS": HELP_COLUMNS}), \
            contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main([*words, "--help"])
    return out.getvalue()


def cli_heading(words: list[str]) -> str:
    return " ".join(["catalog-enricher", *words])


def cli_page_sections(text: str) -> dict[str, str]:
    """`## catalog-enricher ...` heading -> the first `text` block under it."""
    sections: dict[str, str] = {}
    heading = None
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        match = re.match(r"^#{2,6}\s+(catalog-enricher(?: [\w-]+)*)\s*$", line)
        if match:
            heading = match[1]
        elif heading and line.strip() == "```text":
            end = lines.index("```", index + 1)
            sections.setdefault(heading, "\n".join(lines[index + 1:end]) + "\n")
            heading = None
            index = end
        index += 1
    return sections
