"""The course's worked examples on hand-written probability tables, and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from llmsforme import ToyModel, beam_search, greedy, next_token_table, sample
from llmsforme.examples import BEAM_EXAMPLE, TOP_K_TOP_P_EXAMPLE, top_k_top_p_model


def test_greedy_takes_the_06_branch_and_beam_finds_036():
    toy = ToyModel(BEAM_EXAMPLE)
    prompt = "the"
    g = greedy(toy, prompt)
    b = beam_search(toy, prompt, num_beams=2)
    assert g.text == "plain which"
    assert math.isclose(math.exp(g.score), 0.6 * 0.55, rel_tol=1e-6)  # 0.33
    assert b.text == "meadow where"
    # beam score: mean log-prob over 3 generated tokens (eos has p = 1)
    assert math.isclose(math.exp(b.score * 3), 0.4 * 0.9, rel_tol=1e-5)  # 0.36
    assert 0.4 * 0.9 > 0.6 * 0.55


def test_beam_trace_records_kept_and_dropped():
    toy = ToyModel(BEAM_EXAMPLE)
    result = beam_search(toy, "the", num_beams=2, trace=True)
    second = result.trace[1]
    assert [c.token for c in second.running] == ["where", "which"]
    dropped = [c.token for c in second.candidates if c.status == "dropped"]
    assert dropped == ["and", "and"]


def test_top_k_and_top_p_on_the_sorted_table():
    toy = top_k_top_p_model()
    rows = next_token_table(toy, "the", top=10, top_k=5, top_p=0.8)
    probabilities = [r["probability"] for r in rows]
    assert probabilities == sorted(probabilities, reverse=True)
    assert [r["token"] for r in rows][:3] == ["plain", "meadow", "field"]
    kept_k = {r["token"] for r in rows if r["top_k"]}
    kept_p = {r["token"] for r in rows if r["top_p"]}
    # ties at 0.05 (mountains, afternoon, morning) are all kept by top-k, as in transformers
    assert kept_k == {"plain", "meadow", "field", "mountains", "afternoon", "morning"}
    # top-p keeps a prefix of the sorted table: the smallest one whose mass reaches 0.8
    kept = [r["probability"] for r in rows if r["top_p"]]
    removed = [r["probability"] for r in rows if not r["top_p"]]
    assert {"plain", "meadow", "field"} <= kept_p and min(kept) >= max(removed)
    assert sum(kept) >= 0.8 - 1e-6 and sum(kept) - min(kept) < 0.8 + 1e-6
    # the kept rows come first, even inside the tie at 0.05
    assert [r["top_p"] for r in rows] == sorted((r["top_p"] for r in rows), reverse=True)
    assert [r["top_k"] for r in rows] == sorted((r["top_k"] for r in rows), reverse=True)


def test_renormalised_probabilities_sum_to_one():
    toy = top_k_top_p_model()
    result = sample(toy, "the", top_k=5, top_p=0.8, seed=0, trace=True, trace_top=10, max_new_tokens=1)
    finals = [c.final_probability for c in result.trace[0].candidates]
    assert math.isclose(sum(finals), 1.0, rel_tol=1e-6)
    assert all(c.final_probability == 0 for c in result.trace[0].candidates if c.probability < 0.05)


def test_toy_table_sums_as_given():
    assert math.isclose(sum(TOP_K_TOP_P_EXAMPLE.values()), 1.0)


@pytest.mark.parametrize(
    "table,error,match",
    [
        ({"a": {"b": -0.1, "c": 1.1}}, ValueError, "negative"),
        ({"a": {"b": 0.5, "c": 0.4}}, ValueError, "sum to 1"),
        ({"a": {"b": float("nan")}}, TypeError, "finite"),
        ({}, TypeError, "non-empty"),
        ({"a": {"two words": 1.0}}, ValueError, "single word"),
    ],
)
def test_bad_toy_tables(table, error, match):
    with pytest.raises(error, match=match):
        ToyModel(table)


TOY = ToyModel(BEAM_EXAMPLE)


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda: sample(TOY, "the", temperature=0), ValueError, "temperature"),
        (lambda: sample(TOY, "the", temperature=-1.0), ValueError, "temperature"),
        (lambda: sample(TOY, "the", temperature=float("nan")), ValueError, "temperature"),
        (lambda: sample(TOY, "the", temperature=float("inf")), ValueError, "temperature"),
        (lambda: sample(TOY, "the", temperature="hot"), TypeError, "temperature"),
        (lambda: sample(TOY, "the", top_k=-1), ValueError, "top_k"),
        (lambda: sample(TOY, "the", top_k=2.5), TypeError, "top_k"),
        (lambda: sample(TOY, "the", top_p=0.0), ValueError, r"top_p must be in \(0, 1\]"),
        (lambda: sample(TOY, "the", top_p=1.5), ValueError, "top_p"),
        (lambda: beam_search(TOY, "the", num_beams=0), ValueError, "num_beams"),
        (lambda: beam_search(TOY, "the", num_beams=2, num_return_sequences=3), ValueError, "num_return_sequences"),
        (lambda: beam_search(TOY, "the", early_stopping="sometimes"), ValueError, "early_stopping"),
        (lambda: greedy(TOY, "the", max_new_tokens=0), ValueError, "max_new_tokens"),
        (lambda: greedy(TOY, ""), ValueError, "prompt must not be empty"),
        (lambda: greedy(TOY, []), ValueError, "prompt must not be empty"),
        (lambda: greedy(TOY, "the zebra"), ValueError, "zebra"),
        (lambda: greedy(TOY, [99]), ValueError, "outside"),
        (lambda: greedy(TOY, 3.5), TypeError, "prompt"),
        (lambda: greedy(TOY, "the", eos_token_id=99), ValueError, "eos_token_id"),
        (lambda: greedy(object(), "the"), TypeError, "tokenizer"),
    ],
)
def test_bad_input_is_named(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_sampling_is_repeatable_with_a_seed():
    toy = top_k_top_p_model()
    first = [sample(toy, "the", seed=s, max_new_tokens=1).token_ids for s in range(20)]
    again = [sample(toy, "the", seed=s, max_new_tokens=1).token_ids for s in range(20)]
    assert first == again and len({tuple(x) for x in first}) > 1


def test_greedy_trace_lists_top_candidates():
    toy = top_k_top_p_model()
    result = greedy(toy, "the", trace=True, trace_top=3, max_new_tokens=1)
    step = result.trace[0]
    assert [c.token for c in step.candidates] == ["plain", "meadow", "field"]
    assert step.chosen == toy.encode("plain")[0]
    assert torch.isclose(torch.tensor(step.candidates[0].probability), torch.tensor(0.5))


# --- step hooks: logits processors and on_step ------------------------------------------


def test_a_logits_processor_runs_before_the_choice():
    plain = TOY.encode("plain")[0]

    def ban_plain(generated, scores):
        return scores.masked_fill(torch.arange(scores.numel()) == plain, -math.inf)

    assert greedy(TOY, "the", max_new_tokens=2).text == "plain which"
    assert greedy(TOY, "the", max_new_tokens=2, logits_processors=[ban_plain]).text == "meadow where"
    assert sample(TOY, "the", max_new_tokens=1, seed=0, logits_processors=[ban_plain]).text == "meadow"


def test_on_step_sees_the_models_logits_and_can_stop():
    seen = []

    def on_step(token, logits):
        seen.append((token, torch.softmax(logits, -1)[token].item()))
        return True

    result = greedy(TOY, "the", max_new_tokens=5, on_step=on_step)
    assert result.token_ids == [seen[0][0]] and len(seen) == 1
    assert seen[0][1] == pytest.approx(0.6)


@pytest.mark.parametrize(
    "options",
    [{"logits_processors": "penalize"}, {"logits_processors": [42]}, {"on_step": "stop"}],
)
def test_step_hooks_are_checked(options):
    with pytest.raises(TypeError, match="logits_processors|on_step"):
        greedy(TOY, "the", **options)
    with pytest.raises(TypeError, match="logits_processors|on_step"):
        sample(TOY, "the", **options)
