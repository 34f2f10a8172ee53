"""Training throughput and peak memory: LoRA (peft, rank 8 on q/k/v/o) against full fine-tuning.

The same batches of the course assistant's conversations (examples/part-2/
data), one training step at a time, the two modes interleaved for
``--rounds`` rounds (at least 7). Prints the median tokens per second of
each mode, the spread (max - min) / median with a warning above 10 %, the
ratio LoRA / full, and the peak resident memory of each mode measured in a
fresh process (VmHWM).

    .venv/bin/python benchmarks/lora_training.py [--rounds 7]
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
import time
from pathlib import Path

from rounds import NOISY, WARNING, add_rounds, check_rounds, flag

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT / "examples" / "part-2" / "data" / "course-assistant.jsonl"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def setup(mode: str):
    import peft
    import torch

    from llmsforme import load_model
    from llmsforme.finetune import chat_batch

    model, tokenizer = load_model(progress=False)
    if mode == "lora":
        model = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                                           target_modules=TARGETS))
    conversations = [json.loads(line)["messages"] for line in DATASET.read_text().splitlines()]
    batch = chat_batch(tokenizer, conversations[:8])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    model.train()

    def step() -> int:
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return int(batch["attention_mask"].sum())

    return step


def peak_rss() -> int:
    """This process's largest resident size so far, in bytes (Linux's VmHWM).

    Not ru_maxrss: on Linux a child inherits its parent's maximum across fork
    and exec, so a child of a large process would report the parent's size.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def peak_memory(mode: str) -> int:
    """Peak RSS in bytes of a fresh process that runs two steps of ``mode``."""
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import lora_training as b; "
            f"s = b.setup({mode!r}); s(); s(); print(b.peak_rss())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return int(out.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_rounds(parser)
    args = parser.parse_args()
    check_rounds(parser, args.rounds)
    import torch

    print(f"{datetime.date.today()}  {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    steps = {mode: setup(mode) for mode in ("lora", "full")}
    for step in steps.values():
        step()  # warm up: the first step allocates the optimizer state
    speeds: dict[str, list[float]] = {mode: [] for mode in steps}
    for _ in range(args.rounds):
        for mode, step in steps.items():
            start = time.perf_counter()
            tokens = step()
            speeds[mode].append(tokens / (time.perf_counter() - start))
    del steps
    print(f"batch of 8 conversations, {args.rounds} interleaved rounds\n")
    print(f"{'mode':6} {'tokens/s':>9} {'spread':>7} {'peak RSS':>9}")
    warned = False
    medians = {}
    for mode, values in speeds.items():
        medians[mode] = statistics.median(values)
        spread = (max(values) - min(values)) / medians[mode]
        warned |= spread > NOISY
        print(f"{mode:6} {medians[mode]:9.0f} {100 * spread:6.1f}% {peak_memory(mode) / 1e9:7.2f} GB{flag(spread)}")
    print(f"\nLoRA / full: {medians['lora'] / medians['full']:.2f}x the tokens per second")
    if warned:
        print(WARNING)


if __name__ == "__main__":
    main()
