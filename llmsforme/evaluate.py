"""Perplexity: how surprised a model is by a text, on average, per token.

For a text of tokens ``t_1 .. t_n``, the model predicts each token from the
ones before it. Perplexity is the exponential of the mean negative
log-probability of those predictions::

    perplexity = exp( -1/(n-1) * sum_{i=2..n} log P(t_i | t_1 .. t_{i-1}) )

A perplexity of 10 means the model was, on average, as unsure as if it chose
among 10 equally likely tokens. Lower is better; it only compares models
that share a tokenizer, on the same text.

A model sees at most a window of tokens at a time, so a long text is scored
in windows that slide by ``stride`` tokens: each window scores only its
tokens that no earlier window scored, with the rest of the window as
context (the method of Hugging Face's perplexity guide).

Example::

    from llmsforme import load_model
    from llmsforme.evaluate import perplexity

    model, tokenizer = load_model()
    perplexity(model, tokenizer, "The rain in Spain falls mainly in the plain.")

Taught in: [Quantization](../part-2/quantization.ipynb).
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["perplexity"]


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


def perplexity(model: Any, tokenizer: Any, text: str, *, window: int = 512, stride: int = 256) -> float:
    """The perplexity of ``model`` on ``text``, scored in sliding windows.

    Args:
        model: a Hugging Face causal LM.
        tokenizer: its tokenizer; no special tokens are added.
        text: at least two tokens of text.
        window: tokens the model sees at once (at most its context length).
        stride: how far each window moves, 1 to ``window - 1`` (each window
            keeps at least one token of context); a smaller stride gives each
            scored token more context and costs more passes.

    Returns:
        ``exp`` of the mean negative log-likelihood over tokens 2 to n.

    Raises:
        ValueError: for a text of fewer than two tokens, or bad window/stride.

    Taught in: [Quantization](../part-2/quantization.ipynb).
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    window = _positive_int("window", window)
    stride = _positive_int("stride", stride)
    if window < 2:
        raise ValueError(f"window must be at least 2 tokens, got {window}")
    if stride >= window:
        raise ValueError(f"stride must be from 1 to window - 1 ({window - 1}), got {stride}")
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if limit is not None and window > limit:
        raise ValueError(f"window must be at most the model's context, {limit} tokens, got {window}")
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
    n = ids.shape[1]
    if n < 2:
        raise ValueError(f"text must have at least 2 tokens to score, it has {n}")
    device = next(model.parameters()).device
    total, scored = 0.0, 0
    previous_end = 0
    for begin in range(0, n, stride):
        end = min(begin + window, n)
        chunk = ids[:, begin:end].to(device)
        # Score only the tokens this window sees first (the rest is context), from
        # the second token on: position j predicts token j + 1. A log-softmax over
        # those rows alone, not over all 49,152 logits of every position, took the
        # quantization page's perplexity from 15 s to 8.5 s on 2 cores.
        first = max(chunk.shape[1] - (end - previous_end), 1)
        with torch.no_grad():
            logits = model(chunk).logits[0, first - 1 : -1].float()
        targets = chunk[0, first:]
        total -= float(torch.log_softmax(logits, dim=-1).gather(1, targets[:, None]).sum())
        scored += targets.numel()
        previous_end = end
        if end == n:
            break
    return math.exp(total / scored)
