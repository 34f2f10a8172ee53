"""Measuring retrieval: hit@k and mean reciprocal rank on a set of questions with known pages.

A question is answered *at rank r* when the r-th retrieved chunk comes
from one of the pages that answer it. **hit@k** is the share of
answerable questions answered within the first k chunks; the **mean
reciprocal rank** (MRR) averages 1/r (0 when not found in the first
``depth`` chunks), so it rewards putting the right page first.

Taught in: [Evaluation](../part-6/evaluation.ipynb); the plan in [From idea to MVP](../part-6/mvp.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .corpus import Chunk
from .retrieve import Retriever

__all__ = ["Question", "RetrievalScores", "load_questions", "quoted_questions", "score_retrieval"]


@dataclass(frozen=True)
class Question:
    """A reader's question and the pages that answer it (none: the course does not)."""

    question: str
    pages: tuple[str, ...]

    @property
    def answerable(self) -> bool:
        return bool(self.pages)


def load_questions(path: str | Path) -> list[Question]:
    """Questions from a JSON Lines file of ``{"question": ..., "pages": [...]}``."""
    questions = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            questions.append(Question(str(row["question"]), tuple(row["pages"])))
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{path}, line {number}: not a question ({error})") from error
    return questions


@dataclass(frozen=True)
class RetrievalScores:
    """hit@1, hit@3, hit@5 and MRR over the answerable questions; the rank of each (0: not found)."""

    method: str
    hit_at: dict[int, float]
    mrr: float
    ranks: tuple[int, ...]


def score_retrieval(
    retriever: Retriever, questions: Sequence[Question], *, method: str, depth: int = 10
) -> RetrievalScores:
    """Score one retrieval method on the answerable questions."""
    answerable = [q for q in questions if q.answerable]
    if not answerable:
        raise ValueError("no answerable question to score")
    ranks = []
    for question in answerable:
        hits = retriever.search(question.question, k=depth, method=method)
        rank = next((hit.rank for hit in hits if hit.chunk.page in question.pages), 0)
        ranks.append(rank)
    hit_at = {k: sum(1 for r in ranks if 0 < r <= k) / len(ranks) for k in (1, 3, 5)}
    mrr = sum(1 / r for r in ranks if r) / len(ranks)
    return RetrievalScores(method, hit_at, mrr, tuple(ranks))


def _plain(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def quoted_questions(chunks: Iterable[Chunk], questions: Iterable[Question]) -> list[tuple[str, str]]:
    """``(question, url)`` for every question found word for word in a chunk (case and spacing aside).

    An evaluation question quoted on a page would find its own quote: the
    measurement would be contaminated. The corpus must give an empty list.

    Example::

        >>> from llmsforme.apps.ask.corpus import Chunk
        >>> page = Chunk("p/", "a", "Page", "A", 'ask("What is  TOP-P?")', "p.md")
        >>> quoted_questions([page], [Question("What is top-p?", ("p/",)), Question("Why?", ())])
        [('What is top-p?', 'p/#a')]
    """
    texts = [(chunk.url, _plain(chunk.text)) for chunk in chunks]
    return [
        (question.question, url)
        for question in questions
        for url, text in texts
        if _plain(question.question) in text
    ]
