"""Write the course's pages, cut into chunks, into the package (``llmsforme/data/ask_corpus.jsonl``),
and the glossary's terms beside them (``ask_glossary.jsonl``).

"Ask the course" searches these chunks; shipping them lets an installed
package answer without a checkout of the course. ``tests/test_ask.py``
fails when the pages changed and these files were not rewritten.

    .venv/bin/python scripts/ask_corpus.py
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from llmsforme.apps.ask.corpus import REPOSITORY, load_corpus, load_glossary

TARGET = REPOSITORY / "llmsforme" / "data" / "ask_corpus.jsonl"
GLOSSARY_TARGET = TARGET.with_name("ask_glossary.jsonl")


def corpus_lines() -> str:
    return "".join(json.dumps(asdict(chunk), ensure_ascii=False) + "\n" for chunk in load_corpus(REPOSITORY))


def glossary_lines() -> str:
    return "".join(json.dumps(asdict(term), ensure_ascii=False) + "\n" for term in load_glossary(REPOSITORY))


def main() -> None:
    for target, lines, what in ((TARGET, corpus_lines(), "chunks"), (GLOSSARY_TARGET, glossary_lines(), "terms")):
        target.write_text(lines, encoding="utf-8")
        shown = target.relative_to(Path.cwd()) if target.is_relative_to(Path.cwd()) else target
        print(f"{shown}: {len(lines.splitlines())} {what}")


if __name__ == "__main__":
    main()
