"""What does the OpenAI-compatible server cost, and how does it behave under load?

1. Overhead: one greedy reply of ``--new-tokens`` tokens through the server
   (the official ``openai`` client, real HTTP, a real uvicorn) against the
   package's :func:`~llmsforme.chat.chat` in-process, same prompt and same
   tokens, interleaved for ``--rounds`` rounds (at least 7). The ratio
   server / in-process should stay at or below 1.1.
2. Time to first token of a streamed reply, against its total time.
3. Throughput with 1, 4 and 8 concurrent clients, each sending one request
   of ``--new-tokens`` tokens: the server runs one generation at a time
   (``max_batch=None``, the engine these figures were first measured on), so
   the total tokens per second stay flat while each client waits longer.
   ``benchmarks/batched_serving.py`` compares it with the batched engine.

Medians and spreads ((max - min) / median) are printed; a spread above 10 %
is flagged, as the machine was busy and the figure is not reliable.

    .venv/bin/python benchmarks/server.py [--rounds 7] [--new-tokens 64]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import threading
import time
from importlib import metadata

import torch
from openai import OpenAI

from llmsforme import chat, load_model
from llmsforme.server import MODEL_ID, start_server
from rounds import NOISY, WARNING, add_rounds, check_rounds, flag, median_spread

MESSAGES = [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}]




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_rounds(parser)
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()
    check_rounds(parser, args.rounds)
    if args.new_tokens < 1:
        parser.error("--new-tokens must be >= 1")
    n = args.new_tokens
    model, tokenizer = load_model(progress=False)
    print(
        f"{datetime.date.today()}  {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"openai {metadata.version('openai')}, fastapi {metadata.version('fastapi')}, "
        f"uvicorn {metadata.version('uvicorn')}"
    )
    print(f"{n} greedy tokens per request, {args.rounds} interleaved rounds\n")
    warned = False
    with start_server(model, tokenizer, max_batch=None) as server:
        client = OpenAI(base_url=server.base_url, api_key="not-needed", max_retries=0)

        def through_server() -> tuple[float, str, int]:
            start = time.perf_counter()
            response = client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, temperature=0, max_tokens=n)
            return time.perf_counter() - start, response.choices[0].message.content, response.usage.completion_tokens

        def in_process() -> tuple[float, str]:
            start = time.perf_counter()
            reply = chat(model, tokenizer, MESSAGES, max_new_tokens=n)[-1]["content"]
            return time.perf_counter() - start, reply

        def streamed() -> tuple[float, float]:
            start = time.perf_counter()
            first = None
            for piece in client.chat.completions.create(
                model=MODEL_ID, messages=MESSAGES, temperature=0, max_tokens=n, stream=True
            ):
                if first is None and piece.choices and piece.choices[0].delta.content:
                    first = time.perf_counter() - start
            return first or float("nan"), time.perf_counter() - start

        # 1 and 2: overhead and time to first token, interleaved.
        through_server(), in_process(), streamed()  # warm up
        server_times, local_times, firsts, totals = [], [], [], []
        tokens = 0
        for _ in range(args.rounds):
            t_server, text_server, tokens = through_server()
            t_local, text_local = in_process()
            if text_server != text_local:
                raise SystemExit("the server's greedy reply differs from chat(): not the same work, no comparison")
            first, total = streamed()
            server_times.append(t_server)
            local_times.append(t_local)
            firsts.append(first)
            totals.append(total)
        (s, s_spread), (l, l_spread) = median_spread(server_times), median_spread(local_times)
        warned |= max(s_spread, l_spread) > 0.10
        print(f"overhead ({tokens} tokens generated)")
        print(f"  in-process chat():  {l:6.3f} s  (spread {l_spread:5.1%})")
        print(f"  through the server: {s:6.3f} s  (spread {s_spread:5.1%})")
        print(f"  ratio server / in-process: {s / l:.3f}  (target <= 1.1){flag(max(s_spread, l_spread))}")
        (f, f_spread), (t, t_spread) = median_spread(firsts), median_spread(totals)
        warned |= max(f_spread, t_spread) > 0.10
        print("\nstreaming")
        print(f"  time to first token: {f * 1000:6.0f} ms  (spread {f_spread:5.1%})")
        print(f"  total:               {t * 1000:6.0f} ms  (spread {t_spread:5.1%}){flag(max(f_spread, t_spread))}")

        # 3: throughput with concurrent clients.
        print(f"\nconcurrent clients, one request of {n} tokens each")
        print(f"  {'clients':>7} {'tokens/s':>9} {'spread':>7} {'mean wait s':>11}")
        for clients in (1, 4, 8):
            rates, waits = [], []
            for _ in range(args.rounds):
                latencies = [0.0] * clients
                counts = [0] * clients

                def one(i: int) -> None:
                    latencies[i], _, counts[i] = through_server()

                start = time.perf_counter()
                threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                rates.append(sum(counts) / (time.perf_counter() - start))
                waits.append(statistics.mean(latencies))
            rate, spread = median_spread(rates)
            warned |= spread > NOISY
            print(f"  {clients:>7} {rate:>9.1f} {spread:>7.1%} {statistics.median(waits):>11.2f}{flag(spread)}")
    if warned:
        print(WARNING)


if __name__ == "__main__":
    main()
