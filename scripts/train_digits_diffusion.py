"""Train the course's digits diffusion model on the CPU, and write it into the package.

A small class-conditional ``diffusers.UNet2DModel`` learns to predict the
noise in scikit-learn's 1,797 handwritten digits (resized to 16 x 16, scaled
to [-1, 1]) at a random timestep of a 200-step cosine schedule; with
``--prediction-type v_prediction`` it learns
``v = sqrt(abar) * noise - sqrt(1 - abar) * clean`` instead, the target
that Lin et al. (2024) pair with a schedule ending at zero signal. One label in
ten is replaced by the "no digit" class 10, so that the same network also
learns the unconditional prediction that classifier-free guidance needs.

An exponential moving average (EMA) of the weights and a cosine learning
rate make the result steadier; the EMA weights are graded at a few epochs
(conditional accuracy of 10 x 10 samples, 25 DDIM steps, guidance 3, with an
evaluation seed that the tests and pages do not use), and the best are
written with a manifest: how they were made, and the sha256 of each file.

    .venv/bin/python scripts/train_digits_diffusion.py [--epochs 60] [--out FOLDER]
        [--prediction-type epsilon|v_prediction]

About 6 minutes on 2 CPU cores. Seeded: the same machine and versions give
the same weights.
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import time
from importlib import metadata
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel

from llmsforme.diffusion import (
    PREDICTION_TYPES,
    add_noise,
    cosine_schedule,
    digit_classifier,
    grade,
    load_digit_images,
)
from llmsforme.diffusion.weights import DigitsModel, shipped_folder, write_weights_folder

SEED = 0
EVALUATION_SEED = 1234  # chooses the checkpoint; tests and pages use other seeds
TIMESTEPS = 200
NULL_LABEL = 10
UNET = {
    "sample_size": 16,
    "in_channels": 1,
    "out_channels": 1,
    "layers_per_block": 2,
    "block_out_channels": (32, 64),
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D"),
    "up_block_types": ("AttnUpBlock2D", "UpBlock2D"),
    "num_class_embeds": NULL_LABEL + 1,  # digits 0-9, and "no digit"
}
TRAINING = {
    "batch_size": 64,
    "learning_rate": 2e-3,
    "warmup_steps": 100,
    "ema_decay": 0.995,
    "label_dropout": 0.1,
    "grad_clip": 1.0,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--evaluate-every", type=int, default=5, help="grade the EMA weights every N epochs")
    parser.add_argument(
        "--evaluate-per-digit", type=int, default=10, help="samples of each digit per grading (fewer: quicker, rougher)"
    )
    parser.add_argument("--images", type=int, default=1797, help="train on the first N digits only (quick checks)")
    parser.add_argument("--out", type=Path, default=shipped_folder())
    parser.add_argument(
        "--prediction-type", choices=PREDICTION_TYPES, default="epsilon",
        help="what the network learns to predict: the noise (the shipped model) or v",
    )
    args = parser.parse_args()
    if min(args.epochs, args.evaluate_every, args.evaluate_per_digit, args.images) < 1:
        parser.error("--epochs, --evaluate-every, --evaluate-per-digit and --images must be at least 1")
    started = time.perf_counter()
    torch.manual_seed(SEED)
    generator = torch.Generator().manual_seed(SEED)
    images, labels = load_digit_images(size=UNET["sample_size"])
    images, labels = images[: args.images], labels[: args.images]
    data = images * 2 - 1  # the model works in [-1, 1]
    abar = cosine_schedule(TIMESTEPS)
    unet = UNet2DModel(**UNET)
    print(f"{unet.num_parameters():,} parameters; {len(data)} images; {args.epochs} epochs")
    ema = EMAModel(unet.parameters(), decay=TRAINING["ema_decay"])
    optimizer = torch.optim.AdamW(unet.parameters(), lr=TRAINING["learning_rate"])
    batches = math.ceil(len(data) / TRAINING["batch_size"])
    schedule = get_cosine_schedule_with_warmup(optimizer, TRAINING["warmup_steps"], args.epochs * batches)
    classifier = digit_classifier()
    print(f"grader: SVC, held-out accuracy on real digits {classifier.accuracy:.3f}")
    losses, evaluations, best = [], {}, None
    for epoch in range(1, args.epochs + 1):
        unet.train()
        order = torch.randperm(len(data), generator=generator)
        total = 0.0
        for start in range(0, len(data), TRAINING["batch_size"]):
            batch = order[start : start + TRAINING["batch_size"]]
            clean, label = data[batch], labels[batch].clone()
            label[torch.rand(len(batch), generator=generator) < TRAINING["label_dropout"]] = NULL_LABEL
            t = torch.randint(0, TIMESTEPS, (len(batch),), generator=generator)
            noise = torch.randn(clean.shape, generator=generator)
            if args.prediction_type == "epsilon":
                target = noise
            else:  # v = sqrt(abar) noise - sqrt(1 - abar) clean
                level = abar[t].view(-1, 1, 1, 1)
                target = level**0.5 * noise - (1 - level) ** 0.5 * clean
            loss = F.mse_loss(unet(add_noise(clean, noise, t, abar), t, class_labels=label).sample, target)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), TRAINING["grad_clip"])
            optimizer.step()
            schedule.step()
            ema.step(unet.parameters())
            total += loss.item() * len(batch)
        losses.append(round(total / len(data), 5))
        line = f"epoch {epoch:>3}  loss {losses[-1]:.4f}  {time.perf_counter() - started:6.0f} s"
        if epoch % args.evaluate_every == 0 or epoch == args.epochs:
            ema.store(unet.parameters())
            ema.copy_to(unet.parameters())
            unet.eval()
            model = DigitsModel(
                unet, abar, NULL_LABEL, UNET["sample_size"], manifest={}, prediction_type=args.prediction_type
            )
            accuracy = grade(
                model, classifier, per_digit=args.evaluate_per_digit, steps=25, guidance_scale=3.0, seed=EVALUATION_SEED
            ).accuracy
            evaluations[epoch] = round(accuracy, 3)
            line += f"  conditional accuracy (EMA, guidance 3) {accuracy:.2f}"
            if best is None or accuracy > evaluations[best[0]]:
                best = (epoch, {name: value.clone() for name, value in unet.state_dict().items()})
            ema.restore(unet.parameters())
        print(line, flush=True)
    chosen, state = best
    unet.load_state_dict(state)
    seconds = round(time.perf_counter() - started)
    print(f"chosen: epoch {chosen} (accuracy {evaluations[chosen]:.2f}); {seconds} s in all")
    _write(unet, args.out, {
        "model": {
            "schedule": "cosine",
            "num_train_timesteps": TIMESTEPS,
            "null_label": NULL_LABEL,
            "prediction_type": args.prediction_type,
        },
        "training": {
            "script": "scripts/train_digits_diffusion.py",
            "data": f"sklearn.datasets.load_digits, {len(data):,} images, bilinear 8x8 -> 16x16, scaled to [-1, 1]",
            "seed": SEED,
            "epochs": args.epochs,
            "steps": args.epochs * batches,
            **TRAINING,
            "lr_schedule": "cosine with warmup (diffusers.optimization)",
            "loss": "MSE between predicted and true noise"
            if args.prediction_type == "epsilon"
            else "MSE between predicted and true v = sqrt(abar) noise - sqrt(1 - abar) clean",
            "epoch_losses": losses,
            "evaluation": {
                "what": f"conditional accuracy of {args.evaluate_per_digit} x 10 samples, 25 DDIM steps, guidance 3, EMA weights",
                "seed": EVALUATION_SEED,
                "by_epoch": evaluations,
                "chosen_epoch": chosen,
            },
            "seconds": seconds,
            "date": str(datetime.date.today()),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
            "versions": {name: metadata.version(name) for name in ("torch", "diffusers", "scikit-learn")},
        },
    })


def _write(unet: UNet2DModel, out: Path, manifest: dict) -> None:
    """Write the weights and the manifest to a new folder, then swap it in: never half a model."""
    write_weights_folder(out, lambda folder: unet.save_pretrained(folder, safe_serialization=True), manifest)
    size = sum(path.stat().st_size for path in out.iterdir())
    print(f"written to {out} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
