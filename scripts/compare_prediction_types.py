"""Does predicting the noise at zero terminal SNR cause the speckled DDIM digits?

The course's digits model predicts the noise (epsilon) on a cosine schedule
that ends at almost zero signal (abar = 6e-8 at t = 199), so its first clean
estimate multiplies any noise error by about 4,000. Lin et al. (2024) pair
such a schedule with v-prediction, which has no such division. This script
compares the shipped epsilon model with a v-prediction model trained by the
same script, recipe and seed (``--prediction-type v_prediction``), on the
same starting noise:

- **accuracy**: the share of samples that an independent classifier reads
  as the digit asked for;
- **diversity**: mean distance between images of the same digit;
- **roughness**: mean absolute difference between a pixel and the mean of
  its four neighbours (pixels in [0, 1]): speckles raise it. The real
  digits' roughness is printed as the reference.

Each figure is the median over several sampling seeds, with its range.

    .venv/bin/python scripts/train_digits_diffusion.py --prediction-type v_prediction --out /tmp/digits-v
    .venv/bin/python scripts/compare_prediction_types.py /tmp/digits-v

About 12 minutes on 2 cores (the training, about 20). Writes examples/part-5/data/prediction_types.json,
which the page "Diffusion from scratch" reads.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import time
from importlib import metadata
from pathlib import Path

import torch
import torch.nn.functional as F

from llmsforme.diffusion import digit_classifier, diversity, load_digit_images, load_digits_model, sample

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "examples" / "part-5" / "data" / "prediction_types.json"
SEEDS = (11, 12, 13, 14, 15)  # not the training script's evaluation seed (1234)
SETTINGS = (("ddim", 10), ("ddim", 25), ("ddim", 50), ("ddpm", 25))
PER_DIGIT = 10


def roughness(images: torch.Tensor) -> float:
    """Mean |pixel - mean of its 4 neighbours| over the inner pixels, images in [0, 1]."""
    kernel = torch.tensor([[0.0, 0.25, 0.0], [0.25, -1.0, 0.25], [0.0, 0.25, 0.0]]).view(1, 1, 3, 3)
    return float(F.conv2d(images.float(), kernel).abs().mean())


def summary(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("v_model", type=Path, help="a folder written with --prediction-type v_prediction")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.manual_seed(0)
    models = {"epsilon (shipped)": load_digits_model(), "v_prediction": load_digits_model(args.v_model)}
    if models["v_prediction"].prediction_type != "v_prediction":
        parser.error(f"{args.v_model} holds a {models['v_prediction'].prediction_type} model, not v_prediction")
    classifier = digit_classifier()
    real, _ = load_digit_images()
    real_roughness = roughness((real + 1) / 2)
    digits = [digit for digit in range(10) for _ in range(PER_DIGIT)]
    labels = torch.tensor(digits)
    results: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    started = time.perf_counter()
    print(f"{len(SEEDS)} seeds x {len(digits)} images per setting; real digits' roughness {real_roughness:.3f}")
    print(f"{'model':<18} {'sampler':<8} {'accuracy':>18} {'diversity':>18} {'roughness':>18}")
    for sampler, steps in SETTINGS:
        setting = f"{sampler} {steps}"
        for name, model in models.items():
            scores: dict[str, list[float]] = {"accuracy": [], "diversity": [], "roughness": []}
            for seed in SEEDS:
                images = sample(model, digits, sampler=sampler, steps=steps, seed=seed)
                scores["accuracy"].append(float((classifier.predict(images) == labels).float().mean()))
                scores["diversity"].append(diversity(images, labels))
                scores["roughness"].append(roughness(images))
            row = {key: summary(values) for key, values in scores.items()}
            results.setdefault(setting, {})[name] = row
            cells = "".join(f" {r['median']:>6.3f} ({r['min']:.3f}-{r['max']:.3f})" for r in row.values())
            print(f"{name:<18} {setting:<8}{cells}", flush=True)
    v_manifest = json.loads((args.v_model / "manifest.json").read_text(encoding="utf-8"))
    document = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "versions": {name: metadata.version(name) for name in ("torch", "diffusers", "scikit-learn")},
        "seeds": list(SEEDS),
        "images_per_seed": len(digits),
        "guidance_scale": "the package's default",
        "real_roughness": round(real_roughness, 3),
        "v_model": {
            "trained_with": "scripts/train_digits_diffusion.py --prediction-type v_prediction",
            "chosen_epoch": v_manifest["training"]["evaluation"]["chosen_epoch"],
            "accuracy_by_epoch": v_manifest["training"]["evaluation"]["by_epoch"],
            "epochs": v_manifest["training"]["epochs"],
            "sha256": v_manifest["sha256"],
        },
        "results": results,
        "seconds": round(time.perf_counter() - started),
    }
    args.out.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    print(f"{document['seconds']} s; written to {args.out}")


if __name__ == "__main__":
    main()
