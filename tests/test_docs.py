"""The README and docs/ point at things that exist: files, headings, module paths; and name no outside notes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Pages the README lists that other branches add; drop a name here once its page is merged.
ADDED_ELSEWHERE = {"docs/benchmarks.md"}
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"\]\(([^)\s]+)\)")
REPO_PATH = re.compile(r"`((?:agent|drivers|tests|config|packaging|scripts|systemd|benchmarks|docs)/[\w./-]+)`")


def anchors(page: Path) -> set[str]:
    """Return the anchors GitHub makes from a page's headings."""
    found = set()
    for line in FENCE.sub("", page.read_text(encoding="utf-8")).splitlines():
        heading = re.match(r"^#+ (.*)", line)
        if heading:
            found.add(re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-"))
    return found


def ids(page: Path) -> str:
    """Return the page's path from the repository root, as the test id."""
    return str(page.relative_to(ROOT))


@pytest.mark.parametrize("page", PAGES, ids=ids)
def test_every_relative_link_reaches_a_file_and_heading(page: Path) -> None:
    broken = []
    for target in LINK.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if dest.is_relative_to(ROOT) and str(dest.relative_to(ROOT)) in ADDED_ELSEWHERE:
            continue
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target}: no such heading")
    assert broken == []


@pytest.mark.parametrize("page", PAGES, ids=ids)
def test_every_repository_path_named_exists(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    named = {p.rstrip("/") for p in REPO_PATH.findall(text) if "*" not in p and "<" not in p}
    named |= set(re.findall(r"\b((?:agent|drivers)/[\w/]+\.py)\b", text))
    assert sorted(p for p in named if not (ROOT / p).exists()) == []


@pytest.mark.parametrize("page", PAGES, ids=ids)
def test_pages_state_rules_rather_than_cite_notes_outside_the_repository(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert re.findall(r"\bSPEC\b|(?<!RFC \d{4} )§|issue notes|\bissue \d+", text) == []


def test_the_readme_stays_a_front_door() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.encode()) <= 12 * 1024, "details belong in docs/: the README links to them"
    assert "./scripts/demo" in readme.split("## ", 1)[0], "the demo command comes before any section"
    assert "./scripts/test" in readme.split("## ", 1)[0], "the test command comes before any section"


def test_the_architecture_page_draws_every_package() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    packages = sorted(p.name for p in (ROOT / "agent").iterdir() if (p / "__init__.py").exists())
    assert [p for p in packages if f"`agent/{p}`" not in page] == []
