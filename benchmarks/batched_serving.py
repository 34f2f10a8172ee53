"""How does the server scale with clients, batched against one request at a time?

1. Load: 1, 2, 4 and 8 concurrent clients, each streaming one greedy reply of
   ``--new-tokens`` tokens with the official ``openai`` client over real
   HTTP, against two servers on the same weights: the batched engine (the
   default, ``max_batch=8``) and the one-at-a-time engine (``max_batch=None``).
   For each: total tokens per second, the time to first token (TTFT) and the
   time per output token after it (TPOT), averaged over the clients. The
   target is at least 4 times the one-client throughput at 8 clients.
2. Steps: the time of one decoding step of the batcher with 1, 2, 4 and 8
   sequences, against the time to read the model's weights once at the
   memory bandwidth measured here (the bandwidth model of Part 4), and
   torch's profiler on one forward pass of 1 and of 8 sequences: how much
   of it is matrix multiplication, where the weights are read.
3. Fairness: the time to the first token of a short request (8 tokens)
   sent while 7 long ones (``--new-tokens`` each) are streaming, on each
   engine. ``--fairness-only`` measures this alone and adds it to the
   stored file, with its own date.

Rounds are interleaved (every load and engine once per round, in alternating
order), at least 7; medians and spreads ((max - min) / median) are printed and
a spread above 10 % is flagged. The figures go to
``examples/part-4/data/batched_serving.json`` with the date and the machine.

    .venv/bin/python benchmarks/batched_serving.py [--rounds 7] [--new-tokens 64]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import threading
import time
from importlib import metadata
from pathlib import Path

import torch
from openai import OpenAI

from llmsforme import HFLanguageModel, load_model
from llmsforme.batching import BatchRequest, ContinuousBatcher
from llmsforme.server import MODEL_ID, start_server
from rounds import NOISY, WARNING, add_rounds, check_rounds, flag, median_spread

MESSAGES = [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}]
CLIENTS = (1, 2, 4, 8)
# Beside the Part 4 notebook that reads it (Serving many users).
RESULTS = Path(__file__).resolve().parents[1] / "examples" / "part-4" / "data" / "batched_serving.json"




def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def one_client(client: OpenAI, new_tokens: int, out: dict) -> None:
    """Stream one reply; record when its first text came, when it ended, and its token count."""
    start = time.perf_counter()
    first = None
    tokens = 0
    text = []
    for chunk in client.chat.completions.create(
        model=MODEL_ID, messages=MESSAGES, temperature=0, max_tokens=new_tokens, stream=True,
        stream_options={"include_usage": True},
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or time.perf_counter() - start
            text.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    out.update(ttft=first, total=time.perf_counter() - start, tokens=tokens, text="".join(text))


def load(client: OpenAI, clients: int, new_tokens: int) -> dict:
    """``clients`` requests at once; their throughput, TTFT and TPOT."""
    results = [{} for _ in range(clients)]
    threads = [threading.Thread(target=one_client, args=(client, new_tokens, r)) for r in results]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    return {
        "tokens_per_s": sum(r["tokens"] for r in results) / wall,
        "ttft_s": statistics.mean(r["ttft"] for r in results),
        "tpot_s": statistics.mean((r["total"] - r["ttft"]) / (r["tokens"] - 1) for r in results),
        "texts": {r["text"] for r in results},
    }


def fairness(client: OpenAI, new_tokens: int) -> float:
    """Seconds to the first token of a short request sent while 7 long ones stream."""
    first = threading.Event()
    results = [{} for _ in range(7)]

    def long_one(out: dict) -> None:
        start = time.perf_counter()
        for chunk in client.chat.completions.create(
            model=MODEL_ID, messages=MESSAGES, temperature=0, max_tokens=new_tokens, stream=True,
        ):
            if chunk.choices and chunk.choices[0].delta.content and "ttft" not in out:
                out["ttft"] = time.perf_counter() - start
                first.set()

    threads = [threading.Thread(target=long_one, args=(r,)) for r in results]
    for thread in threads:
        thread.start()
    first.wait()
    time.sleep(0.5)  # the long ones are running (batched) or queued (one at a time)
    short: dict = {}
    one_client(client, 8, short)
    for thread in threads:
        thread.join()
    return short["ttft"]


def step_times(lm: HFLanguageModel, batch: int, steps: int) -> list[float]:
    """Seconds of each decoding step that ran ``batch`` sequences and admitted nobody."""
    batcher = ContinuousBatcher(lm, max_batch=batch)
    prompt = lm.tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True)
    prompt = list(prompt["input_ids"] if isinstance(prompt, dict) or hasattr(prompt, "keys") else prompt)
    for _ in range(batch):
        batcher.submit(BatchRequest(prompt, max_new_tokens=steps))
    batcher.run()
    return [r.seconds for r in batcher.trace if len(r.running) == batch and not r.joined]


def profile_step(model: torch.nn.Module, batch: int) -> dict[str, float]:
    """Milliseconds of one cached forward pass of ``batch`` sequences, and of its matrix products."""
    from torch.profiler import ProfilerActivity, profile

    ids = torch.arange(100, 140).repeat(batch, 1)  # 40 positions already in the cache
    with torch.no_grad():
        cache = model(input_ids=ids, use_cache=True).past_key_values
        token = torch.full((batch, 1), 200)
        model(input_ids=token, past_key_values=cache, use_cache=True, logits_to_keep=1)  # warm up
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            for _ in range(3):
                model(input_ids=token, past_key_values=cache, use_cache=True, logits_to_keep=1)
    events = profiler.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 3 / 1000
    products = sum(e.self_cpu_time_total for e in events if e.key in ("aten::mm", "aten::addmm", "aten::bmm")) / 3 / 1000
    return {"step_ms": total, "matmul_ms": products}


def memory_bandwidth() -> float:
    """Bytes per second for reading a 1 GiB tensor (the best of 5 sums)."""
    data = torch.ones(256 * 1024 * 1024)  # 1 GiB of float32
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        float(data.sum())
        best = min(best, time.perf_counter() - start)
    return data.numel() * data.element_size() / best


def fairness_report(fair: dict[str, list[float]], new_tokens: int, rounds: int, machine: str) -> dict:
    """Print and return the fairness figures: a short request's time to first token beside 7 long ones."""
    print(f"\na short request (8 tokens) sent while 7 of {new_tokens} tokens stream: its first token after")
    report = {"date": str(datetime.date.today()), "machine": machine, "rounds": rounds, "long_tokens": new_tokens}
    for engine, times in fair.items():
        median, spread = median_spread(times)
        report[engine] = {"ttft_s": round(median, 3), "spread": round(spread, 3)}
        print(f"  {engine:<14} {median:7.2f} s  (spread {spread:5.1%}){flag(spread)}")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_rounds(parser)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--fairness-only", action="store_true",
                        help="measure only the fairness figure and add it to the stored file")
    args = parser.parse_args()
    check_rounds(parser, args.rounds)
    if args.new_tokens < 2:
        parser.error("--new-tokens must be >= 2")
    n = args.new_tokens
    model, tokenizer = load_model(progress=False)
    lm = HFLanguageModel(model, tokenizer)
    machine = f"{platform.machine()}, {cpu_name()}, {os.cpu_count()} cores"
    versions = {name: metadata.version(name) for name in ("torch", "transformers", "openai", "fastapi", "uvicorn")}
    print(f"{datetime.date.today()}  {machine}")
    print("  " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"{n} greedy tokens per request, {args.rounds} interleaved rounds\n")

    engines = {"batched": 8, "one_at_a_time": None}
    samples = {e: {c: [] for c in CLIENTS} for e in engines}
    steps = {b: [] for b in CLIENTS}
    profiles: dict[int, list[dict[str, float]]] = {1: [], 8: []}
    texts = set()
    with start_server(model, tokenizer, max_batch=engines["batched"]) as batched, \
            start_server(model, tokenizer, max_batch=engines["one_at_a_time"]) as alone:
        clients = {
            "batched": OpenAI(base_url=batched.base_url, api_key="-", max_retries=0),
            "one_at_a_time": OpenAI(base_url=alone.base_url, api_key="-", max_retries=0),
        }
        for client in clients.values():  # warm up
            load(client, 2, 4)
        if args.fairness_only:
            fair = {e: [] for e in engines}
            for round_ in range(args.rounds):
                for engine in (engines if round_ % 2 == 0 else list(reversed(engines))):
                    fair[engine].append(fairness(clients[engine], n))
                print(f"  round {round_ + 1} of {args.rounds} done", flush=True)
            report = json.loads(RESULTS.read_text())
            report["fairness"] = fairness_report(fair, n, args.rounds, machine)
            RESULTS.write_text(json.dumps(report, indent=1) + "\n")
            return
        fair = {e: [] for e in engines}
        for round_ in range(args.rounds):
            order = list(engines) if round_ % 2 == 0 else list(reversed(engines))
            for c in CLIENTS:
                for engine in order:
                    result = load(clients[engine], c, n)
                    texts |= result.pop("texts")
                    samples[engine][c].append(result)
            for b in CLIENTS:
                steps[b].append(statistics.median(step_times(lm, b, 16)))
            for b in (1, 8):
                profiles[b].append(profile_step(model, b))
            for engine in order:
                fair[engine].append(fairness(clients[engine], n))
            print(f"  round {round_ + 1} of {args.rounds} done", flush=True)
    if len(texts) != 1:  # batched float sums may flip a near-tie: say so rather than hide it
        print(f"NOTE: the greedy replies were not all the same text ({len(texts)} different texts)")

    warned = False
    report: dict = {"date": str(datetime.date.today()), "machine": machine, "versions": versions,
                    "new_tokens": n, "rounds": args.rounds, "max_batch": engines["batched"], "distinct_replies": len(texts), "clients": {}}
    print(f"\n{'engine':<14} {'clients':>7} {'tokens/s':>9} {'spread':>7} {'TTFT ms':>8} {'TPOT ms':>8}")
    for engine in engines:
        report["clients"][engine] = {}
        for c in CLIENTS:
            rate, spread = median_spread([s["tokens_per_s"] for s in samples[engine][c]])
            ttft = statistics.median(s["ttft_s"] for s in samples[engine][c])
            tpot = statistics.median(s["tpot_s"] for s in samples[engine][c])
            warned |= spread > NOISY
            report["clients"][engine][str(c)] = {"tokens_per_s": round(rate, 2), "spread": round(spread, 3),
                                                 "ttft_s": round(ttft, 3), "tpot_s": round(tpot, 4)}
            print(f"{engine:<14} {c:>7} {rate:>9.1f} {spread:>7.1%} {ttft * 1000:>8.0f} {tpot * 1000:>8.1f}"
                  f"{flag(spread)}")
    scaling = report["clients"]["batched"]["8"]["tokens_per_s"] / report["clients"]["batched"]["1"]["tokens_per_s"]
    report["batched_8_over_1"] = round(scaling, 2)
    print(f"\nbatched, 8 clients against 1: {scaling:.2f}x  (target >= 4)")

    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    bandwidth = memory_bandwidth()
    estimate = weight_bytes / bandwidth
    report["steps"] = {}
    print(f"\nweights {weight_bytes / 1e6:.0f} MB, memory read at {bandwidth / 1e9:.1f} GB/s: "
          f"{estimate * 1000:.0f} ms to read them once")
    print(f"{'batch':>5} {'step ms':>8} {'spread':>7} {'tokens/s':>9}")
    for b in CLIENTS:
        median, spread = median_spread(steps[b])
        warned |= spread > NOISY
        report["steps"][str(b)] = {"ms": round(median * 1000, 1), "spread": round(spread, 3)}
        print(f"{b:>5} {median * 1000:>8.1f} {spread:>7.1%} {b / median:>9.1f}{flag(spread)}")
    report["profile"] = {}
    print("\ntorch's profiler, one forward pass (the profiler adds its own time)")
    for b, rows in profiles.items():
        step = statistics.median(r["step_ms"] for r in rows)
        products = statistics.median(r["matmul_ms"] for r in rows)
        report["profile"][str(b)] = {"step_ms": round(step, 1), "matmul_ms": round(products, 1),
                                     "matmul_gb_s": round(weight_bytes / products / 1e6, 1)}
        print(f"  batch {b}: {step:.1f} ms, of which matrix products {products:.1f} ms "
              f"({products / step:.0%}): the weights stream at {weight_bytes / products / 1e6:.1f} GB/s")
    report.update(weight_bytes=weight_bytes, bandwidth_gb_s=round(bandwidth / 1e9, 2),
                  weights_read_ms=round(estimate * 1000, 1), noisy=warned)
    report["fairness"] = fairness_report(fair, n, args.rounds, machine)
    RESULTS.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nwritten to {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}")
    if warned:
        print(WARNING)


if __name__ == "__main__":
    main()
