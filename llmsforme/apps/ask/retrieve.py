"""Finding the chunks that answer a question: by meaning, by keywords, or both.

- **vector** search embeds the question with the same model as the
  chunks and ranks them by cosine similarity, in DuckDB
  (``array_cosine_similarity``);
- **keyword** search ranks them by BM25 in SQLite's FTS5, on the words
  of the question;
- **hybrid** search merges the two rankings by reciprocal rank fusion
  (Cormack et al., 2009): each chunk scores ``1 / (60 + rank)`` in each list.

Taught in: [Embeddings and retrieval](../part-6/embeddings.ipynb); the plan in [From idea to MVP](../part-6/mvp.md).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .corpus import Chunk
from .index import DIMENSIONS, Index, embedding_model

__all__ = ["DEFAULT_METHOD", "METHODS", "Hit", "Retriever", "keyword_query"]

METHODS = ("vector", "keyword", "hybrid")
#: The default: vector search had the best hit@1 and MRR on the course's
#: question set (``tests/test_ask.py`` measures all three).
DEFAULT_METHOD = "vector"
#: Reciprocal rank fusion's constant, as in Cormack et al. (2009).
FUSION_K = 60
MAX_QUESTION_CHARS = 2000


@dataclass(frozen=True)
class Hit:
    """A retrieved chunk, its score (higher is better) and its rank (1 is first)."""

    chunk: Chunk
    score: float
    rank: int


def keyword_query(question: str) -> str:
    """An FTS5 query that matches any word of the question (quoted: no FTS5 syntax gets through).

    Example::

        >>> keyword_query('How does top-p differ from "top-k"?')
        '"how" OR "does" OR "top" OR "p" OR "differ" OR "from" OR "top" OR "k"'
    """
    words = re.findall(r"\w+", question.lower())
    return " OR ".join(f'"{word}"' for word in words)


def _check(question: Any, k: Any) -> str:
    if not isinstance(question, str):
        raise TypeError(f"question must be a str, got {type(question).__name__}")
    question = question.strip()
    if not question:
        raise ValueError("question is empty")
    if len(question) > MAX_QUESTION_CHARS:
        raise ValueError(f"question is {len(question):,} characters long; the limit is {MAX_QUESTION_CHARS:,}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 50:
        raise ValueError(f"k must be an int in [1, 50], got {k!r}")
    return question


class Retriever:
    """Search an :class:`~llmsforme.apps.ask.index.Index` three ways.

    Example::

        retriever = Retriever(index)
        for hit in retriever.search("How does top-p differ from top-k?", k=3):
            print(hit.rank, hit.chunk.url)
    """

    def __init__(self, index: Index, *, model: Any = None) -> None:
        import duckdb

        self.index = index
        self.model = model or embedding_model()
        self._vectors = duckdb.connect(str(index.vectors_path), read_only=True)
        self._keywords = sqlite3.connect(f"file:{index.keywords_path}?mode=ro", uri=True, check_same_thread=False)

    def close(self) -> None:
        self._vectors.close()
        self._keywords.close()

    def __enter__(self) -> Retriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def embed(self, question: str) -> list[float]:
        """The question's vector: 384 numbers of length 1, from the model that embedded the chunks."""
        return self.model.encode(question, normalize_embeddings=True).tolist()

    def nearest(self, vector: Sequence[float], k: int) -> list[tuple[int, float]]:
        """The ``k`` chunks closest to ``vector`` by cosine similarity: (row, similarity), best first."""
        if len(vector) != DIMENSIONS:
            raise ValueError(f"vector must have {DIMENSIONS} numbers, got {len(vector)}")
        rows = self._vectors.execute(
            f"SELECT id, array_cosine_similarity(embedding, ?::FLOAT[{DIMENSIONS}]) AS score "
            "FROM chunks ORDER BY score DESC, id LIMIT ?",
            [list(vector), k],
        ).fetchall()
        return [(int(i), float(score)) for i, score in rows]

    def _vector(self, question: str, k: int) -> list[tuple[int, float]]:
        return self.nearest(self.embed(question), k)

    def _keyword(self, question: str, k: int) -> list[tuple[int, float]]:
        query = keyword_query(question)
        if not query:
            return []
        rows = self._keywords.execute(
            "SELECT rowid, bm25(chunks) AS rank FROM chunks WHERE chunks MATCH ? ORDER BY rank, rowid LIMIT ?",
            (query, k),
        ).fetchall()
        return [(int(i), -float(rank)) for i, rank in rows]  # FTS5's bm25 is lower for better matches

    def search(self, question: str, k: int = 3, *, method: str = DEFAULT_METHOD) -> list[Hit]:
        """The ``k`` best chunks for ``question``, best first."""
        question = _check(question, k)
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if method == "vector":
            ranked = self._vector(question, k)
        elif method == "keyword":
            ranked = self._keyword(question, k)
        else:
            pool = max(k, 50)
            fused: dict[int, float] = {}
            for results in (self._vector(question, pool), self._keyword(question, pool)):
                for rank, (i, _) in enumerate(results, start=1):
                    fused[i] = fused.get(i, 0.0) + 1 / (FUSION_K + rank)
            ranked = sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:k]
        return [Hit(self.index.chunks[i], score, rank) for rank, (i, score) in enumerate(ranked, start=1)]
