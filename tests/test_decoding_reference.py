"""Our decoding loops give the same tokens as transformers' model.generate."""

from __future__ import annotations

import pytest
import torch

from llmsforme import beam_search, greedy, sample

PROMPTS = {
    "spain": "The rain in Spain falls mainly in the",
    "story": "Once upon a time",
}


def _chat_prompt(tokenizer, text="Say hi"):
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )


def _ids(lm, prompt):
    return torch.tensor([lm.encode(prompt)])


@pytest.mark.parametrize("name", ["spain", "story", "chat"])
def test_greedy_matches_generate(course_model, course_lm, name):
    model, tokenizer = course_model
    prompt = _chat_prompt(tokenizer) if name == "chat" else PROMPTS[name]
    ids = _ids(course_lm, prompt)
    max_new = 40 if name == "chat" else 12
    reference = model.generate(ids, max_new_tokens=max_new, do_sample=False)[0, ids.shape[1] :].tolist()
    ours = greedy(course_lm, prompt, max_new_tokens=max_new)
    assert ours.token_ids == reference
    if name == "chat":  # this one must stop on <|im_end|> before the limit
        assert ours.token_ids[-1] == 2 and len(ours.token_ids) < max_new


# An orthogonal array: every pair of (num_beams, length_penalty, early_stopping)
# values appears once, in 9 runs instead of 27.
_LENGTH_PENALTIES = (1.0, 2.0, -1.0)
_EARLY_STOPPING = (False, True, "never")
BEAM_SETTINGS = [
    (num_beams, _LENGTH_PENALTIES[i], _EARLY_STOPPING[(i + j) % 3])
    for j, num_beams in enumerate((2, 3, 4))
    for i in range(3)
]


@pytest.mark.parametrize("num_beams,length_penalty,early_stopping", BEAM_SETTINGS)
def test_beam_search_matches_generate(course_model, course_lm, num_beams, length_penalty, early_stopping):
    model, tokenizer = course_model
    prompt = _chat_prompt(tokenizer, "What is rain?") if num_beams == 3 else PROMPTS["spain"]
    ids = _ids(course_lm, prompt)
    n_return = min(2, num_beams)
    out = model.generate(
        ids,
        max_new_tokens=6,
        num_beams=num_beams,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
        num_return_sequences=n_return,
        do_sample=False,
        return_dict_in_generate=True,
        output_scores=True,
    )
    ours = beam_search(
        course_lm,
        prompt,
        num_beams=num_beams,
        max_new_tokens=6,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
        num_return_sequences=n_return,
    )
    reference = [row[ids.shape[1] :].tolist() for row in out.sequences]
    width = len(reference[0])  # generate pads shorter sequences with the pad token (2)
    assert [s + [2] * (width - len(s)) for s in ours.sequences] == reference
    assert torch.allclose(torch.tensor(ours.scores), out.sequences_scores, atol=1e-5)


def test_beam_search_stops_on_eos_like_generate(course_model, course_lm):
    """A short answer: the beams finish on <|im_end|> long before the limit."""
    model, tokenizer = course_model
    prompt = _chat_prompt(tokenizer, "Reply with one word: yes or no?")
    ids = _ids(course_lm, prompt)
    out = model.generate(ids, max_new_tokens=30, num_beams=2, do_sample=False, return_dict_in_generate=True, output_scores=True)
    ours = beam_search(course_lm, prompt, num_beams=2, max_new_tokens=30)
    assert ours.token_ids[-1] == 2 and len(ours.token_ids) < 30
    assert ours.token_ids == out.sequences[0, ids.shape[1] :].tolist()
    assert abs(ours.score - float(out.sequences_scores[0])) < 1e-5


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("temperature,top_k,top_p", [(0.7, 0, 1.0), (1.3, 20, 0.9), (1.0, 50, 0.8)])
def test_sampling_matches_generate(course_model, course_lm, seed, temperature, top_k, top_p):
    model, _ = course_model
    prompt = PROMPTS["story"]
    ids = _ids(course_lm, prompt)
    torch.manual_seed(seed)
    reference = model.generate(
        ids, max_new_tokens=10, do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p
    )[0, ids.shape[1] :].tolist()
    ours = sample(course_lm, prompt, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, max_new_tokens=10)
    assert ours.token_ids == reference
