"""Logits processors: small pure functions that reshape a next-token distribution.

Each takes a tensor of scores (logits, shape ``[..., vocab]``) and returns a new
tensor; removed tokens get ``-inf`` so that softmax gives them probability 0.
The semantics, tie rules and order are those of Hugging Face transformers
(``TemperatureLogitsWarper``, ``TopKLogitsWarper``, ``TopPLogitsWarper``,
``MinPLogitsWarper``): temperature first, then top-k, then top-p, then min-p.

This module imports nothing of the package, only torch.

Taught in: [Temperature](../part-1/temperature.ipynb) and
[Top-k and top-p sampling](../part-1/top-k-top-p.ipynb).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real

import torch

__all__ = [
    "scale_temperature",
    "filter_top_k",
    "filter_top_p",
    "filter_min_p",
    "penalize",
    "warp",
    "check_sampling_args",
]


def _check_temperature(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"temperature must be a number > 0, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"temperature must be a finite number > 0, got {value}. "
            "(T = 0 would divide by zero: for deterministic output use greedy decoding.)"
        )
    return value


def _check_top_k(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"top_k must be an int >= 0 (0 turns it off), got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"top_k must be an int >= 0 (0 turns it off), got {value}")
    return int(value)


def _check_probability(name: str, value: object, low_open: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number in (0, 1], got {type(value).__name__}")
    value = float(value)
    low_ok = value > 0 if low_open else value >= 0
    if not (low_ok and value <= 1):
        interval = "(0, 1]" if low_open else "[0, 1]"
        raise ValueError(f"{name} must be in {interval}, got {value}")
    return value


def check_sampling_args(temperature: object, top_k: object, top_p: object) -> tuple[float, int, float]:
    """Validate the three sampling knobs at once; return them as ``(float, int, float)``."""
    return _check_temperature(temperature), _check_top_k(top_k), _check_probability("top_p", top_p)


def scale_temperature(scores: torch.Tensor, t: float) -> torch.Tensor:
    """Divide the logits by ``t``: ``softmax(scores / t)``.

    ``t < 1`` sharpens the distribution (towards greedy), ``t > 1`` flattens it
    (towards uniform). The most likely token stays the most likely.

    Example:
        >>> p = torch.softmax(scale_temperature(torch.tensor([2.0, 1.0, 0.0]), 0.5), -1)
        >>> [round(x, 3) for x in p.tolist()]
        [0.867, 0.117, 0.016]

    Taught in: [Temperature](../part-1/temperature.ipynb).
    """
    return scores / _check_temperature(t)


def filter_top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` highest-scoring tokens (and any tied with the k-th); ``k = 0`` keeps all.

    Example:
        >>> filter_top_k(torch.tensor([3.0, 1.0, 2.0, 2.0]), 2)
        tensor([3., -inf, 2., 2.])

    Taught in: [Top-k and top-p sampling](../part-1/top-k-top-p.ipynb).
    """
    k = _check_top_k(k)
    if k == 0:
        return scores
    k = min(k, scores.size(-1))
    kth_best = torch.topk(scores, k)[0][..., -1, None]
    return scores.masked_fill(scores < kth_best, -math.inf)


def filter_top_p(scores: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering: keep the most likely tokens until their mass reaches ``p``.

    The token that crosses ``p`` is kept, and so is at least one token. As in
    transformers, tokens are sorted in ascending order and those whose
    cumulative probability is ``<= 1 - p`` are removed.

    Example:
        >>> logits = torch.log(torch.tensor([0.5, 0.3, 0.2]))
        >>> filter_top_p(logits, 0.7).isfinite().tolist()  # 0.5 < 0.7, 0.5 + 0.3 >= 0.7
        [True, True, False]

    Taught in: [Top-k and top-p sampling](../part-1/top-k-top-p.ipynb).
    """
    p = _check_probability("top_p", p)
    if p >= 1.0:
        return scores
    sorted_scores, order = torch.sort(scores, descending=False)
    cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= (1 - p)
    remove_sorted[..., -1:] = False  # always keep the most likely token
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return scores.masked_fill(remove, -math.inf)


def filter_min_p(scores: torch.Tensor, p: float) -> torch.Tensor:
    """Keep tokens whose probability is at least ``p`` times that of the most likely one.

    Example:
        >>> filter_min_p(torch.log(torch.tensor([0.6, 0.3, 0.1])), 0.4).isfinite().tolist()
        [True, True, False]
    """
    p = _check_probability("min_p", p, low_open=False)
    probs = torch.softmax(scores, dim=-1)
    remove = probs < p * probs.amax(dim=-1, keepdim=True)
    remove.scatter_(-1, torch.argmax(probs, dim=-1, keepdim=True), False)
    return scores.masked_fill(remove, -math.inf)


def _check_penalty(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number in [-2, 2], got {type(value).__name__}")
    value = float(value)
    if not -2.0 <= value <= 2.0:
        raise ValueError(f"{name} must be in [-2, 2], got {value}")
    return value


def penalize(
    generated_ids: Sequence[int],
    scores: torch.Tensor,
    *,
    presence_penalty: float = 0.0,
    frequency_penalty: float = 0.0,
) -> torch.Tensor:
    """OpenAI's repetition penalties: lower the logits of tokens already generated.

    For a token generated ``c`` times so far, the logit drops by
    ``c * frequency_penalty + (c > 0) * presence_penalty`` (the formula of
    OpenAI's API reference). The presence penalty is paid once, whatever
    the count: it nudges towards *new* tokens. The frequency penalty grows
    with each repeat: it curbs loops. Negative values encourage repeats.
    Both lie in [-2, 2]; only the generated tokens count, not the prompt.

    The signature ``(generated_ids, scores)`` is that of a decoding step's
    ``logits_processors`` (see :func:`~llmsforme.decoding.greedy`); bind the
    penalties with :func:`functools.partial`.

    Example:
        >>> penalize([0, 0, 2], torch.zeros(4), presence_penalty=0.5, frequency_penalty=0.25)
        tensor([-1.0000,  0.0000, -0.7500,  0.0000])

    Taught in: [Parameters](../part-3/parameters.ipynb).
    """
    presence = _check_penalty("presence_penalty", presence_penalty)
    frequency = _check_penalty("frequency_penalty", frequency_penalty)
    if not generated_ids or (presence == 0.0 and frequency == 0.0):
        return scores
    vocab = scores.size(-1)
    ids = torch.as_tensor(list(generated_ids), dtype=torch.long)
    if bool(((ids < 0) | (ids >= vocab)).any()):
        raise ValueError(f"generated_ids must be token ids in [0, {vocab})")
    counts = torch.bincount(ids, minlength=vocab).to(scores.dtype)
    return scores - counts * frequency - (counts > 0).to(scores.dtype) * presence


def warp(
    scores: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float | None = None,
) -> torch.Tensor:
    """Apply temperature, then top-k, then top-p, then min-p, skipping the neutral ones.

    Neutral values (``temperature=1``, ``top_k=0``, ``top_p=1``, ``min_p=None``)
    are skipped, exactly as transformers builds its list of warpers, so the
    floating-point result is the same as theirs.

    Example:
        >>> logits = torch.log(torch.tensor([0.5, 0.25, 0.15, 0.1]))
        >>> [round(x, 4) for x in torch.softmax(warp(logits, top_k=2), -1).tolist()]
        [0.6667, 0.3333, 0.0, 0.0]

    Taught in: [Temperature and top-p together](../part-1/temperature-and-top-p.ipynb).
    """
    t, k, p = check_sampling_args(temperature, top_k, top_p)
    if t != 1.0:
        scores = scale_temperature(scores, t)
    if k != 0:
        scores = filter_top_k(scores, k)
    if p < 1.0:
        scores = filter_top_p(scores, p)
    if min_p is not None:
        scores = filter_min_p(scores, min_p)
    return scores
