"""The README and docs/: the generated config reference is current, and no link or anchor rots."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

# [text](target) and ![alt](target), not inside inline code; reference-style links are not used.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`[^`]*`")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def _tool():
    spec = importlib.util.spec_from_file_location("config_reference", REPO / "tools" / "config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = CODE_SPAN.sub(lambda m: m.group(0)[1:-1], heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    seen: dict[str, int] = {}
    anchors = set()
    for line in text.splitlines():
        match = re.match(r"^#{1,6}\s+(.*)$", line)
        if not match:
            continue
        slug = _slug(match.group(1))
        count = seen.get(slug, 0)
        anchors.add(slug if count == 0 else f"{slug}-{count}")
        seen[slug] = count + 1
    return anchors


def _links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text())
    return LINK.findall(CODE_SPAN.sub("", text))


def test_config_reference_is_generated_from_the_current_schemas():
    expected = _tool().render()
    assert (REPO / "docs" / "config.md").read_text() == expected, (
        "docs/config.md is out of date: run `python tools/config_reference.py` (make docs)"
    )


def test_every_config_key_has_a_description():
    undescribed = [line for line in _tool().render().splitlines() if line.startswith("- **") and "): " not in line]
    assert not undescribed, "schema keys without a description:\n" + "\n".join(undescribed)


def test_the_reference_lists_every_key_of_the_shipped_configs():
    import yaml

    sections: dict[str, set[str]] = {}
    heading = None
    for line in (REPO / "docs" / "config.md").read_text().splitlines():
        if match := re.match(r"^## `([^`]+)`", line):
            heading = match.group(1)
            sections[heading] = set()
        elif (match := re.match(r"^- \*\*`([^`]+)`\*\*", line)) and heading:
            sections[heading].add(match.group(1))

    missing = []

    def walk(path: str, value) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                if key not in sections.get(path or "top level", ()):
                    missing.append(f"{path}.{key}" if path else key)
                walk(f"{path}.{key}" if path else key, sub)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    walk(f"{path}[]", item)

    for name in ("config.yaml", "config.medium.yaml", "config.paper.yaml"):
        walk("", yaml.safe_load((REPO / name).read_text()))
    assert not missing, f"config keys not in docs/config.md: {sorted(set(missing))}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_links_and_anchors_resolve(page):
    broken = []
    for target in _links(page):
        if re.match(r"^[a-z]+:", target):  # http(s), mailto: not fetched (the tests run offline)
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.exists():
            broken.append(
                f"{target}: no file {resolved.relative_to(REPO) if resolved.is_relative_to(REPO) else resolved}"
            )
            continue
        if anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target}: no heading with anchor #{anchor} in {resolved.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)}:\n" + "\n".join(broken)


def test_every_docs_page_is_reachable_from_the_readme():
    reachable, queue = set(), [REPO / "README.md"]
    while queue:
        page = queue.pop()
        if page in reachable:
            continue
        reachable.add(page)
        for target in _links(page):
            path_part = target.partition("#")[0]
            if path_part.endswith(".md") and not re.match(r"^[a-z]+:", target):
                queue.append((page.parent / path_part).resolve())
    assert not set(PAGES) - reachable, f"not linked from the README or its pages: {sorted(set(PAGES) - reachable)}"


def test_readme_reads_in_ten_minutes():
    assert len((REPO / "README.md").read_text().splitlines()) <= 250


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_pages_describe_the_software_not_its_development(page):
    text = page.read_text()
    found = re.findall(r"\bissues? ?#?\d*\b|\bsessions?\b", text, re.IGNORECASE)
    assert not found, f"{page.relative_to(REPO)} speaks of {sorted(set(found))}"


def test_gallery_images_exist():
    readme = (REPO / "README.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\((docs/img/[^)]+)\)", readme)
    assert images, "the README shows no figure"
    for image in images:
        assert (REPO / image).stat().st_size < 300_000, f"{image} is large for a README image"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_pages_have_no_placeholders(page):
    text = CODE_SPAN.sub("", FENCE.sub("", page.read_text()))
    found = re.findall(r"\b(?:TODO|TBD|FIXME|XXX)\b|\b[A-Z]{3,}_[A-Z_]{3,}\b|^[A-Z]{5,}$", text, re.MULTILINE)
    assert not found, f"{page.relative_to(REPO)} has placeholders: {sorted(set(found))}"
