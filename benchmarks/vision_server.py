"""What serving the vision model costs: resident memory, and answers per second over HTTP.

1. Memory: a fresh process loads the course model, starts the server with
   or without ``vision=True``, answers one request (an image one with
   vision), and reports its resident set (VmRSS). The two kinds of process
   alternate for ``--rounds`` rounds (at least 7). Sharing the language
   model's weights, the vision server should cost only the CLIP and the
   projector (a few MB) more; two copies of the course model would cost
   hundreds.
2. Speed: ``--questions`` held-out digits asked "Which digit is this?"
   through the server with the official ``openai`` client (a PNG data URL
   each), against the same greedy answers in-process, interleaved.

Medians and spreads ((max - min) / median) are printed, a spread above
10 % is flagged, and the figures are written to
``benchmarks/results/vision_server.json`` for the Performance page.

    .venv/bin/python benchmarks/vision_server.py [--rounds 7] [--questions 20]
"""

from __future__ import annotations

import argparse
import base64
import datetime
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rounds import add_rounds, check_rounds, flag, median_spread

RESULTS = Path(__file__).resolve().parent / "results" / "vision_server.json"
QUESTION = "Which digit is this?"

# Run in a child process: one server, one request, then the resident memory.
CHILD = """
import base64, io, sys
import numpy as np
from PIL import Image
from openai import OpenAI
from llmsforme.server import MODEL_ID, VISION_MODEL_ID, start_server

vision = sys.argv[1] == "vision"
with start_server(vision=vision) as server:
    client = OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
    if vision:
        png = io.BytesIO()
        Image.fromarray(np.full((8, 8), 200, dtype=np.uint8)).save(png, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
        content = [{"type": "text", "text": "Which digit is this?"}, {"type": "image_url", "image_url": {"url": url}}]
        client.chat.completions.create(model=VISION_MODEL_ID, messages=[{"role": "user", "content": content}],
                                       temperature=0, max_tokens=4)
    else:
        client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Hi"}],
                                       temperature=0, max_tokens=4)
    rss = [line for line in open("/proc/self/status") if line.startswith("VmRSS")][0].split()[1]
    print(int(rss) * 1024)
"""




def resident_bytes(kind: str) -> int:
    out = subprocess.run([sys.executable, "-c", CHILD, kind], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_rounds(parser)
    parser.add_argument("--questions", type=int, default=20)
    args = parser.parse_args()
    check_rounds(parser, args.rounds)
    if not 1 <= args.questions <= 360:
        parser.error("--questions must be in [1, 360] (the held-out digits)")

    import numpy as np
    import torch
    from openai import OpenAI
    from PIL import Image
    from sklearn.datasets import load_digits

    from llmsforme.decoding import greedy
    from llmsforme.multimodal import split_digits
    from llmsforme.multimodal.vision_language import read_image
    from llmsforme.server import VISION_MODEL_ID, start_server

    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    print(f"{datetime.date.today()}  {machine}, torch {torch.__version__}, {args.rounds} interleaved rounds\n")

    # 1. Memory, one fresh process per measurement, alternating.
    text_only, with_vision = [], []
    for round_ in range(args.rounds):
        text_only.append(resident_bytes("text"))
        with_vision.append(resident_bytes("vision"))
        print(f"round {round_ + 1}: text only {text_only[-1] / 2**20:.0f} MiB, "
              f"with vision {with_vision[-1] / 2**20:.0f} MiB", flush=True)
    text_mib, text_spread = median_spread([b / 2**20 for b in text_only])
    vision_mib, vision_spread = median_spread([b / 2**20 for b in with_vision])
    extra = statistics.median([(v - t) / 2**20 for t, v in zip(text_only, with_vision)])
    print(f"\nresident memory: text only {text_mib:.0f} MiB (spread {text_spread:.1%}){flag(text_spread)}, "
          f"with vision {vision_mib:.0f} MiB (spread {vision_spread:.1%}){flag(vision_spread)}; "
          f"the vision model adds {extra:.0f} MiB (ratio {vision_mib / text_mib:.3f})\n")

    # 2. Answers per second: through the server against in-process, interleaved.
    digits = load_digits()
    _, held = split_digits(torch.tensor(digits.target))
    files = []
    for pixels in np.round(digits.images[held.numpy()[: args.questions]] * 255 / 16).astype(np.uint8):
        png = io.BytesIO()
        Image.fromarray(pixels).save(png, format="PNG")
        files.append(png.getvalue())
    labels = digits.target[held.numpy()[: args.questions]]
    server_times, local_times, right = [], [], 0
    with start_server(vision=True) as server:
        client = OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        vlm = server.engine.vision
        ids = vlm.prompt_ids(QUESTION)

        def through_server() -> list[str]:
            answers = []
            for data in files:
                url = "data:image/png;base64," + base64.b64encode(data).decode()
                content = [{"type": "text", "text": QUESTION}, {"type": "image_url", "image_url": {"url": url}}]
                reply = client.chat.completions.create(
                    model=VISION_MODEL_ID, messages=[{"role": "user", "content": content}], temperature=0, max_tokens=8
                )
                answers.append(reply.choices[0].message.content)
            return answers

        def in_process() -> list[str]:
            return [greedy(vlm.language_model(read_image(data)), ids, max_new_tokens=8, eos_token_id=2).texts[0]
                    for data in files]

        for round_ in range(args.rounds):
            start = time.perf_counter()
            served = through_server()
            server_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            local = in_process()
            local_times.append(time.perf_counter() - start)
            if served != local:
                raise SystemExit(f"the server's answers differ from in-process: {served} != {local}")
            print(f"round {round_ + 1}: server {server_times[-1]:.2f} s, in-process {local_times[-1]:.2f} s",
                  flush=True)
        right = sum(str(int(label)) in answer for label, answer in zip(labels, served))
    server_s, server_spread = median_spread(server_times)
    local_s, local_spread = median_spread(local_times)
    ratios = [s / local for s, local in zip(server_times, local_times)]
    ratio, ratio_spread = median_spread(ratios)
    n = len(files)
    print(f"\n{n} questions: server {n / server_s:.2f} answers/s (spread {server_spread:.1%}){flag(server_spread)}, "
          f"in-process {n / local_s:.2f} answers/s (spread {local_spread:.1%}){flag(local_spread)}; "
          f"server / in-process time {ratio:.2f} (spread {ratio_spread:.1%}){flag(ratio_spread)}; "
          f"{right} of {n} named the digit")

    result = {
        "date": str(datetime.date.today()),
        "machine": machine,
        "versions": {"torch": torch.__version__},
        "rounds": args.rounds,
        "text_only_mib": round(text_mib, 1),
        "with_vision_mib": round(vision_mib, 1),
        "vision_adds_mib": round(extra, 1),
        "memory_spread": round(max(text_spread, vision_spread), 3),
        "questions": n,
        "server_answers_per_s": round(n / server_s, 2),
        "in_process_answers_per_s": round(n / local_s, 2),
        "server_over_in_process": round(ratio, 2),
        "ratio_spread": round(ratio_spread, 3),
        "named_right": right,
        "noisy": max(text_spread, vision_spread, ratio_spread) > 0.10,
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}")


if __name__ == "__main__":
    main()
