"""Links between README.md and the docs pages resolve, and the pages name public modules only.

Every relative link (outside code blocks) must point at a file that exists,
and its ``#anchor``, if any, at a heading of that page; ``mkdocs build
--strict`` checks the site's own links as well, but not README.md's.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from markdown.extensions.toc import slugify

import mkdocs_hooks

from .pages import ROOT, pages, parse

# [text](target) and [text](target "title"); images too.
_LINK = re.compile(r"!?\[[^\]]*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)

# The package's own modules that users import, as the API reference knows them.
PUBLIC_MODULES = {"__init__", "__main__", *mkdocs_hooks.PUBLIC_MODULES}


def prose(page: Path) -> list[tuple[int, str]]:
    """The page's lines outside fenced code blocks, numbered from 1."""
    _headings, blocks = parse(page)
    inside = {n for b in blocks for n in range(b.line, b.end_line + 1)}
    return [
        (n, line)
        for n, line in enumerate(page.read_text().splitlines(), start=1)
        if n not in inside
    ]


def anchors(page: Path) -> set[str]:
    headings, _blocks = parse(page)
    return {slugify(re.sub(r"[`*]", "", h.text), "-") for h in headings}


def links() -> list:
    found = []
    for page in pages():
        for number, line in prose(page):
            for match in _LINK.finditer(line):
                target = match["target"]
                if not _SCHEME.match(target):
                    where = f"{page.relative_to(ROOT).as_posix()}:{number}"
                    found.append(pytest.param(page, target, id=f"{where}:{target}"))
    return found


@pytest.mark.parametrize("page, target", links())
def test_relative_link_resolves(page: Path, target: str):
    path, _, anchor = target.partition("#")
    resolved = (page.parent / path).resolve() if path else page
    assert resolved.is_file(), f"{target} names no file"
    assert resolved.is_relative_to(ROOT), f"{target} points outside the repository"
    if anchor:
        assert resolved.suffix == ".md", f"{target}: an anchor into a file that is not Markdown"
        assert anchor in anchors(resolved), (
            f"{target}: no heading of {resolved.relative_to(ROOT)} has the anchor #{anchor}"
        )


def test_readme_links_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    linked = {(ROOT / m["target"].partition("#")[0]).resolve() for m in _LINK.finditer(readme)}
    guide = [p for p in pages()[1:] if p.parent.name != "reference"]
    assert not [p.relative_to(ROOT).as_posix() for p in guide if p.resolve() not in linked]
    assert (ROOT / "docs" / "reference" / "index.md").resolve() in linked


def internal_modules() -> list[str]:
    """Modules and subpackages of the package outside the public API."""
    package = ROOT / "omnispindle"
    found = {p.stem for p in package.glob("*.py")}
    found |= {p.parent.name for p in package.glob("*/__init__.py")}
    return sorted(found - PUBLIC_MODULES)


# The one page for contributors: it maps the package, internal modules included.
INTERNALS = ROOT / "docs" / "internals.md"


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_page_names_no_internal_module_and_no_machine_path(page: Path):
    names = "|".join(internal_modules())
    internal = re.compile(rf"\bomnispindle[./](?:{names})\b")
    machine_path = re.compile(r"(?<![\w.])/(?:work|tmp|home|root|Users|var|opt)/")
    for number, line in enumerate(page.read_text().splitlines(), start=1):
        where = f"{page.relative_to(ROOT)}:{number}"
        if page != INTERNALS:
            assert not internal.search(line), f"{where} names an internal module: {line.strip()}"
        assert not machine_path.search(line), f"{where} names a machine path: {line.strip()}"
