"""llmsforme.finetune on the course model, and the course assistant's dataset and shipped adapter."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pytest
import torch

from llmsforme.chat import training_example
from llmsforme.finetune import IGNORE, chat_batch, train
from llmsforme.lora import add_lora

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "part-2" / "data"
CONVERSATIONS = [json.loads(line)["messages"] for line in (DATA / "course-assistant.jsonl").read_text().splitlines()]


def test_labels_are_the_assistant_tokens_of_the_training_mask(course_model):
    _, tokenizer = course_model
    batch = chat_batch(tokenizer, CONVERSATIONS[:3])
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    for row, messages in enumerate(CONVERSATIONS[:3]):
        ids, mask = training_example(tokenizer, messages)
        n = len(ids)
        assert batch["input_ids"][row, :n].tolist() == ids
        assert batch["labels"][row, :n].tolist() == [t if m else IGNORE for t, m in zip(ids, mask)]
        assert batch["attention_mask"][row].sum() == n
        assert (batch["labels"][row, n:] == IGNORE).all()  # padding is not trained
        trained = tokenizer.decode([t for t in batch["labels"][row].tolist() if t != IGNORE])
        assert trained == messages[-1]["content"] + "<|im_end|>"


def test_a_few_steps_lower_the_loss_and_touch_only_the_adapters(course_model):
    model, tokenizer = course_model
    adapted = add_lora(copy.deepcopy(model), r=4, alpha=8, target_modules=["q_proj", "v_proj"])
    frozen = {n: p.detach().clone() for n, p in adapted.named_parameters() if not p.requires_grad}
    steps = []
    losses = train(adapted, tokenizer, CONVERSATIONS[:4], epochs=4, batch_size=4, seed=0,
                   on_step=lambda step, loss: steps.append(step))
    assert steps == [1, 2, 3, 4] and len(losses) == 4
    assert losses[-1] < losses[0]
    assert all(torch.equal(p, frozen[n]) for n, p in adapted.named_parameters() if not p.requires_grad)
    assert not adapted.training
    assert len(train(adapted, tokenizer, CONVERSATIONS[:4], epochs=3, batch_size=1, max_steps=2)) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "epochs must be an int >= 1"),
        ({"batch_size": 0}, "batch_size must be an int >= 1"),
        ({"max_steps": 0}, "max_steps must be None or an int >= 1"),
        ({"learning_rate": 0}, r"learning_rate must be a number in \(0, 1\)"),
        ({"conversations": []}, "must not be empty"),
    ],
)
def test_bad_training_arguments(course_model, kwargs, message):
    model, tokenizer = course_model
    adapted = add_lora(copy.deepcopy(model), r=1, alpha=1, target_modules=["q_proj"])
    arguments = {"conversations": CONVERSATIONS[:1], **kwargs}
    with pytest.raises(ValueError, match=message):
        train(adapted, tokenizer, **arguments)


def test_a_model_with_nothing_to_train_is_refused(course_model):
    model, tokenizer = course_model
    frozen = copy.deepcopy(model).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        train(frozen, tokenizer, CONVERSATIONS[:1])
    with pytest.raises(ValueError, match="no assistant message"):
        chat_batch(tokenizer, [[{"role": "user", "content": "Hi"}]])
    with pytest.raises(ValueError, match="non-empty list"):
        chat_batch(tokenizer, [])


def test_the_dataset_is_big_enough_and_in_one_format():
    assert len(CONVERSATIONS) >= 40
    questions = [m[1]["content"] for m in CONVERSATIONS]
    assert len(set(questions)) == len(questions)
    for messages in CONVERSATIONS:
        assert [m["role"] for m in messages] == ["system", "user", "assistant"]
        answer = messages[2]["content"]
        assert answer.startswith("Short answer: ") and '\nRead more: "' in answer


def test_the_held_out_questions_are_not_in_the_dataset():
    import nbformat

    nb = nbformat.read(ROOT / "examples" / "part-2" / "fine-tuning.ipynb", as_version=4)
    source = next(c.source for c in nb.cells if "held_out = [" in c.source)
    held_out = source.split("held_out = [", 1)[1].split("]", 1)[0]
    questions = {m[1]["content"] for m in CONVERSATIONS}
    for question in [q.strip().strip('",') for q in held_out.split('",')]:
        assert question and question not in questions, question


def test_the_shipped_adapter_is_what_its_manifest_says():
    folder = DATA / "course-adapter"
    manifest = json.loads((folder / "manifest.json").read_text())
    weights = folder / "adapter_model.safetensors"
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == manifest["adapter_sha256"]
    assert hashlib.sha256((DATA / "course-assistant.jsonl").read_bytes()).hexdigest() == manifest["dataset_sha256"]
    assert weights.stat().st_size <= 5_000_000
    config = json.loads((folder / "adapter_config.json").read_text())
    settings = manifest["settings"]
    assert (config["r"], config["lora_alpha"]) == (settings["r"], settings["lora_alpha"])
    assert sorted(config["target_modules"]) == sorted(settings["target_modules"])
    assert manifest["steps"] == len(manifest["losses"]) and manifest["losses"][-1] < manifest["losses"][0]
