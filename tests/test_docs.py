"""The code's citations of ``docs/`` resolve: every ``<file>.md §N`` names a numbered heading
of that file and every ``pitfall N`` a row of ``docs/architecture.md``'s pitfall tables."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
CITED = ("protocols", "datasets", "architecture")
#: ``protocols.md §3.6``, ``datasets.md §2.4-2.5`` (the first section of a range is checked).
SECTION_CITATION = re.compile(r"\b(protocols|datasets|architecture)\.md,? §\s*(\d+(?:\.\d+)*)")
PITFALL_CITATION = re.compile(r"\bpitfalls? (\d+)(?: and (\d+))?")


def _sources() -> list[Path]:
    folders = ("harness", "methods", "datasets", "tests", "benchmarks", "results")
    return sorted(path for folder in folders for path in (REPO / folder).rglob("*")
                  if path.suffix in (".py", ".j2", ".md", ".csv") and path.is_file()) + [
        REPO / "README.md"]


def _headings(name: str) -> set[str]:
    text = (DOCS / f"{name}.md").read_text(encoding="utf-8")
    return set(re.findall(r"^#{2,4} (\d+(?:\.\d+)*)\.? ", text, re.M))


def _pitfalls() -> set[int]:
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## 8.", 1)[1].split("\n## ", 1)[0]
    return {int(number) for number in re.findall(r"^\| (\d+) \|", section, re.M)}


def test_the_pitfall_and_section_tables_are_there():
    assert _pitfalls() == set(range(1, 23))
    assert {"1.3", "2.1", "3.6", "3.7"} <= _headings("protocols")


def test_every_citation_names_a_section_docs_has():
    headings = {name: _headings(name) for name in CITED}
    pitfalls = _pitfalls()
    unresolved, cited = [], 0
    for path in _sources():
        text = path.read_text(encoding="utf-8", errors="replace")
        where = path.relative_to(REPO)
        for name, section in SECTION_CITATION.findall(text):
            cited += 1
            if section not in headings[name]:
                unresolved.append(f"{where}: {name}.md §{section}")
        for pair in PITFALL_CITATION.findall(text):
            for number in filter(None, pair):
                cited += 1
                if int(number) not in pitfalls:
                    unresolved.append(f"{where}: pitfall {number}")
    assert cited > 300 and not unresolved
