"""Constrained decoding: the grammar's mask guarantees the format, on every adapter and strategy.

The guarantee is measured on the course model (through llama.cpp, the
fastest adapter here): over 50 seeded cases (5 schemas x 2 prompts x greedy
and 4 sampling seeds), every constrained reply parses and validates with
``jsonschema``; the same cases without the processor fail often, and the
count is printed.
"""

from __future__ import annotations

import json
import math

import jsonschema
import pytest
import torch

from llmsforme import beam_search, greedy, sample
from llmsforme.chat import encode_chat
from llmsforme.constrained import (
    GrammarProcessor,
    allowed_tokens,
    any_json,
    choice,
    json_schema,
    regex,
)
from llmsforme.lm import ToyModel, as_language_model

SCHEMAS = {
    "person": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 16},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "role": {"type": "string", "enum": ["student", "teacher", "admin"]},
        },
        "required": ["name", "age", "role"],
        "additionalProperties": False,
    },
    "book": {  # a nested object
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 16},
            "author": {
                "type": "object",
                "properties": {"first": {"type": "string", "maxLength": 10}, "last": {"type": "string", "maxLength": 10}},
                "required": ["first", "last"],
                "additionalProperties": False,
            },
            "year": {"type": "integer", "minimum": 1400, "maximum": 2100},
        },
        "required": ["title", "author", "year"],
        "additionalProperties": False,
    },
    "review": {  # an array of enums, a bounded number
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"type": "string", "enum": ["fun", "long", "sad", "new"]},
                     "minItems": 1, "maxItems": 3},
            "score": {"type": "number", "minimum": 0, "maximum": 10},
        },
        "required": ["tags", "score"],
        "additionalProperties": False,
    },
    "weather": {  # a boolean, a nullable field, an enum
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 20},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "raining": {"type": "boolean"},
            "note": {"type": ["string", "null"], "maxLength": 20},
        },
        "required": ["city", "unit", "raining", "note"],
        "additionalProperties": False,
    },
    "order": {  # an array of objects, $defs and $ref
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/$defs/item"}, "minItems": 1, "maxItems": 2},
            "express": {"type": "boolean"},
        },
        "required": ["items", "express"],
        "additionalProperties": False,
        "$defs": {
            "item": {
                "type": "object",
                "properties": {"product": {"type": "string", "maxLength": 12},
                               "quantity": {"type": "integer", "minimum": 1, "maximum": 99}},
                "required": ["product", "quantity"],
                "additionalProperties": False,
            }
        },
    },
}
PROMPTS = [
    "Give me an example.",
    "Make up a record about your favourite thing.",
]
SEEDS = [None, 1, 2, 3, 4]  # None: greedy
CASES = [(schema, prompt, seed) for schema in SCHEMAS for prompt in PROMPTS for seed in SEEDS]
MAX_NEW_TOKENS = 64


@pytest.fixture(scope="module")
def llama_lm():
    from llmsforme import load_model

    llama, tokenizer = load_model(backend="llama.cpp", n_threads=2, n_ctx=1024)
    return as_language_model(llama), tokenizer


def _prompt_ids(tokenizer, schema_name: str, prompt: str) -> list[int]:
    # The keys, not the whole schema: a prompt of 30 tokens instead of 170 keeps the test fast.
    keys = ", ".join(SCHEMAS[schema_name]["properties"])
    system = f"Reply with one JSON object only, with the keys {keys}."
    messages = [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
    return encode_chat(tokenizer, messages, add_generation_prompt=True)


def _reply(lm, tokenizer, case, processors) -> str:
    schema_name, prompt, seed = case
    ids = _prompt_ids(tokenizer, schema_name, prompt)
    so_far: list[int] = []

    def hopeless(token: int, logits: torch.Tensor) -> bool:
        # Every schema asks for an object: a reply whose first visible
        # character is not "{" can never validate, so stop it there (it
        # fails either way; this only saves time on the unconstrained runs).
        so_far.append(token)
        text = lm.decode(so_far).lstrip()
        return bool(text) and not text.startswith("{")

    options = {"max_new_tokens": MAX_NEW_TOKENS, "logits_processors": processors, "on_step": hopeless}
    if seed is None:
        generation = greedy(lm, ids, **options)
    else:
        generation = sample(lm, ids, seed=seed, **options)
    return lm.decode([t for t in generation.token_ids if t not in lm.eos_token_ids])


def _problem(text: str, schema: dict) -> str | None:
    """Why ``text`` is not a valid instance of ``schema``, or ``None``."""
    try:
        jsonschema.validate(json.loads(text), schema)
    except (ValueError, jsonschema.ValidationError) as error:
        return f"{type(error).__name__}: {str(error).splitlines()[0][:80]}"
    return None


def test_there_are_at_least_50_cases():
    assert len(CASES) >= 50


def test_every_constrained_reply_parses_and_validates(llama_lm):
    lm, tokenizer = llama_lm
    processors = {name: json_schema(lm, schema) for name, schema in SCHEMAS.items()}
    failures = []
    for case in CASES:
        text = _reply(lm, tokenizer, case, [processors[case[0]]])
        problem = _problem(text, SCHEMAS[case[0]])
        if problem:
            failures.append((case, text, problem))
    print(f"\nconstrained: {len(CASES) - len(failures)}/{len(CASES)} replies parse and validate")
    assert not failures, failures[:3]


def test_the_unconstrained_model_fails_on_the_same_cases(llama_lm):
    lm, tokenizer = llama_lm
    failures = sum(_problem(_reply(lm, tokenizer, case, []), SCHEMAS[case[0]]) is not None for case in CASES)
    print(f"\nunconstrained: {failures}/{len(CASES)} replies fail to parse or validate ({failures / len(CASES):.0%})")
    assert failures > 0


def test_the_mask_after_an_open_string_and_after_a_complete_object(llama_lm):
    lm, _ = llama_lm
    processor = json_schema(lm, SCHEMAS["person"])
    inside = allowed_tokens(processor, lm, '{"name": "', sample=5)
    # Inside a string almost everything may follow, but not a raw newline.
    assert 40_000 < inside.allowed < inside.vocab_size == lm.vocab_size
    assert "\\n" in allowed_tokens(processor, lm, '{"name": "', sample=inside.vocab_size).refused_sample
    # The first key is forced: only tokens that begin '"name"' are allowed.
    start = allowed_tokens(processor, lm, "", sample=50)
    assert start.allowed < 20 and all('"name"'.startswith(t) or t.startswith("{") for t in start.allowed_sample)
    # Complete: only the end token stays.
    done = processor.allowed(lm.encode('{"name": "Ada", "age": 36, "role": "teacher"}'))
    assert torch.nonzero(done).flatten().tolist() == list(lm.eos_token_ids)


def test_the_state_is_keyed_by_prefix_in_any_order(llama_lm):
    lm, _ = llama_lm
    processor = json_schema(lm, SCHEMAS["person"])
    texts = ['{"name": "Ada", "age": 3', '{"name": "Bo', '{"name": "Ada", "age": 36, "ro']
    fresh = [json_schema(lm, SCHEMAS["person"]).allowed(lm.encode(t)) for t in texts]
    for text, expected in zip(texts[::-1] + texts, fresh[::-1] + fresh):
        assert torch.equal(processor.allowed(lm.encode(text)), expected)
    assert processor.allowed(lm.encode('{"nope')) is None  # a refused prefix
    logits = torch.randn(lm.vocab_size)
    assert torch.equal(processor(lm.encode('{"nope'), logits), logits)  # left as it is: its score is -inf already


def test_any_json_regex_and_choice_on_the_course_model(llama_lm):
    lm, tokenizer = llama_lm
    ids = encode_chat(tokenizer, [{"role": "user", "content": "Is this review happy? 'I loved it!'"}],
                      add_generation_prompt=True)
    text = lambda g: lm.decode([t for t in g.token_ids if t not in lm.eos_token_ids])
    assert text(greedy(lm, ids, max_new_tokens=8, logits_processors=[choice(lm, ["happy", "unhappy"])])) in {
        "happy", "unhappy"}
    phone = text(greedy(lm, ids, max_new_tokens=12, logits_processors=[regex(lm, r"[0-9]{3}-[0-9]{4}")]))
    assert len(phone) == 8 and phone[3] == "-" and (phone[:3] + phone[4:]).isdigit()
    anything = text(sample(lm, ids, seed=0, max_new_tokens=48, logits_processors=[any_json(lm, )]))
    assert isinstance(json.loads(anything), dict) if anything.endswith("}") else anything.startswith("{")


def test_beam_search_with_the_processor(llama_lm):
    lm, tokenizer = llama_lm
    ids = encode_chat(tokenizer, [{"role": "user", "content": "Name a colour."}], add_generation_prompt=True)
    options = ["red", "green", "blue", "dark purple"]
    result = beam_search(lm, ids, num_beams=3, num_return_sequences=3, max_new_tokens=6,
                         logits_processors=[choice(lm, options)])
    for sequence in result.sequences:
        assert lm.decode([t for t in sequence if t not in lm.eos_token_ids]) in options
        assert sequence[-1] in lm.eos_token_ids  # each hypothesis ended where the grammar did


def test_the_transformers_adapter(course_lm):
    processor = json_schema(course_lm, SCHEMAS["person"])
    generation = greedy(course_lm, "A person as JSON:", max_new_tokens=40, logits_processors=[processor])
    text = course_lm.decode([t for t in generation.token_ids if t not in course_lm.eos_token_ids])
    assert _problem(text, SCHEMAS["person"]) is None, text


TOY = ToyModel({
    "the": {"plain": 0.6, "meadow": 0.4},
    "the plain": {"which": 0.55, "and": 0.45},
    "the meadow": {"where": 0.9, "and": 0.1},
})


def test_the_toy_model_with_every_strategy():
    assert greedy(TOY, "the").text == "plain which"
    only_meadow = choice(TOY, ["meadow where", "meadow and"])
    assert greedy(TOY, "the", logits_processors=[only_meadow]).text == "meadow where"
    assert sample(TOY, "the", seed=0, logits_processors=[regex(TOY, "plain and|meadow and")]).text.endswith(" and")
    beams = beam_search(TOY, "the", num_beams=2, num_return_sequences=2, logits_processors=[only_meadow])
    assert sorted(TOY.decode(s[:-1]) for s in beams.sequences) == ["meadow and", "meadow where"]
    shown = allowed_tokens(only_meadow, TOY, "")
    assert (shown.allowed, shown.allowed_sample) == (1, ("meadow",))


def test_bad_input_names_the_argument(llama_lm):
    lm, _ = llama_lm
    with pytest.raises(TypeError, match="schema"):
        json_schema(lm, 3)
    with pytest.raises(ValueError, match="schema"):
        json_schema(lm, "{not json")
    with pytest.raises(ValueError, match=r"schema.*Unimplemented keys.*\"if\""):
        json_schema(lm, {"type": "object", "if": {}, "then": {}})
    with pytest.raises(TypeError, match="pattern"):
        regex(lm, "")
    with pytest.raises(ValueError, match="pattern"):
        regex(lm, "([")
    with pytest.raises(TypeError, match="options"):
        choice(lm, "red")
    with pytest.raises(ValueError, match="options"):
        choice(lm, ["red", ""])
    with pytest.raises(TypeError, match="model"):
        any_json(object())
    processor = choice(lm, ["red"])
    with pytest.raises(ValueError, match="logits"):
        processor([], torch.zeros(3))
    with pytest.raises(TypeError, match="processor"):
        allowed_tokens(lambda ids, logits: logits, lm, "")
    with pytest.raises(ValueError, match="text"):
        allowed_tokens(processor, lm, "blue")
    assert isinstance(processor, GrammarProcessor) and "red" in repr(processor)
    assert math.isinf(float(processor([], torch.zeros(lm.vocab_size)).min()))
