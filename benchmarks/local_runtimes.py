"""How fast, and how big, is the course model on each local runtime?

1. Greedy decoding of ``--new-tokens`` tokens, 2 threads, interleaved for
   ``--rounds`` rounds (at least 7): the package's loop on transformers in
   fp32, the same loop on llama.cpp through ``LlamaCppLanguageModel``, and
   llama.cpp's own ``generate``. Targets: the adapter at 0.9 or more of
   llama.cpp's own speed; llama.cpp's speed over transformers' is reported.
2. Peak memory (Linux's ``VmHWM``) of a fresh process that loads each
   runtime and generates once.
3. ``llmsforme serve`` on each backend with 1, 4 and 8 clients at once.

Medians and spreads ((max - min) / median) are printed, with a warning
above 10 %. The figures are also written to
``benchmarks/results/local_runtimes.json`` (with the date and the machine),
which the Part 4 pages read.

    .venv/bin/python benchmarks/local_runtimes.py [--rounds 7] [--new-tokens 64]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from importlib import metadata
from pathlib import Path

import torch

from llmsforme import greedy, load_model
from llmsforme.lm import HFLanguageModel, LlamaCppLanguageModel

PROMPT = "Once upon a time, in a small village by the sea,"
# The Part 4 pages read these figures (never timings of their own).
RESULTS = Path(__file__).resolve().parents[1] / "examples" / "part-4" / "data" / "local_runtimes.json"
#: Timed repetitions per round: one llama.cpp reply takes a fraction of a
#: second, too short to time alone on a noisy machine.
REPEATS = {"transformers": 1, "llama.cpp": 4}

PEAK = """
import sys
from llmsforme import greedy, load_model
backend = sys.argv[1]
model, tokenizer = load_model(backend=backend, progress=False,
                              **({"n_threads": 2} if backend == "llama.cpp" else {}))
greedy(model, "Once upon a time", tokenizer=tokenizer, max_new_tokens=64, eos_token_id=[])
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        print(int(line.split()[1]) * 1024)
"""


def _median_spread(values: list[float]) -> tuple[float, float]:
    median = statistics.median(values)
    return median, (max(values) - min(values)) / median


def _timed(run) -> float:  # noqa: ANN001
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()
    if args.rounds < 7:
        parser.error("--rounds must be at least 7 (medians of fewer rounds are noise here)")
    n = args.new_tokens
    torch.set_num_threads(2)
    model, tokenizer = load_model(progress=False)
    llama, _ = load_model(backend="llama.cpp", n_threads=2)
    hf, cpp = HFLanguageModel(model, tokenizer), LlamaCppLanguageModel(llama)
    ids = hf.encode(PROMPT)

    def llama_own() -> None:
        # reset() first: generate() would otherwise reuse the previous run's
        # KV cache for the same prompt and skip reading it, which our loop does not.
        llama.reset()
        for count, _ in enumerate(llama.generate(ids, top_k=1, temp=0.0, reset=True), start=1):
            if count == n:
                return

    def repeated(run, times: int):  # noqa: ANN001, ANN202
        def all_of_them() -> None:
            for _ in range(times):
                run()

        return all_of_them

    runs = {
        "transformers fp32 (the package's greedy)": lambda: greedy(hf, ids, max_new_tokens=n, eos_token_id=[]),
        "llama.cpp Q4_1 (the package's greedy)": repeated(
            lambda: greedy(cpp, ids, max_new_tokens=n, eos_token_id=[]), REPEATS["llama.cpp"]
        ),
        "llama.cpp Q4_1 (llama.cpp's generate)": repeated(llama_own, REPEATS["llama.cpp"]),
    }
    tokens_per_run = {name: n * (1 if name.startswith("transformers") else REPEATS["llama.cpp"]) for name in runs}
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    versions = (f"torch {torch.__version__}, transformers {metadata.version('transformers')}, "
                f"llama-cpp-python {metadata.version('llama_cpp_python')}")
    print(f"{datetime.date.today()}  {machine}, {versions}")
    print(f"greedy, {n} new tokens (llama.cpp: {REPEATS['llama.cpp']} replies per timing), 2 threads, "
          f"{args.rounds} interleaved rounds\n")
    for run in runs.values():
        run()  # warm up
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            times[name].append(_timed(run))
    warned = False
    speed = {}
    print(f"{'runtime':<42} {'tokens/s':>9} {'spread':>7}")
    for name, values in times.items():
        median, spread = _median_spread(values)
        warned |= spread > 0.10
        rate = tokens_per_run[name] / median
        speed[name] = {"tokens_per_second": round(rate, 1), "spread": round(spread, 3)}
        flag = "  <- spread > 10 %, run again" if spread > 0.10 else ""
        print(f"{name:<42} {rate:>9.1f} {spread:>7.1%}{flag}")
    names = list(runs)
    adapter_ratio = speed[names[1]]["tokens_per_second"] / speed[names[2]]["tokens_per_second"]
    llama_ratio = speed[names[2]]["tokens_per_second"] / speed[names[0]]["tokens_per_second"]
    print(f"\nadapter / llama.cpp's own generate: {adapter_ratio:.2f}  (target >= 0.9)")
    print(f"llama.cpp / transformers fp32:      {llama_ratio:.1f}x")

    print("\npeak memory of a fresh process that loads the model and generates 64 tokens")
    memory = {}
    for backend in ("transformers", "llama.cpp"):
        result = subprocess.run([sys.executable, "-c", PEAK, backend], capture_output=True, text=True, check=True)
        peak = int(result.stdout.split()[-1])
        memory[backend] = round(peak / 1e9, 2)
        print(f"  {backend:<13} {peak / 1e9:5.2f} GB")

    print(f"\nllmsforme serve, requests of {n // 2} tokens, {args.rounds} rounds (each client sends "
          f"{REPEATS['transformers']} request(s) per round on transformers, {REPEATS['llama.cpp']} on llama.cpp)")
    from openai import OpenAI

    from llmsforme.server import MODEL_ID, start_server

    concurrency: dict[str, dict[str, float]] = {}
    print(f"  {'backend':<13} {'clients':>7} {'tokens/s':>9} {'spread':>7} {'mean wait s':>11}")
    for backend, served in (("transformers", model), ("llama.cpp", llama)):
        concurrency[backend] = {}
        with start_server(served, tokenizer) as server:
            client = OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
            messages = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]

            def one(latencies: list[float], counts: list[int], i: int) -> None:
                for _ in range(REPEATS[backend]):  # noqa: B023
                    start = time.perf_counter()
                    reply = client.chat.completions.create(  # noqa: B023
                        model=MODEL_ID, messages=messages, temperature=0, max_tokens=n // 2
                    )
                    latencies[i] += (time.perf_counter() - start) / REPEATS[backend]  # noqa: B023
                    counts[i] += reply.usage.completion_tokens

            for clients in (1, 4, 8):
                rates, waits = [], []
                for _ in range(args.rounds):
                    latencies, counts = [0.0] * clients, [0] * clients
                    threads = [threading.Thread(target=one, args=(latencies, counts, i)) for i in range(clients)]
                    start = time.perf_counter()
                    for thread in threads:
                        thread.start()
                    for thread in threads:
                        thread.join()
                    rates.append(sum(counts) / (time.perf_counter() - start))
                    waits.append(statistics.mean(latencies))
                rate, spread = _median_spread(rates)
                warned |= spread > 0.10
                wait = statistics.median(waits)
                concurrency[backend][str(clients)] = {"tokens_per_second": round(rate, 1), "mean_wait_s": round(wait, 2)}
                flag = "  <- spread > 10 %, run again" if spread > 0.10 else ""
                print(f"  {backend:<13} {clients:>7} {rate:>9.1f} {spread:>7.1%} {wait:>11.2f}{flag}")
    if warned:
        print("\nWARNING: some spreads passed 10 %: the machine was busy; those figures are not reliable.")
    RESULTS.write_text(json.dumps({
        "date": str(datetime.date.today()),
        "machine": machine,
        "versions": versions,
        "new_tokens": n,
        "rounds": args.rounds,
        "greedy": speed,
        "adapter_over_llama_cpp": round(adapter_ratio, 2),
        "llama_cpp_over_transformers": round(llama_ratio, 1),
        "peak_memory_gb": memory,
        "serve": concurrency,
        "reliable": not warned,
    }, indent=2) + "\n")
    print(f"\nwritten to {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}")


if __name__ == "__main__":
    main()
