"""How fast are the package's quantize and dequantize next to the gguf package's?

On the course model's real weights (the 210 linear layers, 106 million
weights), for Q8_0, Q4_0 and Q4_1: ours and gguf's interleaved, ``--rounds``
times each (at least 7), then the median time in MB of float32 weights per
second, the spread (max - min) / median, and the ratio ours / gguf (> 1: we
are faster). A spread above 10 % is flagged: these machines are noisy, and
such a round should be run again.

    .venv/bin/python benchmarks/quantization.py [--rounds 7] [--layers 30]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from importlib import metadata

import gguf
import numpy as np
import torch

from llmsforme import load_model
from llmsforme.quantization import KINDS, dequantize, quantize
from rounds import NOISY, add_rounds, check_rounds, flag, median_spread



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_rounds(parser)
    parser.add_argument("--layers", type=int, default=30, help="decoder layers whose weights are used (1-30)")
    args = parser.parse_args()
    check_rounds(parser, args.rounds)
    if not 1 <= args.layers <= 30:
        parser.error("--layers must be from 1 to 30")
    model, _ = load_model(progress=False)
    weights = [m.weight.detach().clone() for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and ".layers." in name
               and int(name.split(".layers.")[1].split(".")[0]) < args.layers]
    arrays = [w.numpy() for w in weights]
    megabytes = sum(w.numel() for w in weights) * 4 / 1e6
    print(f"{datetime.date.today()}  {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"gguf {metadata.version('gguf')}")
    print(f"{len(weights)} matrices, {megabytes:.0f} MB of float32 weights, {args.rounds} interleaved rounds\n")
    print(f"{'':6} {'step':10} {'ours MB/s':>10} {'gguf MB/s':>10} {'ours/gguf':>10} {'spread':>14}")
    warned = False
    for kind in KINDS:
        qtype = gguf.GGMLQuantizationType[kind]
        raws = [quantize(w, kind) for w in weights]
        raw_arrays = [gguf.quants.quantize(a, qtype) for a in arrays]
        timings: dict[str, list[float]] = {k: [] for k in ("q ours", "q gguf", "dq ours", "dq gguf")}
        for _ in range(args.rounds):
            start = time.perf_counter()
            for w in weights:
                quantize(w, kind)
            timings["q ours"].append(time.perf_counter() - start)
            start = time.perf_counter()
            for a in arrays:
                gguf.quants.quantize(a, qtype)
            timings["q gguf"].append(time.perf_counter() - start)
            start = time.perf_counter()
            for raw, w in zip(raws, weights):
                dequantize(raw, kind, w.shape)
            timings["dq ours"].append(time.perf_counter() - start)
            start = time.perf_counter()
            for data in raw_arrays:
                np.asarray(gguf.quants.dequantize(data, qtype))
            timings["dq gguf"].append(time.perf_counter() - start)
        for step, ours, theirs in (("quantize", "q ours", "q gguf"), ("dequantize", "dq ours", "dq gguf")):
            (t_ours, s_ours), (t_theirs, s_theirs) = median_spread(timings[ours]), median_spread(timings[theirs])
            warned |= max(s_ours, s_theirs) > NOISY
            print(f"{kind:6} {step:10} {megabytes / t_ours:10.0f} {megabytes / t_theirs:10.0f} "
                  f"{t_theirs / t_ours:10.2f} {100 * s_ours:5.1f}%/{100 * s_theirs:4.1f}%{flag(max(s_ours, s_theirs))}")
    if warned:
        print("\nWARNING: some spreads passed 10 %: the machine was busy; the ratios are not reliable.")


if __name__ == "__main__":
    main()
