"""Continuous batching against the package's one-at-a-time strategies (issue 27's exactness bar)."""

from __future__ import annotations

import functools

import pytest
import torch

from llmsforme import greedy, sample
from llmsforme.batching import BatchRequest, ContinuousBatcher
from llmsforme.processors import penalize

PROMPTS = [
    "The rain in Spain falls mainly in the",
    "Once upon a time, in a small village by the sea, there lived an old fisherman who",
    "def fibonacci(n):",
    "The capital of France is",
    "Water boils at",
    "A large language model is a neural network that has been trained on a great deal of text, and it",
    "My favourite food is",
    "In 1969, astronauts",
    "The three primary colours are",
]
END = 2  # <|im_end|>; the base prompts above rarely reach it, so most run to their limit


@pytest.fixture(scope="module")
def lm(course_lm):
    return course_lm


def alone(lm, prompt, **options):
    return greedy(lm, prompt, eos_token_id=[END], **options).sequences[0]


def test_greedy_requests_joining_at_different_times_equal_greedy_alone(lm):
    """Eight prompts of 4 to 20 tokens, 4 to 11 new tokens each, arriving over the first steps, four at a time."""
    batcher = ContinuousBatcher(lm, max_batch=4)
    requests, arrivals = [], {0: [0, 1, 2], 1: [3], 2: [4, 5], 4: [6, 7]}
    step = 0
    while step < 5 or not batcher.idle:
        for i in arrivals.get(step, []):
            requests.append((i, batcher.submit(BatchRequest(lm.encode(PROMPTS[i]), max_new_tokens=4 + i,
                                                            eos_token_ids=[END]))))
        if not batcher.idle:
            batcher.step()
        step += 1
    assert max(len(record.running) for record in batcher.trace) == 4  # the batch filled up, others waited
    assert any(record.joined and record.left for record in batcher.trace)  # one left as another joined
    for i, request in requests:
        assert request.generated == alone(lm, PROMPTS[i], max_new_tokens=4 + i), PROMPTS[i]
        assert request.finish_reason in ("stop", "length")


def test_batched_logits_stay_close_to_the_unbatched(lm):
    """Padding and a batched matmul change the float result a little: measure it, and keep it small."""
    prompts = [lm.encode(p) for p in PROMPTS[:3]]
    seen: dict[int, list[torch.Tensor]] = {i: [] for i in range(3)}
    batcher = ContinuousBatcher(lm, max_batch=4)
    for i, ids in enumerate(prompts):
        batcher.submit(BatchRequest(ids, max_new_tokens=6,
                                    on_step=lambda token, logits, i=i: seen[i].append(logits.clone())))
    batcher.run()
    worst = 0.0
    for i, ids in enumerate(prompts):
        single = []
        greedy(lm, ids, max_new_tokens=6, eos_token_id=[], on_step=lambda t, logits: single.append(logits.clone()))
        for ours, theirs in zip(seen[i], single):
            worst = max(worst, float((ours - theirs).abs().max()))
    assert worst < 1e-3, worst


def test_seeded_sampling_equals_sample_alone_in_any_batch(lm):
    settings = {"temperature": 0.9, "top_k": 40, "top_p": 0.95}
    batcher = ContinuousBatcher(lm, max_batch=4)
    sampled = [batcher.submit(BatchRequest(lm.encode(PROMPTS[i]), max_new_tokens=6, seed=i, **settings))
               for i in range(2)]
    batcher.submit(BatchRequest(lm.encode(PROMPTS[3]), max_new_tokens=6))  # a greedy neighbour
    batcher.run()
    for i, request in enumerate(sampled):
        assert request.generated == sample(lm, PROMPTS[i], max_new_tokens=6, seed=i, eos_token_id=[],
                                           **settings).sequences[0]


def test_each_request_keeps_its_own_processors_and_stop(lm):
    penalty = functools.partial(penalize, presence_penalty=1.5, frequency_penalty=0.5)
    stops: list[int] = []
    batcher = ContinuousBatcher(lm, max_batch=4)
    penalised = batcher.submit(BatchRequest(lm.encode(PROMPTS[0]), max_new_tokens=12, logits_processors=[penalty]))
    stopped = batcher.submit(BatchRequest(lm.encode(PROMPTS[1]), max_new_tokens=12,
                                          on_step=lambda token, logits: len(stops.append(token) or stops) == 3))
    plain = batcher.submit(BatchRequest(lm.encode(PROMPTS[0]), max_new_tokens=12))
    batcher.run()
    assert penalised.generated == greedy(lm, PROMPTS[0], max_new_tokens=12, eos_token_id=[],
                                         logits_processors=[penalty]).sequences[0]
    assert penalised.generated != plain.generated
    assert len(stopped.generated) == 3 and stopped.finish_reason == "stop"
    assert plain.generated == alone(lm, PROMPTS[0], max_new_tokens=12)


def test_the_batch_and_the_cache_budget_are_limits_that_make_requests_wait(lm):
    budget = 3 * (len(lm.encode(PROMPTS[0])) + 4)
    batcher = ContinuousBatcher(lm, max_batch=2, max_cache_tokens=budget)
    requests = [batcher.submit(BatchRequest(lm.encode(PROMPTS[0]), max_new_tokens=4)) for _ in range(5)]
    batcher.run()
    assert max(len(record.running) for record in batcher.trace) == 2
    assert all(r.generated == requests[0].generated for r in requests)  # everyone got served
    small = ContinuousBatcher(lm, max_batch=4, max_cache_tokens=2 * (len(lm.encode(PROMPTS[0])) + 4))
    for _ in range(4):
        small.submit(BatchRequest(lm.encode(PROMPTS[0]), max_new_tokens=4))
    small.run()
    assert max(len(record.running) for record in small.trace) == 2  # the cache, not max_batch, limited it


def test_cancelled_requests_leave_and_free_their_place(lm):
    batcher = ContinuousBatcher(lm, max_batch=1)
    first = batcher.submit(BatchRequest(lm.encode(PROMPTS[0]), max_new_tokens=50))
    second = batcher.submit(BatchRequest(lm.encode(PROMPTS[3]), max_new_tokens=3))
    batcher.step()
    batcher.step()
    first.cancelled = True
    batcher.run()
    assert first.finish_reason == "cancelled" and len(first.generated) == 2
    assert second.generated == alone(lm, PROMPTS[3], max_new_tokens=3)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"prompt_ids": []}, "prompt_ids"),
        ({"prompt_ids": [10**9]}, "prompt_ids"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"temperature": -1}, "temperature"),
        ({"max_new_tokens": 10_000}, "cache positions"),
    ],
)
def test_bad_requests_are_refused_by_name(lm, options, message):
    batcher = ContinuousBatcher(lm, max_cache_tokens=1000)
    with pytest.raises(ValueError, match=message):
        batcher.submit(BatchRequest(**{"prompt_ids": [1, 2], "max_new_tokens": 4, **options}))
    with pytest.raises(ValueError, match="max_batch"):
        ContinuousBatcher(lm, max_batch=0)
    with pytest.raises(TypeError, match="BatchRequest"):
        batcher.submit({"prompt_ids": [1]})
