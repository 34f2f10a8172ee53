"""What does the grammar's mask cost per token? Constrained against plain greedy decoding, on the course model.

For each prompt, greedy decoding runs twice on the same model through the
package's ``greedy``: once with :func:`llmsforme.constrained.json_schema`'s
processor (its compiled grammar reused, as the server's cache does), and
once without any processor, for exactly as many new tokens as the
constrained run wrote (``eos_token_id=[]``), so that both pay for the same
number of forward passes. The figure is the time per token, constrained
over plain (target: at most 1.3).

It also times compiling the schema: a new processor (the vocabulary is
built once per model and cached; the grammar is compiled each time), and
the server's cached path (``Engine.json_constraint`` on a schema it has
seen).

Rounds are interleaved (each round runs every prompt both ways, in
alternating order), at least 7; medians and spreads ((max - min) / median)
are printed, with a warning when a spread passes 10 %. The result goes to
``benchmarks/results/constrained_decoding.json`` with the date and the
machine; the Performance page reads it.

    .venv/bin/python benchmarks/constrained_decoding.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from llmsforme import HFLanguageModel, greedy, load_model
from llmsforme.chat import chat_prompt
from llmsforme.constrained import json_schema
from rounds import WARNING, add_rounds, check_rounds

RESULTS = Path(__file__).resolve().parent / "results" / "constrained_decoding.json"
SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "country": {"type": "string"},
        "population_millions": {"type": "number"},
        "languages": {"type": "array", "items": {"type": "string"}},
        "kind": {"type": "string", "enum": ["capital", "port", "village"]},
    },
    "required": ["city", "country", "population_millions", "languages", "kind"],
    "additionalProperties": False,
}
QUESTIONS = (
    "Describe Paris as JSON.",
    "Give me the facts about Tokyo in JSON.",
    "Write a JSON record for Lima, Peru.",
)
NEW_TOKENS = 48
#: Compiles timed per round (one compile takes milliseconds: too short to time alone).
COMPILES = 20


def spread(values: list[float]) -> float:
    return (max(values) - min(values)) / statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_rounds(parser)
    args = parser.parse_args()
    check_rounds(parser, args.rounds)
    torch.set_num_threads(os.cpu_count() or 1)

    model, tokenizer = load_model(progress=False)
    lm = HFLanguageModel(model, tokenizer)
    prompts = [chat_prompt(tokenizer, [{"role": "user", "content": q}]).ids for q in QUESTIONS]
    processor = json_schema(lm, SCHEMA)  # builds the vocabulary once (cached per model)

    def constrained(ids: list[int]) -> tuple[float, int]:
        start = time.perf_counter()
        result = greedy(lm, ids, max_new_tokens=NEW_TOKENS, logits_processors=[processor])
        return time.perf_counter() - start, len(result.token_ids)

    def plain(ids: list[int], n: int) -> float:
        start = time.perf_counter()
        result = greedy(lm, ids, max_new_tokens=n, eos_token_id=[])
        assert len(result.token_ids) == n
        return time.perf_counter() - start

    from llmsforme.server.engine import Engine

    engine = Engine(model, tokenizer)
    try:
        engine.json_constraint(SCHEMA)  # the server's cache, warm
        written = []  # the constrained run's length per prompt: greedy, so the same every round
        for ids in prompts:  # warm-up: caches, allocator, the matcher's states
            _, n = constrained(ids)
            plain(ids, n)
            written.append(n)

        ratios: list[float] = []
        per_token: dict[str, list[float]] = {"constrained": [], "plain": []}
        compile_ms: list[float] = []
        cached_us: list[float] = []
        for round_number in range(args.rounds):
            times = {"constrained": 0.0, "plain": 0.0}
            for index, ids in enumerate(prompts):
                if (round_number + index) % 2:  # alternate which goes first
                    times["plain"] += plain(ids, written[index])
                seconds, n = constrained(ids)
                assert n == written[index], "greedy decoding must write the same tokens every round"
                times["constrained"] += seconds
                if not (round_number + index) % 2:
                    times["plain"] += plain(ids, written[index])
            tokens = sum(written)
            for name in times:
                per_token[name].append(times[name] / tokens * 1000)
            ratios.append(times["constrained"] / times["plain"])
            start = time.perf_counter()
            for _ in range(COMPILES):
                json_schema(lm, SCHEMA)
            compile_ms.append((time.perf_counter() - start) / COMPILES * 1000)
            start = time.perf_counter()
            for _ in range(COMPILES):
                engine.json_constraint(SCHEMA)
            cached_us.append((time.perf_counter() - start) / COMPILES * 1e6)
            print(f"round {round_number + 1}: constrained / plain {ratios[-1]:.3f}", flush=True)
    finally:
        engine.close()

    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    versions = {name: importlib.metadata.version(name) for name in ("torch", "transformers", "llguidance")}
    print(f"\n{datetime.date.today()}  {machine}, " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"{len(prompts)} prompts, {sum(written)} tokens written per way and round, {args.rounds} rounds\n")
    rows = {
        "constrained, ms / token": per_token["constrained"],
        "plain, ms / token": per_token["plain"],
        "constrained / plain": ratios,
        "compile a schema, ms": compile_ms,
        "cached schema, us": cached_us,
    }
    noisy = False
    for name, values in rows.items():
        noisy |= spread(values) > 0.10
        print(f"{name:<26} median {statistics.median(values):9.3f}   spread {spread(values):5.1%}")
    ratio = statistics.median(ratios)
    print(f"\nper token, constrained / plain: {ratio:.2f}  (target <= 1.3)")
    if noisy:
        print(WARNING)
    RESULTS.write_text(json.dumps({
        "date": str(datetime.date.today()),
        "machine": machine,
        "versions": versions,
        "rounds": args.rounds,
        "prompts": list(QUESTIONS),
        "tokens_per_round": sum(written),
        "constrained_ms_per_token": round(statistics.median(per_token["constrained"]), 2),
        "plain_ms_per_token": round(statistics.median(per_token["plain"]), 2),
        "ratio": round(ratio, 2),
        "ratio_spread": round(spread(ratios), 3),
        "compile_ms": round(statistics.median(compile_ms), 2),
        "cached_us": round(statistics.median(cached_us), 1),
        "noisy": noisy,
    }, indent=2) + "\n", encoding="utf-8")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
