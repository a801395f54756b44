"""The documentation as the tests read it: README.md and docs/**/*.md, their
headings and their fenced code blocks."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_HEADING = re.compile(r"^(?P<hashes>#{1,6})\s+(?P<text>.+?)\s*#*\s*$")
OUTPUT_LEAD = "Output:"


@dataclass(frozen=True)
class Block:
    """One fenced code block."""

    page: Path
    line: int  # of the opening fence, from 1
    info: str  # the fence's info string: the language first
    code: str
    end_line: int  # of the closing fence

    @property
    def language(self) -> str:
        return self.info.split()[0] if self.info.split() else ""

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT).as_posix()}:{self.line}"


@dataclass(frozen=True)
class Heading:
    level: int
    text: str
    line: int


def pages() -> list[Path]:
    """README.md, then every Markdown page under docs/, in path order."""
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def parse(page: Path) -> tuple[list[Heading], list[Block]]:
    """The page's headings (outside code blocks) and fenced code blocks, in order."""
    headings: list[Heading] = []
    blocks: list[Block] = []
    lines = page.read_text().splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            heading = _HEADING.match(lines[index])
            if heading:
                headings.append(Heading(len(heading["hashes"]), heading["text"], index + 1))
            index += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        closing = re.compile(rf"^ *{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        body: list[str] = []
        end = index + 1
        while end < len(lines) and not closing.match(lines[end]):
            body.append(lines[end][indent:] if lines[end][:indent].strip() == "" else lines[end])
            end += 1
        if end == len(lines):
            raise AssertionError(
                f"{page.relative_to(ROOT)}:{index + 1}: a code block is never closed"
            )
        code = "\n".join(body) + "\n" if body else ""
        blocks.append(Block(page, index + 1, opening["info"].strip(), code, end + 1))
        index = end + 1
    return headings, blocks


def all_blocks() -> list[Block]:
    return [block for page in pages() for block in parse(page)[1]]


def expected_output(block: Block) -> Block | None:
    """The ```text block that a line ``Output:`` after ``block`` introduces, if any."""
    lines = block.page.read_text().splitlines()
    index = block.end_line  # the line after the closing fence, counted from 0

    def skip_blank(index: int) -> int:
        while index < len(lines) and not lines[index].strip():
            index += 1
        return index

    index = skip_blank(index)
    if index == len(lines) or lines[index].strip() != OUTPUT_LEAD:
        return None
    index = skip_blank(index + 1)
    found = next((b for b in parse(block.page)[1] if b.line == index + 1), None)
    if found is None or found.language != "text":
        raise AssertionError(f"{block.where}: {OUTPUT_LEAD!r} must be followed by a ```text block")
    return found


def output_blocks() -> set[tuple[Path, int]]:
    """Where the ```text blocks that hold expected output are."""
    found = set()
    for block in all_blocks():
        output = expected_output(block)
        if output is not None:
            found.add((output.page, output.line))
    return found


def _heading_text(heading: str) -> str:
    return heading.lstrip("#").strip()


def section(heading: str) -> tuple[Path, list[Block]]:
    """The page holding ``heading``, and the code blocks of its section.

    ``heading`` is matched by its text, at any level ("### asyncio" finds
    "# asyncio" too), and must be the heading of exactly one section across
    README.md and docs/. The section runs to the next heading of the same or
    a higher level.
    """
    text = _heading_text(heading)
    found = []
    for page in pages():
        headings, blocks = parse(page)
        for position, candidate in enumerate(headings):
            if candidate.text != text:
                continue
            end = next(
                (h.line for h in headings[position + 1 :] if h.level <= candidate.level), None
            )
            found.append(
                (
                    page,
                    [
                        b
                        for b in blocks
                        if b.line > candidate.line and (end is None or b.line < end)
                    ],
                )
            )
    if len(found) != 1:
        raise LookupError(f"heading {text!r} found {len(found)} times in README.md and docs/")
    return found[0]


def python_block(heading: str) -> str:
    """The first ```python block in the section under ``heading`` (see :func:`section`)."""
    page, blocks = section(heading)
    for block in blocks:
        if block.language == "python":
            return block.code
    raise LookupError(f"no python block under {heading!r} in {page.relative_to(ROOT)}")
