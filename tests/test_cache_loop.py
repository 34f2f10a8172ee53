"""The KV-cache loop gives the tokens of a loop that recomputes everything, and cannot be silently wrong.

A reader copies the package's loop, or runs it on another transformers: the
cache must be used as the loop believes, or the loop must stop. Checked on
the course model against a loop with no cache at all (each step runs the
whole text again), and against two stand-ins for other transformers
versions: one whose forward takes the cache as ``past_key_values``, and one
whose forward ignores it (what transformers 5.17 did with ``cache=``).
"""

from __future__ import annotations

import pytest
import torch

from llmsforme import greedy
from llmsforme.lm import HFLanguageModel, cache_argument

PROMPTS = ["The rain in Spain falls mainly in the", "def fibonacci(n):", "Once upon a time"]
NEW_TOKENS = 16


def no_cache_greedy(model, tokenizer, prompt: str, new_tokens: int) -> list[int]:
    """Greedy decoding the slow way: the whole text through the model at every step."""
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    out = []
    for _ in range(new_tokens):
        with torch.no_grad():
            logits = model(input_ids=ids, use_cache=False).logits[0, -1]
        token = int(logits.argmax())
        out.append(token)
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return out


@pytest.mark.parametrize("prompt", PROMPTS)
def test_cached_loop_equals_a_loop_without_cache(course_model, prompt):
    model, tokenizer = course_model
    ours = greedy(model, prompt, tokenizer=tokenizer, max_new_tokens=NEW_TOKENS, eos_token_id=[])
    assert ours.token_ids == no_cache_greedy(model, tokenizer, prompt, NEW_TOKENS)


class _RenamedCache(torch.nn.Module):
    """The course model behind a forward that takes the cache as ``past_key_values`` (older transformers)."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.config, self.generation_config = inner, inner.config, inner.generation_config

    def forward(self, input_ids=None, position_ids=None, past_key_values=None, use_cache=None, logits_to_keep=0,
                **kwargs):
        return self.inner(input_ids=input_ids, position_ids=position_ids, cache=past_key_values,
                          use_cache=use_cache, logits_to_keep=logits_to_keep)


class _IgnoresCache(_RenamedCache):
    """A forward that swallows the cache argument in **kwargs, as transformers 5.17 did with ``cache=``."""

    def forward(self, input_ids=None, position_ids=None, past_key_values=None, use_cache=None, logits_to_keep=0,
                **kwargs):
        return self.inner(input_ids=input_ids, use_cache=use_cache, logits_to_keep=logits_to_keep)


def test_the_cache_argument_is_read_from_the_signature(course_model):
    model, tokenizer = course_model
    assert cache_argument(model) == "cache"
    renamed = _RenamedCache(model)
    assert cache_argument(renamed) == "past_key_values"
    ours = greedy(renamed, PROMPTS[0], tokenizer=tokenizer, max_new_tokens=NEW_TOKENS, eos_token_id=[])
    assert ours.token_ids == no_cache_greedy(model, tokenizer, PROMPTS[0], NEW_TOKENS)


def test_a_model_that_ignores_the_cache_stops_the_loop(course_model):
    model, tokenizer = course_model
    with pytest.raises(RuntimeError, match="ignored the KV cache"):
        greedy(_IgnoresCache(model), PROMPTS[0], tokenizer=tokenizer, max_new_tokens=4)


def test_a_model_without_a_cache_argument_is_refused(course_model):
    class NoCache(torch.nn.Module):
        def forward(self, input_ids=None):
            return input_ids

    with pytest.raises(TypeError, match="neither 'cache' nor 'past_key_values'"):
        cache_argument(NoCache())
    with pytest.raises(TypeError, match="neither"):
        HFLanguageModel(_NoCacheModel(course_model[0]), course_model[1])


class _NoCacheModel(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.config, self.generation_config = inner, inner.config, inner.generation_config

    def forward(self, input_ids=None):
        return self.inner(input_ids=input_ids)
