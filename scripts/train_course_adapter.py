"""Train the course assistant's LoRA adapter once, and ship it: examples/part-2/data/course-adapter/.

The fine-tuning page teaches the course model a format it does not have
(answers that start with "Short answer:" and end with the page to read).
Training to a good result takes minutes on 2 cores (the manifest records how
long), more than a notebook may take, so this script trains it once and
the page loads the result (and trains a few steps live to show the loop).

    .venv/bin/python scripts/train_course_adapter.py

Seeded and CPU-only. It writes the adapter (peft's files) and a manifest of
how it was made (settings, losses, versions, sha256 of the adapter and of
the dataset) into a temporary folder, then moves it into place.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "part-2" / "data"
DATASET = DATA / "course-assistant.jsonl"
OUTPUT = DATA / "course-adapter"
SETTINGS = {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
            "epochs": 3, "batch_size": 8, "learning_rate": 2e-3, "seed": 0}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
    import datasets
    import peft
    import torch

    from llmsforme import load_model
    from llmsforme.finetune import train

    torch.manual_seed(SETTINGS["seed"])
    model, tokenizer = load_model(progress=False)
    conversations = [row["messages"] for row in datasets.load_dataset("json", data_files=str(DATASET))["train"]]
    config = peft.LoraConfig(r=SETTINGS["r"], lora_alpha=SETTINGS["lora_alpha"], lora_dropout=0.0,
                             target_modules=SETTINGS["target_modules"])
    adapted = peft.get_peft_model(model, config)
    started = time.perf_counter()
    steps = -(-len(conversations) // SETTINGS["batch_size"]) * SETTINGS["epochs"]

    def progress(step: int, loss: float) -> None:
        print(f"step {step:3}/{steps}  loss {loss:.3f}  {time.perf_counter() - started:6.1f} s", file=sys.stderr)

    losses = train(adapted, tokenizer, conversations, epochs=SETTINGS["epochs"],
                   batch_size=SETTINGS["batch_size"], learning_rate=SETTINGS["learning_rate"],
                   seed=SETTINGS["seed"], on_step=progress)
    with tempfile.TemporaryDirectory(dir=DATA) as folder:
        staging = Path(folder) / "adapter"
        adapted.save_pretrained(staging)
        manifest = {
            "made_by": "scripts/train_course_adapter.py",
            "settings": SETTINGS,
            "conversations": len(conversations),
            "steps": len(losses),
            "losses": [round(x, 4) for x in losses],
            "seconds": round(time.perf_counter() - started, 1),
            "versions": {name: metadata.version(name) for name in ("torch", "transformers", "peft", "datasets")},
            "dataset_sha256": sha256(DATASET),
            "adapter_sha256": sha256(staging / "adapter_model.safetensors"),
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if OUTPUT.exists():
            shutil.rmtree(OUTPUT)
        staging.rename(OUTPUT)
    size = (OUTPUT / "adapter_model.safetensors").stat().st_size
    print(f"wrote {OUTPUT.relative_to(ROOT)}: {size / 1e6:.1f} MB, {len(losses)} steps, "
          f"loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
