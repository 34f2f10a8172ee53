"""How fast, and how big, is the course model on each local runtime?

1. Greedy decoding of ``--new-tokens`` tokens, 2 threads, interleaved for
   ``--rounds`` rounds (at least 7): the package's loop on transformers in
   fp32, the same loop on llama.cpp through ``LlamaCppLanguageModel``, and
   llama.cpp's own ``generate``. Targets: the adapter at 0.9 or more of
   llama.cpp's own speed; llama.cpp's speed over transformers' is reported.
   In the same rounds, transformers and llama.cpp's ``generate`` with 1
   thread, and transformers reading a 512-token prompt with 1 and 2 threads,
   to show what the second core buys, and where.
2. Memory of a fresh process that loads each runtime (and transformers in
   bf16) and generates once: resident (Linux's ``VmRSS``) and peak
   (``VmHWM``), next to a process that loads no model.
3. ``llmsforme serve`` with 1, 4 and 8 clients at once: on transformers,
   and on llama.cpp with 2 threads and with 1 (on 2 cores, the server's own
   threads need a core too). Both run one request at a time
   (``max_batch=None``, as llama.cpp must), so that only the runtime
   differs; ``benchmarks/batched_serving.py`` measures batching.

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
from importlib.resources import files
from pathlib import Path

import torch

from llmsforme import greedy, load_model
from llmsforme.lm import HFLanguageModel, LlamaCppLanguageModel
from rounds import NOISY, WARNING, add_rounds, check_rounds, flag, median_spread

PROMPT = "Once upon a time, in a small village by the sea,"
# The Part 4 pages read these figures (never timings of their own).
RESULTS = Path(__file__).resolve().parents[1] / "examples" / "part-4" / "data" / "local_runtimes.json"
#: Timed repetitions per round: one llama.cpp reply takes a fraction of a
#: second, too short to time alone on a noisy machine.
REPEATS = {"transformers": 1, "llama.cpp": 4, "prompt": 4}
#: The long prompt of the threads comparison.
PROMPT_TOKENS = 512

PEAK = """
import sys
import torch
from llmsforme import greedy, load_model
import llama_cpp  # every variant imports the same libraries, so that they cancel out
variant = sys.argv[1]
if variant != "nothing loaded":
    backend = "llama.cpp" if variant == "llama.cpp" else "transformers"
    options = {"n_threads": 2} if backend == "llama.cpp" else {"dtype": torch.bfloat16} if "bf16" in variant else {}
    model, tokenizer = load_model(backend=backend, progress=False, **options)
    greedy(model, "Once upon a time", tokenizer=tokenizer, max_new_tokens=64, eos_token_id=[])
# Resident memory now, and its high-water mark (loading can peak higher).
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(int(status["VmRSS"].split()[0]) * 1024, int(status["VmHWM"].split()[0]) * 1024)
"""
#: What the memory section measures: the libraries alone, then each runtime.
MEMORY_VARIANTS = ("nothing loaded", "transformers", "transformers bf16", "llama.cpp")



def _timed(run) -> float:  # noqa: ANN001
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_rounds(parser)
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()
    check_rounds(parser, args.rounds)
    n = args.new_tokens
    torch.set_num_threads(2)
    model, tokenizer = load_model(progress=False)
    llama, _ = load_model(backend="llama.cpp", n_threads=2)
    llama_1_thread, _ = load_model(backend="llama.cpp", n_threads=1)
    hf, cpp = HFLanguageModel(model, tokenizer), LlamaCppLanguageModel(llama)
    ids = hf.encode(PROMPT)

    def llama_own(engine=llama) -> None:  # noqa: ANN001
        # reset() first: generate() would otherwise reuse the previous run's
        # KV cache for the same prompt and skip reading it, which our loop does not.
        engine.reset()
        for count, _ in enumerate(engine.generate(ids, top_k=1, temp=0.0, reset=True), start=1):
            if count == n:
                return

    def with_threads(count: int, run):  # noqa: ANN001, ANN202
        def on_fewer_threads() -> None:
            torch.set_num_threads(count)
            try:
                run()
            finally:
                torch.set_num_threads(2)

        return on_fewer_threads

    # Reading a long prompt is one forward pass over all its tokens: large
    # matrix products, where threads help, unlike one token at a time.
    text = files("llmsforme").joinpath("data/course_text.txt").read_text()
    long_prompt = torch.tensor([hf.encode(text)[:PROMPT_TOKENS]])

    def read_prompt() -> None:
        with torch.no_grad():
            model(long_prompt)

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
        "transformers fp32, 1 thread": with_threads(1, lambda: greedy(hf, ids, max_new_tokens=n, eos_token_id=[])),
        "llama.cpp's generate, 1 thread": repeated(lambda: llama_own(llama_1_thread), REPEATS["llama.cpp"]),
        f"transformers fp32, reading {PROMPT_TOKENS} tokens": repeated(read_prompt, REPEATS["prompt"]),
        f"transformers fp32, reading {PROMPT_TOKENS} tokens, 1 thread": with_threads(
            1, repeated(read_prompt, REPEATS["prompt"])
        ),
    }
    tokens_per_run = {
        name: PROMPT_TOKENS * REPEATS["prompt"] if "reading" in name
        else n * (1 if name.startswith("transformers") else REPEATS["llama.cpp"])
        for name in runs
    }
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    versions = (f"torch {torch.__version__}, transformers {metadata.version('transformers')}, "
                f"llama-cpp-python {metadata.version('llama_cpp_python')}")
    print(f"{datetime.date.today()}  {machine}, {versions}")
    print(f"greedy, {n} new tokens (llama.cpp: {REPEATS['llama.cpp']} replies per timing), 2 threads "
          f"unless said, {args.rounds} interleaved rounds\n")
    for run in runs.values():
        run()  # warm up
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            times[name].append(_timed(run))
    warned = False
    speed = {}
    print(f"{'runtime':<50} {'tokens/s':>9} {'spread':>7}")
    for name, values in times.items():
        median, spread = median_spread(values)
        warned |= spread > NOISY
        rate = tokens_per_run[name] / median
        speed[name] = {"tokens_per_second": round(rate, 1), "spread": round(spread, 3)}
        print(f"{name:<50} {rate:>9.1f} {spread:>7.1%}{flag(spread)}")
    names = list(runs)
    adapter_ratio = speed[names[1]]["tokens_per_second"] / speed[names[2]]["tokens_per_second"]
    llama_ratio = speed[names[2]]["tokens_per_second"] / speed[names[0]]["tokens_per_second"]
    print(f"\nadapter / llama.cpp's own generate: {adapter_ratio:.2f}  (target >= 0.9)")
    print(f"llama.cpp / transformers fp32:      {llama_ratio:.1f}x")
    threads = {
        "transformers fp32": {"1": speed[names[3]]["tokens_per_second"], "2": speed[names[0]]["tokens_per_second"]},
        "llama.cpp Q4_1": {"1": speed[names[4]]["tokens_per_second"], "2": speed[names[2]]["tokens_per_second"]},
        f"transformers fp32, reading a {PROMPT_TOKENS}-token prompt": {
            "1": speed[names[6]]["tokens_per_second"], "2": speed[names[5]]["tokens_per_second"]
        },
    }
    for runtime, rates in threads.items():
        print(f"{runtime}, 2 threads / 1 thread: {rates['2'] / rates['1']:.2f}")
    greedy_2_threads = {name: speed[name] for name in names[:3]}

    print("\nmemory of a fresh process that imports torch, transformers and llama_cpp, then loads")
    print("the model and generates 64 tokens (llama.cpp: context of 8,192 tokens)")
    print(f"  {'':<17} {'resident':>9} {'peak':>7}")
    memory = {}
    for variant in MEMORY_VARIANTS:
        result = subprocess.run([sys.executable, "-c", PEAK, variant], capture_output=True, text=True, check=True)
        resident, peak = (int(word) for word in result.stdout.split()[-2:])
        memory[variant] = {"resident": round(resident / 1e9, 2), "peak": round(peak / 1e9, 2)}
        print(f"  {variant:<17} {resident / 1e9:6.2f} GB {peak / 1e9:4.2f} GB")

    print(f"\nllmsforme serve, requests of {n // 2} tokens, {args.rounds} rounds (each client sends "
          f"{REPEATS['transformers']} request(s) per round on transformers, {REPEATS['llama.cpp']} on llama.cpp)")
    from openai import OpenAI

    from llmsforme.server import MODEL_ID, start_server

    concurrency: dict[str, dict[str, float]] = {}
    print(f"  {'backend':<21} {'clients':>7} {'tokens/s':>9} {'spread':>7} {'mean wait s':>11}")
    backends = (("transformers", model), ("llama.cpp, 2 threads", llama), ("llama.cpp, 1 thread", llama_1_thread))
    for backend, served in backends:
        concurrency[backend] = {}
        per_round = REPEATS["transformers" if backend == "transformers" else "llama.cpp"]
        with start_server(served, tokenizer, max_batch=None) as server:
            client = OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
            messages = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]

            def one(latencies: list[float], counts: list[int], i: int) -> None:
                for _ in range(per_round):  # noqa: B023
                    start = time.perf_counter()
                    reply = client.chat.completions.create(  # noqa: B023
                        model=MODEL_ID, messages=messages, temperature=0, max_tokens=n // 2
                    )
                    latencies[i] += (time.perf_counter() - start) / per_round  # noqa: B023
                    counts[i] += reply.usage.completion_tokens

            for clients in (1, 4, 8):
                rates, waits = [], []
                for _ in range(args.rounds):
                    latencies, counts = [0.0] * clients, [0] * clients
                    workers = [threading.Thread(target=one, args=(latencies, counts, i)) for i in range(clients)]
                    start = time.perf_counter()
                    for worker in workers:
                        worker.start()
                    for worker in workers:
                        worker.join()
                    rates.append(sum(counts) / (time.perf_counter() - start))
                    waits.append(statistics.mean(latencies))
                rate, spread = median_spread(rates)
                warned |= spread > NOISY
                wait = statistics.median(waits)
                concurrency[backend][str(clients)] = {
                    "tokens_per_second": round(rate, 1), "spread": round(spread, 3), "mean_wait_s": round(wait, 2)
                }
                print(f"  {backend:<21} {clients:>7} {rate:>9.1f} {spread:>7.1%} {wait:>11.2f}{flag(spread)}")
    if warned:
        print(WARNING)
    RESULTS.write_text(json.dumps({
        "date": str(datetime.date.today()),
        "machine": machine,
        "versions": versions,
        "new_tokens": n,
        "rounds": args.rounds,
        "greedy": greedy_2_threads,
        "threads": threads,
        "adapter_over_llama_cpp": round(adapter_ratio, 2),
        "llama_cpp_over_transformers": round(llama_ratio, 1),
        "memory_gb": memory,
        "serve": concurrency,
        # Rows whose rounds varied by more than 10 %: read them as rough.
        "unsteady": [name for name, figures in speed.items() if figures["spread"] > 0.10]
        + [f"serve {backend}, {clients} clients" for backend, rows in concurrency.items()
           for clients, figures in rows.items() if figures["spread"] > 0.10],
    }, indent=2) + "\n")
    print(f"\nwritten to {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}")


if __name__ == "__main__":
    main()
