"""Write llmsforme/data/course_text.txt: plain text of three Part 1 pages, for perplexity.

Part 2 measures perplexity on "a fixed text of at least 2,000 tokens". The
course's own prose is ours to ship (Apache-2.0), so the package carries it
and a notebook on Colab finds it without the repository. Markdown syntax is
removed (tables, link targets, emphasis), the words stay.

    .venv/bin/python scripts/course_text.py

tests/test_course_text.py checks that the shipped file is what this writes.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["docs/part-1/foundation-models.md", "docs/part-1/gpt-series.md", "docs/part-1/use-cases.md"]
OUTPUT = ROOT / "llmsforme" / "data" / "course_text.txt"


def plain_text(markdown: str) -> str:
    """The words of a Markdown page: no tables, link targets, HTML, emphasis or heading marks."""
    lines = []
    for line in markdown.splitlines():
        if line.lstrip().startswith("|") or re.match(r"^\[[^\]]+\]:\s", line) or line.lstrip().startswith("<"):
            continue
        line = re.sub(r"^#+\s*", "", line)
        line = re.sub(r"^\s*(?:[-*]|\d+\.)\s+", "", line)
        lines.append(line.strip())
    text = "\n".join(lines)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # [text](url)
    text = re.sub(r"\[([^\]]*)\]\[[^\]]*\]", r"\1", text)  # [text][ref]
    text = re.sub(r"[*_`]+", "", text)
    text = re.sub(r"(?<!\n)\n(?!\n)", " ", text)  # join wrapped lines
    text = re.sub(r"\n{3,}", "\n\n", text)
    return re.sub(r" {2,}", " ", text).strip() + "\n"


def course_text() -> str:
    return "\n".join(plain_text((ROOT / page).read_text(encoding="utf-8")) for page in PAGES)


if __name__ == "__main__":
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(course_text(), encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)}: {len(OUTPUT.read_text().split())} words")
