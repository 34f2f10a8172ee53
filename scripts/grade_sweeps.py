"""Grade the digits model over guidance scales and over samplers and steps.

Two pages of Part 5 show these sweeps. Each point draws 100-200 images, so
the sweeps take about two minutes apiece on 2 cores, more than a page may
spend. This script runs them with the package's ``grade`` and stores the
results, which the pages read:

- ``examples/part-5/data/guidance_scales.json``: guidance scales 0-4, 20
  images of each digit, 25 DDIM steps, seed 0, with the grader's verdict on
  every image at the shipped scale (for the confusion exercise);
- ``examples/part-5/data/sampler_steps.json``: DDIM and DDPM at 5, 10, 25
  and 50 steps, 10 images of each digit, the shipped guidance, seed 0.

Every step is seeded, so a run on the same machine and versions writes the
same figures; ``tests/test_diffusion.py`` recomputes the cheapest point of
each file and compares.

    .venv/bin/python scripts/grade_sweeps.py [--only guidance|samplers]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from llmsforme.diffusion import DEFAULT_GUIDANCE, digit_classifier, grade, load_digits_model

DATA = Path(__file__).resolve().parents[1] / "examples" / "part-5" / "data"
GUIDANCE = {"scales": [0, 1, 2, 3, 4], "per_digit": 20, "steps": 25, "seed": 0}
SAMPLERS = {"samplers": ["ddim", "ddpm"], "steps": [5, 10, 25, 50], "per_digit": 10, "seed": 0}


def _row(result: Any) -> dict[str, Any]:
    return {
        "accuracy": round(result.accuracy, 3),
        "diversity": round(result.diversity, 3),
        "per_digit": {str(digit): round(share, 3) for digit, share in result.per_digit.items()},
    }


def _header(started: float) -> dict[str, Any]:
    return {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "versions": {name: metadata.version(name) for name in ("torch", "diffusers", "scikit-learn")},
        "seconds": round(time.perf_counter() - started),
    }


def guidance_sweep(model: Any, classifier: Any) -> dict[str, Any]:
    """Accuracy and diversity at each guidance scale (plus every verdict at the shipped one)."""
    started = time.perf_counter()
    rows, verdicts = {}, []
    for scale in GUIDANCE["scales"]:
        result = grade(model, classifier, per_digit=GUIDANCE["per_digit"], steps=GUIDANCE["steps"],
                       guidance_scale=scale, seed=GUIDANCE["seed"])
        rows[str(scale)] = _row(result)
        if scale == DEFAULT_GUIDANCE:
            verdicts = classifier.predict(result.images).tolist()
        print(f"scale {scale}: accuracy {result.accuracy:.2f}, diversity {result.diversity:.2f}", flush=True)
    return {**_header(started), **GUIDANCE, "sampler": "ddim", "shipped_scale": DEFAULT_GUIDANCE,
            "rows": rows, "verdicts_at_shipped_scale": verdicts}


def sampler_sweep(model: Any, classifier: Any) -> dict[str, Any]:
    """Accuracy and diversity for each sampler at each step count."""
    started = time.perf_counter()
    rows = []
    for sampler in SAMPLERS["samplers"]:
        for steps in SAMPLERS["steps"]:
            result = grade(model, classifier, per_digit=SAMPLERS["per_digit"], sampler=sampler,
                           steps=steps, seed=SAMPLERS["seed"])
            rows.append({"sampler": sampler, "steps": steps, **_row(result)})
            print(f"{sampler} {steps:>2} steps: accuracy {result.accuracy:.2f}, "
                  f"diversity {result.diversity:.2f}", flush=True)
    return {**_header(started), **SAMPLERS, "guidance_scale": DEFAULT_GUIDANCE, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("guidance", "samplers"))
    parser.add_argument("--out", type=Path, default=DATA, help="the folder to write into")
    args = parser.parse_args()
    model, classifier = load_digits_model(), digit_classifier()
    sweeps = {"guidance": (guidance_sweep, "guidance_scales.json"),
              "samplers": (sampler_sweep, "sampler_steps.json")}
    for name, (sweep, filename) in sweeps.items():
        if args.only in (None, name):
            document = sweep(model, classifier)
            path = args.out / filename
            path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
            print(f"{document['seconds']} s; written to {path}")


if __name__ == "__main__":
    main()
