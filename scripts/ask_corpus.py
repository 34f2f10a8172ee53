"""Write the course's pages, cut into chunks, into the package (``llmsforme/data/ask_corpus.jsonl``),
the glossary's terms beside them (``ask_glossary.jsonl``), and their embeddings
(``ask_vectors.npy``, with what they were made for in ``ask_vectors.json``: about a minute).

"Ask the course" searches these chunks; shipping them lets an installed
package answer without a checkout of the course. ``tests/test_ask.py``
fails when the pages changed and these files were not rewritten.

    .venv/bin/python scripts/ask_corpus.py
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from llmsforme.apps.ask.corpus import REPOSITORY, corpus_hash, load_corpus, load_glossary
from llmsforme.apps.ask.index import EMBEDDING_MODEL, SHIPPED_VECTORS, SHIPPED_VECTORS_ABOUT, embed_texts, index_texts

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
    chunks, terms = load_corpus(), load_glossary()  # the files just written, read back as the package reads them
    vectors = embed_texts(index_texts(chunks, terms), progress=True)
    np.save(TARGET.with_name(SHIPPED_VECTORS), vectors.astype(np.float32), allow_pickle=False)
    about = {"corpus": corpus_hash(chunks, terms), "model": EMBEDDING_MODEL, "rows": len(vectors),
             "made_by": "scripts/ask_corpus.py"}
    TARGET.with_name(SHIPPED_VECTORS_ABOUT).write_text(json.dumps(about, indent=2) + "\n", encoding="utf-8")
    print(f"{SHIPPED_VECTORS}: {len(vectors)} vectors of {vectors.shape[1]}")


if __name__ == "__main__":
    main()
