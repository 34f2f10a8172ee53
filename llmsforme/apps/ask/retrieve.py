"""Finding the chunks that answer a question: by meaning, by keywords, or both.

- **vector** search embeds the question with the same model as the
  chunks and ranks them by cosine similarity, in DuckDB
  (``array_cosine_similarity``);
- **keyword** search ranks them by BM25 in SQLite's FTS5, on the words
  of the question (common words such as "how" or "the" left out);
- **hybrid** search, the default, merges four rankings by reciprocal
  rank fusion (Cormack et al., 2009), where each chunk scores
  ``1 / (60 + rank)`` in each list: the vector search's, the keyword
  search's, the chunks ranked by how close their *page's* summary is
  to the question (:func:`.corpus.page_summaries`), and the chunks ranked
  by how close the closest *glossary term* that links to their page is
  (:func:`.corpus.load_glossary`: everyday words such as "the randomness
  dial" lead to the page on temperature). It then keeps the best chunk of
  each page, so that the sources are different pages.

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

__all__ = ["DEFAULT_METHOD", "METHODS", "STOP_WORDS", "Hit", "Retriever", "keyword_query"]

METHODS = ("vector", "keyword", "hybrid")
"""The three searches: by meaning (vectors), by words (BM25), and both fused."""
DEFAULT_METHOD = "hybrid"
"""The default: hybrid search had the best hit@3 on the paraphrased dev question set, and the
glossary's list, when it was added, raised it there from 0.795 to 0.897 (Part 6's Evaluation page
measures all three methods on every set, as the pages are now)."""
#: Reciprocal rank fusion's constant, as in Cormack et al. (2009).
FUSION_K = 60
MAX_QUESTION_CHARS = 2000
#: How deep each list of the hybrid search goes before the fusion.
POOL = 50
STOP_WORDS = frozenset(
    "a an and are as at be but by can could did do does doing for from get got has have how i if in into is it "
    "its just like make me my of on or should so than that the their them then there these they this to was "
    "what when where which who why will with would you your".split()
)
"""Words too common to say what a question is about: the keyword search skips them."""


@dataclass(frozen=True)
class Hit:
    """A retrieved chunk, its score (higher is better) and its rank (1 is first)."""

    chunk: Chunk
    score: float
    rank: int


def keyword_query(question: str) -> str:
    """An FTS5 query that matches any word of the question but the :data:`STOP_WORDS`
    (each quoted: no FTS5 syntax gets through).

    Example::

        >>> keyword_query('How does top-p differ from "top-k"?')
        '"top" OR "p" OR "differ" OR "top" OR "k"'
    """
    words = [word for word in re.findall(r"\w+", question.lower()) if word not in STOP_WORDS]
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
        pages, self._page_vectors = index.page_vectors()
        row_of = {page: row for row, page in enumerate(pages)}
        self._page_of = [row_of[chunk.page] for chunk in index.chunks]  # chunk -> its page's row
        self._term_vectors = index.term_vectors()

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

    def _by_page(self, vector: Sequence[float], similarities: dict[int, float], k: int) -> list[tuple[int, float]]:
        """Chunks ranked by their page summary's similarity to ``vector``, then by their own."""
        import numpy as np

        pages = self._page_vectors @ np.asarray(vector, dtype=np.float32)
        ranked = sorted(similarities, key=lambda i: (-float(pages[self._page_of[i]]), -similarities[i], i))
        return [(i, float(pages[self._page_of[i]])) for i in ranked[:k]]

    def _by_term(self, vector: Sequence[float], similarities: dict[int, float], k: int) -> list[tuple[int, float]]:
        """Chunks ranked by the closest glossary term that links to their page, then by their own
        similarity; chunks of pages no term links to are left out."""
        import numpy as np

        if not len(self._term_vectors):
            return []
        closeness = self._term_vectors @ np.asarray(vector, dtype=np.float32)
        best: dict[str, float] = {}
        for term, score in zip(self.index.terms, closeness.tolist()):
            for page in term.pages:
                best[page] = max(best.get(page, -1.0), score)
        linked = [i for i in similarities if self.index.chunks[i].page in best]
        ranked = sorted(linked, key=lambda i: (-best[self.index.chunks[i].page], -similarities[i], i))
        return [(i, best[self.index.chunks[i].page]) for i in ranked[:k]]

    def _hybrid(self, question: str, k: int) -> list[tuple[int, float]]:
        vector = self.embed(question)
        every = dict(self.nearest(vector, len(self.index.chunks)))  # a few hundred rows: cheap
        by_vector = sorted(every, key=lambda i: (-every[i], i))[:POOL]
        fused: dict[int, float] = {}
        for results in (by_vector, [i for i, _ in self._by_page(vector, every, POOL)],
                        [i for i, _ in self._by_term(vector, every, POOL)],
                        [i for i, _ in self._keyword(question, POOL)]):
            for rank, i in enumerate(results, start=1):
                fused[i] = fused.get(i, 0.0) + 1 / (FUSION_K + rank)
        best, pages = [], set()
        for i, score in sorted(fused.items(), key=lambda item: (-item[1], item[0])):
            if self.index.chunks[i].page not in pages:  # one section per page
                pages.add(self.index.chunks[i].page)
                best.append((i, score))
        return best[:k]

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
            ranked = self._hybrid(question, k)
        return [Hit(self.index.chunks[i], score, rank) for rank, (i, score) in enumerate(ranked, start=1)]
