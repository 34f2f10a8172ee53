"""How fast does the digits model draw? Images per second for DDPM and DDIM at 10, 25 and 50 steps.

Each timing draws 4 batches of ``--batch`` images (the digits 0-9 in turn)
with guidance 3, on ``torch.get_num_threads()`` threads (2 on the course's
machine); the six settings are interleaved for ``--rounds`` rounds (at
least 7). Medians and spreads ((max - min) / median) are printed, with a
warning above 10 %. The training time is the one the training script
recorded in the weights' manifest.

The figures go to ``examples/part-5/data/diffusion_speed.json`` (with the
date and the machine), which the Part 5 pages read.

    .venv/bin/python benchmarks/diffusion_speed.py [--rounds 7] [--batch 10]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from importlib import metadata
from pathlib import Path

import torch

from llmsforme.diffusion import load_digits_model, sample
from rounds import NOISY, WARNING, add_rounds, check_rounds, flag

RESULTS = Path(__file__).resolve().parents[1] / "examples" / "part-5" / "data" / "diffusion_speed.json"
SETTINGS = [(sampler, steps) for sampler in ("ddim", "ddpm") for steps in (10, 25, 50)]
GUIDANCE = 3.0
#: Batches per timing: one batch of 10 steps takes a quarter of a second,
#: too short to time alone on a noisy machine.
REPEATS = 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_rounds(parser)
    parser.add_argument("--batch", type=int, default=10)
    args = parser.parse_args()
    check_rounds(parser, args.rounds)
    if args.batch < 1:
        parser.error("--batch must be at least 1")
    model = load_digits_model()
    digits = [i % 10 for i in range(args.batch)]
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    versions = f"torch {torch.__version__}, diffusers {metadata.version('diffusers')}"
    print(f"{datetime.date.today()}  {machine}, {versions}")
    print(f"batches of {args.batch} images ({REPEATS} per timing), guidance {GUIDANCE}, "
          f"{args.rounds} interleaved rounds\n")
    for sampler, steps in SETTINGS:  # warm up
        sample(model, digits, sampler=sampler, steps=steps, guidance_scale=GUIDANCE)
    times: dict[tuple[str, int], list[float]] = {setting: [] for setting in SETTINGS}
    for round_ in range(args.rounds):
        for sampler, steps in SETTINGS:
            start = time.perf_counter()
            for repeat in range(REPEATS):
                sample(model, digits, sampler=sampler, steps=steps, guidance_scale=GUIDANCE, seed=round_ * REPEATS + repeat)
            times[sampler, steps].append((time.perf_counter() - start) / REPEATS)
    rows, warned = [], False
    print(f"{'sampler':<8} {'steps':>5} {'images/s':>9} {'spread':>7}")
    for (sampler, steps), values in times.items():
        median = statistics.median(values)
        spread = (max(values) - min(values)) / median
        warned |= spread > NOISY
        rate = args.batch / median
        rows.append({"sampler": sampler, "steps": steps, "images_per_second": round(rate, 1),
                     "spread": round(spread, 3)})
        print(f"{sampler:<8} {steps:>5} {rate:>9.1f} {spread:>7.1%}{flag(spread)}")
    training = model.manifest["training"]
    print(f"\ntraining (scripts/train_digits_diffusion.py, as recorded in the manifest): "
          f"{training['seconds']} s for {training['epochs']} epochs on {training['machine']}")
    if warned:
        print(WARNING)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "date": str(datetime.date.today()),
        "machine": machine,
        "versions": versions,
        "batch": args.batch,
        "guidance": GUIDANCE,
        "rounds": args.rounds,
        "rows": rows,
        "training_seconds": training["seconds"],
        "unsteady": [f"{r['sampler']} {r['steps']}" for r in rows if r["spread"] > 0.10],
    }, indent=2) + "\n")
    print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
