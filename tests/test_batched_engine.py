"""The server's engine on the continuous batcher, against its one-at-a-time engine (issue 27).

The HTTP behaviour (streaming, stop strings, logprobs, n, the rate limit, the
error contract) is covered by test_server.py and test_ollama_api.py, which run
against the batched engine, the default. Here: the engine itself.
"""

from __future__ import annotations

import threading

import pytest

from llmsforme.server import Engine
from llmsforme.server.engine import Delta, Finish, Settings

QUESTIONS = [
    "What is the capital of France?",
    "Name three colours.",
    "Say hi.",
    "What is two plus two?",
    "Write a haiku about rain.",
    "Who wrote Hamlet?",
    "Give me a word that rhymes with cat.",
    "What do bees make?",
]


@pytest.fixture(scope="module")
def engines(course_model):
    batched = Engine(*course_model, max_batch=8)
    alone = Engine(*course_model, batching=False)
    yield batched, alone
    batched.close()
    alone.close()


def replies(engine, question, settings, **options):
    """Submit one request; return its future and a function giving the texts and finishes."""
    events = []
    lock = threading.Lock()

    def emit(event):
        with lock:
            events.append(event)

    prompt = engine.prompt([{"role": "user", "content": question}])
    future = engine.submit(prompt, settings, emit, **options)

    def result():
        texts = ["".join(e.text for e in events if isinstance(e, Delta) and e.index == i)
                 for i in range(settings.n)]
        return texts, [(e.finish_reason, e.completion_tokens) for e in events if isinstance(e, Finish)]

    return future, result


def test_the_course_model_batches_by_default(engines, course_model):
    batched, alone = engines
    assert batched.batching and batched.batcher is not None
    assert not alone.batching and alone.batcher is None


def test_eight_concurrent_greedy_requests_equal_the_one_at_a_time_engine(engines):
    batched, alone = engines
    settings = Settings(max_tokens=12, temperature=0)
    start = len(batched.batcher.trace)
    running = [replies(batched, q, settings) for q in QUESTIONS]
    for future, _ in running:
        future.result(timeout=120)
    together = [result() for _, result in running]
    expected = []
    for q in QUESTIONS:
        future, result = replies(alone, q, settings)
        future.result(timeout=120)
        expected.append(result())
    assert together == expected
    # They did share forward passes: some step ran more than half of them at once.
    assert max(len(r.running) for r in batched.batcher.trace[start:]) > len(QUESTIONS) // 2


def test_seeded_sampling_with_n_replies_equals_the_one_at_a_time_engine(engines):
    """The first reply draws from the seed, the second continues the same stream, beside other requests."""
    batched, alone = engines
    settings = Settings(max_tokens=10, temperature=1.0, top_p=0.9, n=2, seed=7, frequency_penalty=0.5)
    noise = [replies(batched, q, Settings(max_tokens=10, temperature=1.0)) for q in QUESTIONS[:3]]
    future, result = replies(batched, "Tell me a story.", settings)
    future.result(timeout=120)
    for other, _ in noise:
        other.result(timeout=120)
    expected_future, expected = replies(alone, "Tell me a story.", settings)
    expected_future.result(timeout=120)
    assert result() == expected()
    assert result()[0][0] != result()[0][1]  # the two replies differ


def test_stop_strings_and_logprobs_match_the_one_at_a_time_engine(engines):
    batched, alone = engines
    settings = Settings(max_tokens=20, temperature=0, stop=("Paris",), logprobs=True, top_logprobs=2)
    seen = {}
    for name, engine in (("batched", batched), ("alone", alone)):
        events = []
        prompt = engine.prompt([{"role": "user", "content": QUESTIONS[0]}])
        engine.submit(prompt, settings, events.append).result(timeout=120)
        seen[name] = [(type(e).__name__, getattr(e, "text", None), getattr(e, "finish_reason", None),
                       [(p.token, round(p.logprob, 3), [t for t, _, _ in p.top]) for p in e.logprobs])
                      for e in events]
    assert seen["batched"] == seen["alone"]
    assert seen["batched"][-1][2] == "stop"


def test_a_waiting_request_can_be_cancelled(course_model):
    engine = Engine(*course_model, max_batch=1)
    try:
        first, _ = replies(engine, QUESTIONS[0], Settings(max_tokens=30, temperature=0))
        cancelled = threading.Event()
        cancelled.set()
        second, result = replies(engine, QUESTIONS[1], Settings(max_tokens=30, temperature=0), cancelled=cancelled,
                                 request_id="gone")
        assert second.result(timeout=120) == 0
        assert result() == ([""], [])  # no events for a request that never ran
        assert first.result(timeout=120) > 0
        record = next(r for r in engine.history if r.request_id == "gone")
        assert record.cancelled and record.completion_tokens == 0
    finally:
        engine.close()


def test_a_failing_constraint_fails_its_request_alone(engines):
    batched, _ = engines

    def broken(generated, scores):
        raise RuntimeError("this processor is broken")

    bad, _ = replies(batched, QUESTIONS[0], Settings(max_tokens=8, temperature=0, constraint=broken))
    good, result = replies(batched, QUESTIONS[1], Settings(max_tokens=8, temperature=0))
    with pytest.raises(RuntimeError, match="broken"):
        bad.result(timeout=120)
    assert good.result(timeout=120) == 8
    assert result()[1] == [("length", 8)]


def test_a_short_request_is_not_starved_by_long_ones(course_model):
    """Seven long requests run; a short one arriving later joins at the next step, not after them."""
    engine = Engine(*course_model, max_batch=8)
    try:
        topics = ["a dragon", "the sea", "a robot", "a city", "a garden", "the moon", "a train"]
        long = [replies(engine, f"Tell me a long story about {t}.", Settings(max_tokens=60, temperature=0))[0]
                for t in topics]
        while not any(len(r.running) == 7 for r in engine.batcher.trace):
            threading.Event().wait(0.01)
        arrived = len(engine.batcher.trace)
        short, _ = replies(engine, QUESTIONS[2], Settings(max_tokens=4, temperature=0))
        assert short.result(timeout=120) == 4
        joined = next(r.index for r in engine.batcher.trace if 7 in r.joined)
        assert joined - arrived <= 2  # it joined at the next step, or the one after
        assert not all(f.done() for f in long)  # it did not wait for the long ones to finish
        for f in long:
            f.result(timeout=120)
    finally:
        engine.close()


def test_the_kv_budget_makes_requests_wait_not_fail(course_model):
    """Three requests of which two fit the KV budget: the third waits until they are gone."""
    engine = Engine(*course_model, max_batch=8, max_cache_tokens=8192)
    try:
        settings = Settings(max_tokens=4096 - 40, temperature=0)  # two fit in 8,192 positions, not three
        stops = [threading.Event() for _ in range(3)]
        futures = [replies(engine, "Hi", settings, cancelled=stop)[0] for stop in stops]
        while len(engine.batcher.trace) < 8:
            threading.Event().wait(0.01)
        assert max(len(r.running) for r in engine.batcher.trace) == 2
        for stop in stops:
            stop.set()
        assert all(future.result(timeout=120) >= 0 for future in futures)
    finally:
        engine.close()


def test_bad_settings_are_rejected(course_model):
    with pytest.raises(TypeError, match="batching must be True or False"):
        Engine(*course_model, batching="yes")
    with pytest.raises(ValueError, match="max_batch must be an int >= 1"):
        Engine(*course_model, max_batch=0)
    with pytest.raises(ValueError, match="max_cache_tokens must be at least the context window"):
        Engine(*course_model, max_cache_tokens=10)


def test_close_cancels_what_waits_and_refuses_new_requests(course_model):
    engine = Engine(*course_model, max_batch=1)
    first, _ = replies(engine, QUESTIONS[0], Settings(max_tokens=5, temperature=0))
    waiting = [replies(engine, q, Settings(max_tokens=5, temperature=0))[0] for q in QUESTIONS[1:4]]
    engine.close()
    assert first.result(timeout=1) >= 0
    assert all(f.done() for f in waiting)
    with pytest.raises(RuntimeError, match="closed"):
        replies(engine, QUESTIONS[0], Settings(max_tokens=5, temperature=0))
