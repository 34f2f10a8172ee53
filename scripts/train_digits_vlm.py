"""Train the course's vision-language model on the CPU: the projector between the digits CLIP and the course model.

LLaVA's first stage in miniature (:mod:`llmsforme.multimodal.vision_language`):
the digits CLIP's image encoder and SmolLM2-135M-Instruct stay frozen, and
only the projector learns, from questions about the CLIP's training digits
with answers written from their labels ("Which digit is this?" "7"). The
loss is the language model's own cross-entropy, on the answer's tokens only.

Graded afterwards on the 360 digits the CLIP never saw, greedy: each
question type, and the CLIP's zero-shot accuracy on the same images. Writes
the projector and a manifest with its sha256 to the package.

    .venv/bin/python scripts/train_digits_vlm.py [--steps 200] [--out FOLDER]

Seeded: the same machine and versions give the same weights.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import re
import statistics
import time
from importlib import metadata
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from llmsforme.diffusion import load_digit_images
from llmsforme.diffusion.weights import write_weights_folder
from llmsforme.model_source import load_model
from llmsforme.multimodal import DIGIT_WORDS, class_vectors, load_digits_clip, split_digits, zero_shot
from llmsforme.multimodal.vision_language import (
    WEIGHTS,
    DigitsVLM,
    VisionProjector,
    image_features,
    shipped_folder,
)

SEED = 0
TRAINING = {"batch_size": 16, "learning_rate": 1e-3, "weight_decay": 0.01, "warmup_steps": 20}
QUESTIONS = {
    "digit": ("Which digit is this?", lambda d: str(d)),
    "parity": ("Is it even or odd?", lambda d: "Even." if d % 2 == 0 else "Odd."),
    "plus two": ("What is this digit plus two?", lambda d: str(d + 2)),
    "describe": ("Describe the image.", lambda d: f"A handwritten {DIGIT_WORDS[d]}."),
}


def right(kind: str, digit: int, reply: str) -> bool:
    """Whether a reply answers a question of this kind about this digit."""
    words = re.findall(r"[a-z]+|\d+", reply.lower())
    if kind == "digit":
        return bool(words) and words[0] in (str(digit), DIGIT_WORDS[digit])
    if kind == "parity":
        return bool(words) and words[0] == ("even" if digit % 2 == 0 else "odd")
    if kind == "plus two":
        return bool(words) and words[0] == str(digit + 2)
    return DIGIT_WORDS[digit] in words or str(digit) in words


def examples(vlm: DigitsVLM) -> dict[tuple[str, int], tuple[list[int], int]]:
    """The token ids of every (question, digit) exchange, and where its answer starts."""
    table = {}
    for kind, (question, answer) in QUESTIONS.items():
        for digit in range(10):
            prompt, whole = vlm.prompt_ids(question), vlm.prompt_ids(question, answer(digit))
            if whole[: len(prompt)] != prompt:
                raise RuntimeError(f"the prompt of {question!r} is not a prefix of its exchange")
            table[kind, digit] = whole, len(prompt)
    return table


def batch_tensors(rows: list[tuple[list[int], int]], pad: int, end: int) -> tuple[torch.Tensor, ...]:
    """Right-padded ids, attention mask and labels (-100 except on the answer and its end-of-turn)."""
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100)
    for i, (row, start) in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
        stop = row.index(end, start) + 1  # the answer, then <|im_end|>; not the newline after it
        labels[i, start:stop] = torch.tensor(row[start:stop])
    return ids, mask, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--evaluate", type=int, default=360, help="held-out images graded per question type")
    parser.add_argument("--out", type=Path, default=shipped_folder())
    args = parser.parse_args()
    if args.steps < 1 or not 1 <= args.evaluate <= 360:
        parser.error("--steps must be >= 1 and --evaluate in [1, 360]")
    started = time.perf_counter()
    torch.manual_seed(SEED)
    generator = torch.Generator().manual_seed(SEED)
    model, tokenizer = load_model(progress=False)
    model.requires_grad_(False)
    clip = load_digits_clip()
    projector = VisionProjector()
    vlm = DigitsVLM(model, tokenizer, clip, projector)
    images, labels = load_digit_images(16)
    train, held_out = split_digits(labels)
    with torch.no_grad():
        features = image_features(clip, images)  # the encoder is frozen: computed once
    table = examples(vlm)
    end = int(tokenizer.convert_tokens_to_ids("<|im_end|>"))
    kinds = list(QUESTIONS)
    optimizer = torch.optim.AdamW(projector.parameters(), lr=TRAINING["learning_rate"],
                                  weight_decay=TRAINING["weight_decay"])
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / TRAINING["warmup_steps"]))
    print(f"{sum(p.numel() for p in projector.parameters()):,} trained parameters; {len(train)} images; "
          f"{args.steps} steps of {TRAINING['batch_size']}", flush=True)
    losses, step_seconds = [], []
    for step in range(1, args.steps + 1):
        tick = time.perf_counter()
        chosen = train[torch.randint(len(train), (TRAINING["batch_size"],), generator=generator)]
        asked = torch.randint(len(kinds), (TRAINING["batch_size"],), generator=generator)
        rows = [table[kinds[k], int(labels[i])] for i, k in zip(chosen.tolist(), asked.tolist())]
        ids, mask, targets = batch_tensors(rows, tokenizer.eos_token_id, end)
        logits = model(inputs_embeds=vlm.embed(ids, projector(features[chosen])), attention_mask=mask).logits
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        step_seconds.append(time.perf_counter() - tick)
        if step % 10 == 0 or step == args.steps:
            print(f"step {step:>4}  loss {statistics.mean(losses[-10:]):.4f}  "
                  f"{time.perf_counter() - started:6.0f} s", flush=True)
    training_seconds = round(time.perf_counter() - started)
    projector.eval().requires_grad_(False)
    graded = held_out[: args.evaluate]
    evaluation = {}
    for kind, (question, _) in QUESTIONS.items():
        replies = []
        for start in range(0, len(graded), 60):
            replies += vlm.answer(images[graded[start : start + 60]], question, max_new_tokens=8)
        score = sum(right(kind, int(labels[i]), reply) for i, reply in zip(graded.tolist(), replies)) / len(graded)
        evaluation[kind] = {"question": question, "accuracy": round(score, 3), "example": replies[0]}
        print(f"held out, {question!r}: {score:.3f} (first reply {replies[0]!r})", flush=True)
    clip_score = float((zero_shot(clip, images[graded], class_vectors(clip)) == labels[graded]).float().mean())
    _write(projector, args.out, {
        "projector": {"features": 1024, "hidden": 256, "tokens": projector.tokens, "width": projector.width},
        "training": {
            "script": "scripts/train_digits_vlm.py",
            "data": f"the digits CLIP's {len(train)} training digits, one of {len(QUESTIONS)} questions each",
            "questions": {kind: question for kind, (question, _) in QUESTIONS.items()},
            "frozen": "the digits CLIP and SmolLM2-135M-Instruct (the course model); only the projector learns",
            "loss": "the language model's cross-entropy on the answer and its <|im_end|>",
            "seed": SEED,
            "steps": args.steps,
            **TRAINING,
            "losses_every_10_steps": [round(statistics.mean(losses[i : i + 10]), 4) for i in range(0, len(losses), 10)],
            "median_step_seconds": round(statistics.median(step_seconds), 2),
            "seconds": training_seconds,
            "date": str(datetime.date.today()),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
            "versions": {name: metadata.version(name) for name in ("torch", "transformers")},
        },
        "held_out": {
            "images": len(graded),
            "greedy, max 8 new tokens": evaluation,
            "CLIP zero-shot accuracy, same images": round(clip_score, 3),
        },
    })


def _write(projector: VisionProjector, out: Path, manifest: dict) -> None:
    """Write the weights and the manifest to a new folder, then swap it in: never half a model."""
    state = {name: value.contiguous() for name, value in projector.state_dict().items()}
    write_weights_folder(out, lambda folder: save_file(state, folder / WEIGHTS), manifest)
    print(f"written to {out} ({(out / WEIGHTS).stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
