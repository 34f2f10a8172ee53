"""Train the course's text-to-image model on the CPU, and write it into the package.

Stable Diffusion's recipe in miniature (:mod:`llmsforme.multimodal.prompt_to_image`):
a ``diffusers.UNet2DConditionModel`` learns to predict the noise in
scikit-learn's handwritten digits (16 x 16, scaled to [-1, 1]) at a random
timestep of a 200-step cosine schedule, reading a caption of the digit
("a handwritten seven", "the digit 7", ...: the digits CLIP's training
templates) through cross-attention on the CLIP's token vectors. One caption
in ten is replaced by the empty prompt, so that the same network learns the
unconditional prediction that classifier-free guidance needs.

The EMA weights are graded every few epochs (conditional accuracy of 20 x 10
samples from the training templates, 25 DDIM steps, guidance 3, an
evaluation seed that the tests and pages do not use) and the best are
kept. The guidance scale the model ships with is then chosen the same way,
among GUIDANCE_SCALES; the manifest records it, and the accuracy on prompts
in words that training never used (the CLIP's held-out templates) at that
scale, graded the same way.

    .venv/bin/python scripts/train_text_to_image.py [--epochs 40] [--out FOLDER]

About 8 minutes on 2 CPU cores. Seeded: the same machine and versions give
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
from diffusers import UNet2DConditionModel
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel

from llmsforme.diffusion import add_noise, cosine_schedule, digit_classifier, load_digit_images
from llmsforme.diffusion.weights import write_weights_folder
from llmsforme.model_source import load_embedder
from llmsforme.multimodal import HELD_OUT_TEMPLATES, TRAINING_TEMPLATES, caption, load_digits_clip
from llmsforme.multimodal.prompt_to_image import TextToImage, generate, prompt_vectors, shipped_folder, unet_config

SEED = 0
EVALUATION_SEED = 1234  # chooses the checkpoint and the guidance; tests and pages use other seeds
GUIDANCE_SCALES = (1.5, 2.0, 2.5, 3.0, 4.0)
TIMESTEPS = 200
TRAINING = {
    "batch_size": 64,
    "learning_rate": 2e-3,
    "warmup_steps": 100,
    "ema_decay": 0.995,
    "prompt_dropout": 0.1,
    "grad_clip": 1.0,
}


def accuracy(model: TextToImage, classifier: object, templates: tuple[str, ...], per_digit: int, seed: int,
             guidance_scale: float = 3.0) -> float:
    """The share of images the grader reads as the digit the prompt asked for (templates taken in turn)."""
    digits = [d for d in range(10) for _ in range(per_digit)]
    prompts = [caption(d, templates[i % len(templates)]) for i, d in enumerate(digits)]
    images = generate(model, prompts, steps=25, guidance_scale=guidance_scale, seed=seed)
    return float((classifier.predict(images) == torch.tensor(digits)).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--evaluate-every", type=int, default=10, help="grade the EMA weights every N epochs")
    parser.add_argument("--evaluate-per-digit", type=int, default=20, help="samples of each digit per grading")
    parser.add_argument("--images", type=int, default=1797, help="train on the first N digits only (quick checks)")
    parser.add_argument("--out", type=Path, default=shipped_folder())
    args = parser.parse_args()
    if min(args.epochs, args.evaluate_every, args.evaluate_per_digit, args.images) < 1:
        parser.error("--epochs, --evaluate-every, --evaluate-per-digit and --images must be at least 1")
    started = time.perf_counter()
    torch.manual_seed(SEED)
    generator = torch.Generator().manual_seed(SEED)
    images, labels = load_digit_images(size=16)
    images, labels = images[: args.images], labels[: args.images]
    data = images * 2 - 1  # the model works in [-1, 1]
    abar = cosine_schedule(TIMESTEPS)
    clip, embedder = load_digits_clip(), load_embedder()
    captions = [caption(d, t) for d in range(10) for t in TRAINING_TEMPLATES] + [""]
    tokens, masks = prompt_vectors(clip, captions, embedder)  # the CLIP is frozen: computed once
    empty = len(captions) - 1
    unet = UNet2DConditionModel(**unet_config(clip.dim))
    print(f"{unet.num_parameters():,} parameters; {len(data)} images; {args.epochs} epochs")
    ema = EMAModel(unet.parameters(), decay=TRAINING["ema_decay"])
    optimizer = torch.optim.AdamW(unet.parameters(), lr=TRAINING["learning_rate"])
    batches = math.ceil(len(data) / TRAINING["batch_size"])
    schedule = get_cosine_schedule_with_warmup(optimizer, TRAINING["warmup_steps"], args.epochs * batches)
    classifier = digit_classifier()
    model = TextToImage(unet, clip, embedder, abar)
    losses, evaluations, best = [], {}, None
    for epoch in range(1, args.epochs + 1):
        unet.train()
        order = torch.randperm(len(data), generator=generator)
        total = 0.0
        for start in range(0, len(data), TRAINING["batch_size"]):
            batch = order[start : start + TRAINING["batch_size"]]
            clean = data[batch]
            template = torch.randint(len(TRAINING_TEMPLATES), (len(batch),), generator=generator)
            row = labels[batch] * len(TRAINING_TEMPLATES) + template
            row[torch.rand(len(batch), generator=generator) < TRAINING["prompt_dropout"]] = empty
            t = torch.randint(0, TIMESTEPS, (len(batch),), generator=generator)
            noise = torch.randn(clean.shape, generator=generator)
            predicted = unet(add_noise(clean, noise, t, abar), t, encoder_hidden_states=tokens[row],
                             encoder_attention_mask=masks[row]).sample
            loss = F.mse_loss(predicted, noise)
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
            score = accuracy(model, classifier, TRAINING_TEMPLATES, args.evaluate_per_digit, EVALUATION_SEED)
            evaluations[epoch] = round(score, 3)
            line += f"  accuracy (EMA, training templates, guidance 3) {score:.2f}"
            if best is None or score > evaluations[best[0]]:
                best = (epoch, {name: value.clone() for name, value in unet.state_dict().items()})
            ema.restore(unet.parameters())
        print(line, flush=True)
    chosen, state = best
    unet.load_state_dict(state)
    unet.eval()
    by_scale = {scale: round(accuracy(model, classifier, TRAINING_TEMPLATES, args.evaluate_per_digit,
                                      EVALUATION_SEED, scale), 3) for scale in GUIDANCE_SCALES}
    guidance = max(GUIDANCE_SCALES, key=lambda scale: (by_scale[scale], -scale))  # ties: the gentler scale
    held_out = accuracy(model, classifier, HELD_OUT_TEMPLATES, args.evaluate_per_digit, EVALUATION_SEED, guidance)
    seconds = round(time.perf_counter() - started)
    print(f"chosen: epoch {chosen}, guidance {guidance:g} ({by_scale}); "
          f"held-out prompts: accuracy {held_out:.2f}; {seconds} s in all")
    _write(unet, args.out, {
        "model": {"schedule": "cosine", "num_train_timesteps": TIMESTEPS, "guidance_scale": guidance,
                  "prompt_reader": "llmsforme/data/digits-clip"},
        "training": {
            "script": "scripts/train_text_to_image.py",
            "data": f"sklearn.datasets.load_digits, {len(data):,} images, bilinear 8x8 -> 16x16, scaled to [-1, 1]",
            "captions": "the digits CLIP's training templates, one at random per image and step; '' for dropout",
            "seed": SEED,
            "epochs": args.epochs,
            "steps": args.epochs * batches,
            **TRAINING,
            "lr_schedule": "cosine with warmup (diffusers.optimization)",
            "loss": "MSE between predicted and true noise",
            "epoch_losses": losses,
            "evaluation": {
                "what": f"conditional accuracy of {args.evaluate_per_digit} x 10 samples, 25 DDIM steps, "
                        "EMA weights, graded by the SVC of llmsforme.diffusion.digit_classifier; "
                        "checkpoints at guidance 3, then the guidance scale, on the training templates",
                "seed": EVALUATION_SEED,
                "by_epoch": evaluations,
                "chosen_epoch": chosen,
                "by_guidance_scale": {f"{scale:g}": value for scale, value in by_scale.items()},
                "guidance_scale": guidance,
                "held_out_templates": list(HELD_OUT_TEMPLATES),
                "held_out_accuracy": round(held_out, 3),
            },
            "seconds": seconds,
            "date": str(datetime.date.today()),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
            "versions": {name: metadata.version(name) for name in ("torch", "diffusers", "sentence-transformers")},
        },
    })


def _write(unet: UNet2DConditionModel, out: Path, manifest: dict) -> None:
    """Write the weights and the manifest to a new folder, then swap it in: never half a model."""
    write_weights_folder(out, lambda folder: unet.save_pretrained(folder, safe_serialization=True), manifest)
    size = sum(path.stat().st_size for path in out.iterdir())
    print(f"written to {out} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
