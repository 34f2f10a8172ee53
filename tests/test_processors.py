"""Properties of the logits processors, and equality with transformers' warpers."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from llmsforme.processors import filter_min_p, filter_top_k, filter_top_p, scale_temperature, warp

logit_vectors = st.lists(
    st.floats(min_value=-20, max_value=20, allow_nan=False, width=32), min_size=2, max_size=60
).map(lambda xs: torch.tensor(xs, dtype=torch.float32))
distinct_vectors = st.lists(
    st.integers(min_value=-2000, max_value=2000), min_size=2, max_size=60, unique=True
).map(lambda xs: torch.tensor(xs, dtype=torch.float32) / 100)


@given(logit_vectors, st.integers(min_value=1, max_value=80))
def test_top_k_keeps_at_least_k(scores, k):
    kept = filter_top_k(scores, k).isfinite().sum().item()
    assert kept >= min(k, scores.numel())


@given(distinct_vectors, st.integers(min_value=1, max_value=80))
def test_top_k_keeps_exactly_k_without_ties(scores, k):
    kept = filter_top_k(scores, k).isfinite()
    assert kept.sum().item() == min(k, scores.numel())
    assert scores[kept].min() >= scores[~kept].max() if (~kept).any() else True


@given(distinct_vectors, st.floats(min_value=0.01, max_value=1.0))
def test_top_p_keeps_smallest_prefix_reaching_p(scores, p):
    probs = torch.softmax(scores, -1).double()
    kept = filter_top_p(scores, p).isfinite()
    order = torch.argsort(probs, descending=True)
    n = int(kept.sum())
    assert set(order[:n].tolist()) == set(torch.nonzero(kept).flatten().tolist())  # a prefix
    mass = probs[order[:n]].sum().item()
    assert mass >= p - 1e-5  # reaches p ...
    assert n == 1 or mass - probs[order[n - 1]].item() < p + 1e-5  # ... and is the smallest such


@given(logit_vectors, st.floats(min_value=0.05, max_value=10))
def test_temperature_keeps_the_argmax(scores, t):
    scaled = scale_temperature(scores, t)
    assert scaled[torch.argmax(scores)] == scaled.max()


@given(distinct_vectors)
def test_temperature_limits(scores):
    cold = torch.softmax(scale_temperature(scores, 1e-3), -1)
    assert cold[torch.argmax(scores)] > 0.99  # T -> 0: all mass on the argmax
    hot = torch.softmax(scale_temperature(scores, 1e4), -1)
    assert torch.allclose(hot, torch.full_like(hot, 1 / hot.numel()), atol=1e-2)  # T -> inf: uniform


@settings(max_examples=200)
@given(
    logit_vectors,
    st.sampled_from([0.5, 1.0, 1.7]),
    st.sampled_from([0, 1, 3, 10]),
    st.sampled_from([0.3, 0.9, 1.0]),
)
def test_warp_equals_transformers(scores, t, k, p):
    reference = scores[None]
    if t != 1.0:
        reference = TemperatureLogitsWarper(t)(None, reference)
    if k:
        reference = TopKLogitsWarper(k)(None, reference)
    if p < 1.0:
        reference = TopPLogitsWarper(p)(None, reference)
    assert torch.equal(warp(scores[None], temperature=t, top_k=k, top_p=p), reference)


def test_min_p_keeps_tokens_near_the_best():
    scores = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    assert filter_min_p(scores, 0.5).isfinite().tolist() == [True, True, False, False]


@pytest.mark.parametrize(
    "call,error",
    [
        (lambda s: scale_temperature(s, 0), ValueError),
        (lambda s: scale_temperature(s, math.nan), ValueError),
        (lambda s: filter_top_k(s, -1), ValueError),
        (lambda s: filter_top_k(s, True), TypeError),
        (lambda s: filter_top_p(s, 0), ValueError),
        (lambda s: filter_top_p(s, 1.01), ValueError),
        (lambda s: filter_min_p(s, -0.1), ValueError),
    ],
)
def test_processor_bad_values(call, error):
    with pytest.raises(error):
        call(torch.zeros(3))


# --- OpenAI's repetition penalties ------------------------------------------------------


def test_penalize_follows_openais_formula_token_by_token():
    from llmsforme.processors import penalize

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(50, generator=generator)
    generated = torch.randint(0, 50, (30,), generator=generator).tolist()
    out = penalize(generated, logits, presence_penalty=0.7, frequency_penalty=-0.3)
    for token in range(50):
        count = generated.count(token)
        expected = float(logits[token]) - count * -0.3 - (0.7 if count else 0.0)
        assert abs(float(out[token]) - expected) < 1e-6
    assert torch.equal(penalize([], logits, presence_penalty=2.0), logits)  # nothing generated yet


@pytest.mark.parametrize(
    ("options", "error"),
    [({"presence_penalty": 2.5}, ValueError), ({"frequency_penalty": -2.01}, ValueError),
     ({"presence_penalty": "1"}, TypeError), ({"frequency_penalty": True}, TypeError)],
)
def test_penalize_rejects_values_outside_openais_range(options, error):
    from llmsforme.processors import penalize

    with pytest.raises(error, match=r"\[-2, 2\]"):
        penalize([1], torch.zeros(3), **options)


def test_penalize_rejects_token_ids_outside_the_vocabulary():
    from llmsforme.processors import penalize

    with pytest.raises(ValueError, match="generated_ids"):
        penalize([3], torch.zeros(3), presence_penalty=1.0)
