"""How long does the course model take to load, cold and warm?

Each measurement runs in a fresh Python process, as a reader's notebook would:

* cold: an empty cache folder, so the GGUF file is converted and cached;
* warm: the same cache again, several times (median printed).

Imports (torch, transformers, llmsforme) are timed apart from the load itself;
neither includes the Python start-up.

    .venv/bin/python benchmarks/load_model.py [--repeats 5] [--skip-cold]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = """
import json, time
start = time.perf_counter()
import torch, transformers, transformers.models.llama.modeling_llama
from llmsforme import load_model
imported = time.perf_counter()
model, tokenizer = load_model(progress=False)
done = time.perf_counter()
print(json.dumps({"import": imported - start, "load": done - imported}))
"""


def measure(cache: str) -> dict[str, float]:
    env = {**os.environ, "LLMSFORME_CACHE": cache, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-cold", action="store_true", help="use the default cache, no conversion")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    with tempfile.TemporaryDirectory() as empty:
        if args.skip_cold:
            from llmsforme.model_source import cache_root

            cache = str(cache_root())
        else:
            cache = empty
            cold = measure(cache)
            print(f"cold (convert + cache): import {cold['import']:.1f} s, load {cold['load']:.1f} s")
        warm = [measure(cache) for _ in range(args.repeats)]
        imports = statistics.median(w["import"] for w in warm)
        loads = statistics.median(w["load"] for w in warm)
        print(f"warm (from cache), median of {args.repeats}: import {imports:.1f} s, load {loads:.2f} s")


if __name__ == "__main__":
    main()
