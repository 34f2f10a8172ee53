"""How fast are our decoding loops next to transformers' ``model.generate``?

Runs greedy, beam search (4 beams) and sampling for 64 new tokens on the course
model, ours and theirs interleaved, ``--repeats`` times each, and prints the
median times, their ratio (ours / transformers: <= 1.0 means we are not slower)
and tokens per second. It also prints the per-token time of our greedy loop
divided by the time of one bare cached forward pass (the cost of the model
alone), which shows the overhead of the loop itself.

    .venv/bin/python benchmarks/decoding.py [--repeats 5] [--new-tokens 64]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

from llmsforme import HFLanguageModel, beam_search, greedy, load_model, sample

PROMPT = "Once upon a time, in a small village by the sea,"


def _timed(run: Callable[[], int]) -> tuple[float, int]:
    start = time.perf_counter()
    n = run()
    return time.perf_counter() - start, n


def bare_forward_per_token(model: torch.nn.Module, ids: torch.Tensor, new_tokens: int) -> float:
    """Seconds per token of the cheapest possible loop: the prompt's prefill, then
    one cached forward per token, nothing else (as our loop: n - 1 steps)."""
    from transformers import DynamicCache

    with torch.no_grad():
        start = time.perf_counter()
        cache = DynamicCache(config=model.config)
        model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
        token = ids[:, -1:]
        for _ in range(new_tokens - 1):
            model(input_ids=token, cache=cache, use_cache=True, logits_to_keep=1)
        return (time.perf_counter() - start) / new_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()
    if args.repeats < 1 or args.new_tokens < 1:
        parser.error("--repeats and --new-tokens must be >= 1")

    model, tokenizer = load_model(progress=False)
    lm = HFLanguageModel(model, tokenizer)
    ids = torch.tensor([lm.encode(PROMPT)])
    n = args.new_tokens
    prompt_len = ids.shape[1]

    def theirs(**kwargs: object) -> Callable[[], int]:
        def run() -> int:
            if kwargs.get("do_sample"):
                torch.manual_seed(0)
            out = model.generate(ids, max_new_tokens=n, **kwargs)
            return out.shape[1] - prompt_len

        return run

    cases: dict[str, tuple[Callable[[], int], Callable[[], int]]] = {
        "greedy": (
            lambda: len(greedy(lm, PROMPT, max_new_tokens=n, eos_token_id=[]).token_ids),
            theirs(do_sample=False),
        ),
        "beam search (4 beams)": (
            lambda: len(beam_search(lm, PROMPT, num_beams=4, max_new_tokens=n, eos_token_id=[]).token_ids),
            theirs(do_sample=False, num_beams=4),
        ),
        "sampling (T=0.8, top-k 50, top-p 0.95)": (
            lambda: len(sample(lm, PROMPT, temperature=0.8, top_k=50, top_p=0.95, seed=0, max_new_tokens=n, eos_token_id=[]).token_ids),
            theirs(do_sample=True, temperature=0.8, top_k=50, top_p=0.95),
        ),
    }

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}; {n} new tokens, median of {args.repeats}")
    print(f"{'strategy':<40} {'ours s':>8} {'hf s':>8} {'ratio':>6} {'ours tok/s':>10} {'hf tok/s':>9}")
    greedy_per_token = None
    for name, (ours, reference) in cases.items():
        ours(), reference()  # warm up
        times_ours, times_ref = [], []
        for _ in range(args.repeats):  # interleaved, so load changes hit both alike
            t, n_ours = _timed(ours)
            times_ours.append(t)
            t, n_ref = _timed(reference)
            times_ref.append(t)
        if n_ours != n or n_ref != n:
            raise SystemExit(f"{name}: expected {n} tokens, got ours={n_ours}, transformers={n_ref}")
        a, b = statistics.median(times_ours), statistics.median(times_ref)
        print(f"{name:<40} {a:>8.3f} {b:>8.3f} {a / b:>6.2f} {n / a:>10.1f} {n / b:>9.1f}")
        if name == "greedy":
            greedy_per_token = a / n

    bare = statistics.median(bare_forward_per_token(model, ids, n) for _ in range(args.repeats))
    assert greedy_per_token is not None
    print(f"greedy per-token time / bare cached forward: {greedy_per_token * 1000:.2f} ms / "
          f"{bare * 1000:.2f} ms = {greedy_per_token / bare:.2f}x")


if __name__ == "__main__":
    main()
