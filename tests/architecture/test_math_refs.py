"""Every reference to a section of docs/MATH.md ("docs/MATH.md section 7", "MATH.md sections 6-7", "docs/MATH.md
7.1", "MATH 10.1") in the code, configs and docs points at a section that exists: its number is one of MATH.md's
numbered headings ("## 7. The latent model", "### 7.1 The collapse watch")."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support import REPO

FOLDERS = ("latent_ndm", "vae", "data_tools", "benchmarks", "configs", "docs")
FILES = ("README.md", "Makefile")
SUFFIXES = {".py", ".yaml", ".yml", ".md", ".txt", ".toml", ".cfg"}
NUMBER = r"\d+(?:\.\d+)?"
# one section ("section 7", "7.1"), or after "sections" a list or range ("sections 6-7", "sections 2, 3 and 5")
REF = re.compile(rf"\b(?:docs/)?MATH(?:\.md)?,?[ \t]+(?:sections[ \t]+(?P<many>{NUMBER}(?:[ \t]*(?:-|–|,|and|or|to)"
                 rf"[ \t]*{NUMBER})*)|(?:section[ \t]+|§[ \t]*)?(?P<one>{NUMBER}))")
HEADING = re.compile(r"^#{2,6}[ \t]+(\d+(?:\.\d+)*)\.?[ \t]", re.MULTILINE)


def math_sections(text: str) -> set[str]:
    """The numbers of MATH.md's numbered headings: {"1", ..., "6.1", ..., "13"}."""
    return set(HEADING.findall(text))


def references(text: str) -> list[tuple[int, str]]:
    """(line, section number) of every MATH.md section reference in `text`; a range gives both of its ends."""
    found = []
    for match in REF.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        numbers = re.findall(NUMBER, match.group("many")) if match.group("many") else [match.group("one")]
        found += [(line, n) for n in numbers]
    return found


def scanned_files() -> list[Path]:
    paths = [REPO / f for f in FILES if (REPO / f).is_file()]
    for folder in FOLDERS:
        paths += [p for p in sorted((REPO / folder).rglob("*")) if p.is_file() and p.suffix in SUFFIXES
                  and "__pycache__" not in p.parts]
    return paths


def test_the_reference_pattern_reads_every_form() -> None:
    text = ("docs/MATH.md section 7, at 5 bits\n(docs/MATH.md sections 6-7)\nsee docs/MATH.md 7.1 and MATH 10.1\n"
            "MATH.md sections 2, 3 and 12.\nMATH.md § 9\nthe MATHS 3 of no one")
    assert references(text) == [(1, "7"), (2, "6"), (2, "7"), (3, "7.1"), (3, "10.1"), (4, "2"), (4, "3"),
                                (4, "12"), (5, "9")]
    headings = "# Title\n## 1. The schedule\n### 6.1 Fixed-step solvers\n## 7. The latent model (LSGM)\n"
    assert math_sections(headings) == {"1", "6.1", "7"}


def test_every_math_md_section_reference_points_at_a_section_that_exists() -> None:
    sections = math_sections((REPO / "docs" / "MATH.md").read_text(encoding="utf-8"))
    assert {"1", "6.1", "7", "7.1", "10.1", "13"} <= sections
    refs, broken = 0, []
    for path in scanned_files():
        for line, number in references(path.read_text(encoding="utf-8", errors="replace")):
            refs += 1
            if number not in sections:
                broken.append(f"{path.relative_to(REPO)}:{line}: docs/MATH.md {number}")
    assert refs >= 40, f"only {refs} references found: the pattern no longer reads them"
    assert not broken, "references to sections docs/MATH.md does not have: " + "; ".join(broken)
