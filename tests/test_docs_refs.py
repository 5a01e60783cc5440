"""Every "docs/algorithm.md §n" cited in the code and docs names a section (or a §7 item) that exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "algorithm.md"
CITE = re.compile(r"algorithm\.md §(\d+(?:\.\d+)?)")


def _sections() -> set[str]:
    text = DOC.read_text(encoding="utf-8")
    found = set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", text, re.M))
    pitfalls = text[text.index("\n## 7.") : text.index("\n## 8.")]
    found |= {f"7.{n}" for n in re.findall(r"^(\d+)\. \*\*", pitfalls, re.M)}
    return found


def test_every_citation_names_a_section() -> None:
    sections = _sections()
    assert {"0", "1.1", "2", "3.4", "6.4", "7.15", "7.18", "8.2"} <= sections
    missing = []
    for path in [*ROOT.glob("src/**/*.py"), *ROOT.glob("src/**/*.c"), *ROOT.glob("tests/**/*.py"),
                 *ROOT.glob("docs/*.md"), ROOT / "README.md", *ROOT.glob("benchmarks/*.py")]:
        for ref in CITE.findall(path.read_text(encoding="utf-8", errors="replace")):
            if ref.rstrip(".") not in sections:
                missing.append(f"{path.relative_to(ROOT)}: §{ref}")
    assert not missing, "\n".join(missing)
