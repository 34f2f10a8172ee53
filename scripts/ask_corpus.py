"""Write the course's pages, cut into chunks, into the package (``llmsforme/data/ask_corpus.jsonl``).

"Ask the course" searches these chunks; shipping them lets an installed
package answer without a checkout of the course. ``tests/test_ask.py``
fails when the pages changed and this file was not rewritten.

    .venv/bin/python scripts/ask_corpus.py
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from llmsforme.apps.ask.corpus import REPOSITORY, load_corpus

TARGET = REPOSITORY / "llmsforme" / "data" / "ask_corpus.jsonl"


def corpus_lines() -> str:
    return "".join(json.dumps(asdict(chunk), ensure_ascii=False) + "\n" for chunk in load_corpus(REPOSITORY))


def main() -> None:
    TARGET.write_text(corpus_lines(), encoding="utf-8")
    print(f"{TARGET.relative_to(Path.cwd()) if TARGET.is_relative_to(Path.cwd()) else TARGET}: "
          f"{len(TARGET.read_text(encoding='utf-8').splitlines())} chunks")


if __name__ == "__main__":
    main()
