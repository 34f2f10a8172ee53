"""How long does "Ask the course" take, step by step, on this machine?

Interleaved for ``--rounds`` rounds (at least 7), each round measures:

1. building the index of the whole course: embedding every chunk with
   all-MiniLM-L6-v2, writing DuckDB and FTS5 and the manifest (the
   embedding model already loaded), and opening a built index;
2. for each question of a fixed set: embedding the question, then the
   vector search in DuckDB with the question's vector, and the keyword
   search in FTS5;
3. answering two questions with the course model (transformers, fp32,
   greedy, at most ``--max-new-tokens`` tokens): time to the first text
   streamed, and total; the same prompts each round.

Medians and spreads ((max - min) / median) are printed, with a warning
above 10 %, and written with the date and the machine to
``examples/part-6/data/ask_latency.json``, which the Part 6 pages read.

    .venv/bin/python benchmarks/ask_latency.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import tempfile
import time
from importlib import metadata
from pathlib import Path

import torch

from llmsforme import load_model
from llmsforme.apps.ask import Retriever, build_index, embedding_model, load_corpus, open_index
from llmsforme.apps.ask.answer import context_messages, generate_answer
from rounds import NOISY, WARNING, add_rounds, check_rounds, flag, median_spread

RESULTS = Path(__file__).resolve().parents[1] / "examples" / "part-6" / "data" / "ask_latency.json"
SEARCHES = (
    "How does top-p differ from top-k?",
    "Why does my model repeat the same sentence over and over?",
    "What does LoRA train, and what stays frozen?",
    "How do I call the course server with the openai client?",
    "What does classifier-free guidance do?",
)
ANSWERS = ("How does top-p differ from top-k?", "What is the capital of Australia?")
#: Searches take milliseconds: each is repeated, then divided, to be timeable.
SEARCH_REPEATS = 20



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_rounds(parser)
    parser.add_argument("--max-new-tokens", type=int, default=160)
    args = parser.parse_args()
    check_rounds(parser, args.rounds)
    torch.set_num_threads(2)
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    versions = {name: metadata.version(name) for name in ("torch", "sentence-transformers", "duckdb", "llmsforme")}
    print(f"{datetime.date.today()}  {machine}, {versions}")

    chunks = load_corpus()
    embedder = embedding_model()
    model, tokenizer = load_model(progress=False)
    count = lambda text: len(tokenizer(text).input_ids)  # noqa: E731
    work = Path(tempfile.mkdtemp(prefix="ask-latency-"))
    timings: dict[str, list[float]] = {}
    answers: dict[str, dict] = {}

    def record(name: str, seconds: float) -> None:
        timings.setdefault(name, []).append(seconds)

    # Warm-up, not timed: the first call of each library pays for lazy set-up.
    with Retriever(build_index(chunks[:20], work / "warm-up", model=embedder, progress=False), model=embedder) as warm:
        generate_answer(*context_messages(ANSWERS[0], warm.search(ANSWERS[0])), model=model, tokenizer=tokenizer,
                        max_new_tokens=8)

    for round_number in range(1, args.rounds + 1):
        start = time.perf_counter()
        index = build_index(chunks, work / f"index-{round_number}", model=embedder, progress=False)
        record("index build (embed + write)", time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(SEARCH_REPEATS):
            index = open_index(index.folder, chunks, rebuild=False)
        record("index open (checks the manifest)", (time.perf_counter() - start) / SEARCH_REPEATS)

        with Retriever(index, model=embedder) as retriever:
            embed, vector, keyword = [], [], []
            for question in SEARCHES:
                start = time.perf_counter()
                for _ in range(SEARCH_REPEATS):
                    vec = retriever.embed(question)
                embed.append((time.perf_counter() - start) / SEARCH_REPEATS)
                start = time.perf_counter()
                for _ in range(SEARCH_REPEATS):
                    retriever.nearest(vec, 3)  # the search alone, the vector given
                vector.append((time.perf_counter() - start) / SEARCH_REPEATS)
                start = time.perf_counter()
                for _ in range(SEARCH_REPEATS):
                    retriever.search(question, k=3, method="keyword")
                keyword.append((time.perf_counter() - start) / SEARCH_REPEATS)
            record("question embedding", statistics.mean(embed))
            record("vector search (DuckDB)", statistics.mean(vector))
            record("keyword search (FTS5)", statistics.mean(keyword))

            for question in ANSWERS:
                start = time.perf_counter()
                hits = retriever.search(question, k=3)
                messages, used = context_messages(question, hits, count_tokens=count)
                first: list[float] = []
                answer = generate_answer(
                    messages, used, model=model, tokenizer=tokenizer, max_new_tokens=args.max_new_tokens,
                    on_text=lambda text: first or first.append(time.perf_counter()),
                )
                end = time.perf_counter()
                record(f"first text: {question}", first[0] - start)
                record(f"total: {question}", end - start)
                answers[question] = {
                    "prompt tokens": count(tokenizer.apply_chat_template(messages, tokenize=False,
                                                                         add_generation_prompt=True)),
                    "answer tokens": count(answer.text),
                    "answer": answer.text,
                }
        print(f"round {round_number}/{args.rounds} done", flush=True)

    rows, warned = [], False
    print(f"\n{'step':<58} {'median':>10} {'spread':>7}")
    for name, values in timings.items():
        median, spread = median_spread(values)
        warned |= spread > NOISY
        shown = f"{median * 1000:.1f} ms" if median < 1 else f"{median:.2f} s"
        print(f"{name:<58} {shown:>10} {spread:>6.0%}{flag(spread)}")
        rows.append({"step": name, "median_s": median, "spread": spread, "values_s": values})
    for question, facts in answers.items():
        print(f"\n{question}: {facts['prompt tokens']} prompt tokens, {facts['answer tokens']} answer tokens")
    if warned:
        print(WARNING)
    RESULTS.write_text(json.dumps({
        "date": str(datetime.date.today()),
        "machine": machine,
        "versions": versions,
        "rounds": args.rounds,
        "chunks": len(chunks),
        "max_new_tokens": args.max_new_tokens,
        "timings": rows,
        "answers": answers,
    }, indent=1) + "\n", encoding="utf-8")
    print(f"\nwrote {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}")


if __name__ == "__main__":
    main()
