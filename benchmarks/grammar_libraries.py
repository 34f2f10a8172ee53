"""Which library should turn a grammar into a token mask? llguidance, xgrammar and outlines-core, measured.

On the course model's tokenizer (SmolLM2-135M-Instruct, 49,152 tokens), for
each library that is installed:

* what it supports: a JSON Schema of the subset OpenAI's strict mode accepts
  (nested objects, ``$defs``/``$ref``, ``anyOf``, enums, arrays, a nullable
  type, ``additionalProperties: false``), any JSON, a regular expression, and
  a choice among strings;
* the time to build its view of the vocabulary (once per tokenizer);
* the time to compile that JSON Schema (cold: no cache);
* the time per token to compute the mask and advance, over a fixed valid
  reply of the schema (the tokens a model would generate).

Each round times the vocabulary once, and the compile and the walk
``REPEATS`` times (their mean: one run of a few milliseconds is too short to
time alone).

Rounds are interleaved (each round runs every library once), at least 7;
medians and spreads ((max - min) / median) are printed, with a warning when a
spread passes 10 %. Each library runs on one thread, as in the package.

    .venv/bin/python benchmarks/grammar_libraries.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

from rounds import NOISY, add_rounds, check_rounds, median_spread

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "role": {"type": "string", "enum": ["student", "teacher", "admin"]},
        "email": {"type": ["string", "null"]},
        "address": {"$ref": "#/$defs/address"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "contact": {
            "anyOf": [
                {"type": "object", "properties": {"phone": {"type": "string"}}, "required": ["phone"],
                 "additionalProperties": False},
                {"type": "object", "properties": {"fax": {"type": "string"}}, "required": ["fax"],
                 "additionalProperties": False},
            ]
        },
    },
    "required": ["name", "age", "role", "email", "address", "tags", "contact"],
    "additionalProperties": False,
    "$defs": {
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
            "required": ["city", "zip"],
            "additionalProperties": False,
        }
    },
}
REPLY = json.dumps(
    {
        "name": "Ada Lovelace",
        "age": 36,
        "role": "teacher",
        "email": None,
        "address": {"city": "London", "zip": "W1"},
        "tags": ["maths", "engines", "poetry"],
        "contact": {"phone": "+44 20 7946 0000"},
    }
)
REGEX = r"[0-9]{3}-[0-9]{4}"
CHOICES = ["positive", "negative", "neutral"]
REPEATS = 5  # compiles and walks per round, averaged: one 5 ms run is too short to time alone



def _bytes_of_tokens(tokenizer: Any) -> list[bytes]:
    """Each token's bytes (byte-level BPE writes bytes as printable characters)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    byte_of = {chr(c): b for b, c in zip(printable, codes)}
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    special = set(tokenizer.all_special_tokens)
    return [t.encode() if t in special else bytes(byte_of[ch] for ch in t) for t in tokens]


class Candidate:
    """One library behind four small operations, so that all are timed alike."""

    name: str
    package: str

    def vocabulary(self, tokenizer: Any) -> None: ...
    def compile_schema(self, schema: dict) -> Any: ...
    def compile_any_json(self) -> Any: ...
    def compile_regex(self, regex: str) -> Any: ...
    def compile_choice(self, choices: list[str]) -> Any: ...
    def walk(self, compiled: Any, tokens: list[int]) -> int:
        """Compute the mask before each token, check the token is allowed, advance; tokens walked."""


class LLGuidance(Candidate):
    name, package = "llguidance", "llguidance"

    def vocabulary(self, tokenizer: Any) -> None:
        import llguidance.hf

        self.tokenizer = llguidance.hf.from_tokenizer(tokenizer)

    def _matcher(self, grammar: str) -> Any:
        import llguidance

        matcher = llguidance.LLMatcher(self.tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise ValueError(matcher.get_error())
        return matcher

    def compile_schema(self, schema: dict) -> Any:
        import llguidance

        options = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
        return self._matcher(llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=options))

    def compile_any_json(self) -> Any:
        return self.compile_schema({})

    def compile_regex(self, regex: str) -> Any:
        import llguidance

        return self._matcher(llguidance.LLMatcher.grammar_from_regex(regex))

    def compile_choice(self, choices: list[str]) -> Any:
        import llguidance

        return self._matcher(llguidance.LLMatcher.grammar_from_lark("start: " + " | ".join(json.dumps(c) for c in choices)))

    def walk(self, compiled: Any, tokens: list[int]) -> int:
        import numpy as np

        matcher = compiled.deep_copy()
        bitmask = np.zeros((self.tokenizer.vocab_size + 31) // 32, dtype=np.int32)  # as xgrammar's
        for token in tokens:
            matcher.unsafe_compute_mask_ptr(bitmask.ctypes.data, bitmask.nbytes)
            if not (int(bitmask[token // 32]) >> (token % 32)) & 1 or not matcher.consume_token(token):
                raise AssertionError(f"llguidance refused token {token}")
        return len(tokens)


class XGrammar(Candidate):
    name, package = "xgrammar", "xgrammar"

    def vocabulary(self, tokenizer: Any) -> None:
        import xgrammar

        self.info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=len(tokenizer))

    def _compiler(self) -> Any:
        import xgrammar

        return xgrammar.GrammarCompiler(self.info, max_threads=1, cache_enabled=False)

    def compile_schema(self, schema: dict) -> Any:
        return self._compiler().compile_json_schema(json.dumps(schema), any_whitespace=False)

    def compile_any_json(self) -> Any:
        return self._compiler().compile_builtin_json_grammar()

    def compile_regex(self, regex: str) -> Any:
        return self._compiler().compile_regex(regex)

    def compile_choice(self, choices: list[str]) -> Any:
        return self._compiler().compile_grammar("root ::= " + " | ".join(json.dumps(c) for c in choices))

    def walk(self, compiled: Any, tokens: list[int]) -> int:
        import xgrammar

        matcher = xgrammar.GrammarMatcher(compiled)
        bitmask = xgrammar.allocate_token_bitmask(1, self.info.vocab_size)
        for token in tokens:
            matcher.fill_next_token_bitmask(bitmask)
            if not (int(bitmask[0, token // 32]) >> (token % 32)) & 1 or not matcher.accept_token(token):
                raise AssertionError(f"xgrammar refused token {token}")
        return len(tokens)


class OutlinesCore(Candidate):
    name, package = "outlines-core", "outlines_core"

    def vocabulary(self, tokenizer: Any) -> None:
        from outlines_core import Vocabulary

        by_bytes: dict[bytes, list[int]] = {}
        eos = tokenizer.eos_token_id
        for token_id, token in enumerate(_bytes_of_tokens(tokenizer)):
            if token_id != eos:
                by_bytes.setdefault(token, []).append(token_id)
        self.vocab = Vocabulary(eos, by_bytes)
        self.eos = eos

    def compile_schema(self, schema: dict) -> Any:
        from outlines_core.json_schema import build_regex_from_schema

        return self.compile_regex(build_regex_from_schema(json.dumps(schema), r"[ ]?"))

    def compile_any_json(self) -> Any:
        return self.compile_schema({})  # a regex cannot nest without bound: depth-limited

    def compile_regex(self, regex: str) -> Any:
        from outlines_core import Index

        return Index(regex, self.vocab)

    def compile_choice(self, choices: list[str]) -> Any:
        import re

        return self.compile_regex("|".join(re.escape(c) for c in choices))

    def walk(self, compiled: Any, tokens: list[int]) -> int:
        from outlines_core import Guide

        guide = Guide(compiled)
        for token in tokens:
            if token not in set(guide.get_tokens()):
                raise AssertionError(f"outlines-core refused token {token}")
            if token == self.eos:  # the end: allowed, but a Guide does not advance past it
                break
            guide.advance(token)
        return len(tokens)


def _timed(run: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_rounds(parser)
    args = parser.parse_args()
    check_rounds(parser, args.rounds)
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    import torch
    from transformers import AutoTokenizer

    from llmsforme.model_source import ensure_course_model

    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(ensure_course_model(progress=False))
    reply_tokens = tokenizer(REPLY, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]

    candidates: list[Candidate] = []
    print(f"{time.strftime('%Y-%m-%d')}  {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"tokenizer: SmolLM2-135M-Instruct, {len(tokenizer)} tokens; reply of {len(reply_tokens)} tokens "
          f"(EOS included); {args.rounds} interleaved rounds\n")
    for candidate in (LLGuidance(), XGrammar(), OutlinesCore()):
        try:
            version = importlib.metadata.version(candidate.package)
        except importlib.metadata.PackageNotFoundError:
            print(f"{candidate.name}: not installed, skipped")
            continue
        candidate.version = version  # type: ignore[attr-defined]
        candidates.append(candidate)

    print("support (on this tokenizer)")
    print(f"  {'library':<22} {'strict schema':>13} {'any JSON':>9} {'regex':>6} {'choice':>7}")
    for candidate in candidates:
        candidate.vocabulary(tokenizer)
        cells = []
        for build, tokens in (
            (lambda c=candidate: c.compile_schema(SCHEMA), reply_tokens),
            (lambda c=candidate: c.compile_any_json(), tokenizer('{"a": [1, {"b": null}]}').input_ids),
            (lambda c=candidate: c.compile_regex(REGEX), tokenizer("555-1234").input_ids),
            (lambda c=candidate: c.compile_choice(CHOICES), tokenizer("neutral").input_ids),
        ):
            try:
                candidate.walk(build(), tokens)
                cells.append("yes")
            except Exception as error:  # noqa: BLE001 - a refusal is a finding, printed
                cells.append("NO")
                print(f"  ({candidate.name}: {type(error).__name__}: {str(error)[:120]})")
        print(f"  {candidate.name + ' ' + candidate.version:<22} {cells[0]:>13} {cells[1]:>9} {cells[2]:>6} {cells[3]:>7}")

    times: dict[str, dict[str, list[float]]] = {c.name: {"vocabulary": [], "compile": [], "per token": []} for c in candidates}
    for _ in range(args.rounds):  # interleaved, so load changes hit every library alike
        for candidate in candidates:
            row = times[candidate.name]
            row["vocabulary"].append(_timed(lambda c=candidate: c.vocabulary(tokenizer))[0])
            compiles = [_timed(lambda c=candidate: c.compile_schema(SCHEMA)) for _ in range(REPEATS)]
            row["compile"].append(statistics.mean(seconds for seconds, _ in compiles))
            compiled = compiles[-1][1]
            candidate.walk(compiled, reply_tokens)  # warm up
            walks = [_timed(lambda c=candidate, g=compiled: c.walk(g, reply_tokens)) for _ in range(REPEATS)]
            row["per token"].append(statistics.mean(seconds / walked for seconds, walked in walks))

    print("  (outlines-core's any JSON is the regex of the schema {}: nesting is cut at a fixed depth)")

    warned = False
    print(f"\n{'library':<16} {'vocabulary ms':>14} {'spread':>7} {'compile ms':>11} {'spread':>7} "
          f"{'mask+advance us/token':>22} {'spread':>7}")
    for name, row in times.items():
        cells = []
        for key, scale in (("vocabulary", 1e3), ("compile", 1e3), ("per token", 1e6)):
            median, spread = median_spread(row[key])
            warned |= spread > NOISY
            cells.append(f"{median * scale:>{14 if key == 'vocabulary' else 11 if key == 'compile' else 22}.1f} "
                         f"{spread:>6.0%}{'!' if spread > NOISY else ' '}")
        print(f"{name:<16} " + " ".join(cells))
    if warned:
        print("\nWARNING: some spreads (marked !) passed 10 %: the machine was busy; those figures are not reliable.")


if __name__ == "__main__":
    main()
