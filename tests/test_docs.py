"""The README stays short, and every relative link in it and in docs/ points at a file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def relative_links(page: Path) -> list[str]:
    """Link targets that are not URLs, without their #anchor."""
    targets = [m.group(1) for m in LINK.finditer(page.read_text())]
    return [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:", t) and t[0] != "#"]


def test_the_link_finder_sees_links() -> None:
    assert "docs/speed.md" in relative_links(ROOT / "README.md")
    assert "../README.md" in relative_links(ROOT / "docs" / "speed.md")


def test_readme_is_short() -> None:
    length = len((ROOT / "README.md").read_text())
    assert length <= 10_000, f"README.md: {length} characters; move details into docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    missing = [t for t in relative_links(page) if not (page.parent / t).is_file()]
    assert missing == [], f"{page.name}: links to missing files"


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {(ROOT / t).resolve() for t in relative_links(ROOT / "README.md")}
    assert [p.name for p in PAGES[1:] if p.resolve() not in linked] == []
