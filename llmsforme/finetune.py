"""Supervised fine-tuning on conversations: batches with the loss on the assistant's tokens, and the loop.

Each conversation is rendered in the chat template and tokenized by
:func:`llmsforme.chat.training_example`, which also says which tokens are
the assistant's (its content and the end-of-turn token). Those are the
labels; every other position gets ``-100``, the value that Hugging Face
models leave out of the loss. Conversations of a batch are padded on the
right, and the padding is masked out too.

:func:`train` is the plain loop: shuffle with a seeded generator, one
forward and backward pass per batch, one AdamW step. It trains whatever
parameters of the model require gradients, so it trains only the adapters
of a peft or :func:`llmsforme.lora.add_lora` model.

Taught in: [Fine-tuning the course model](../part-2/fine-tuning.ipynb).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from .chat import training_example

__all__ = ["IGNORE", "chat_batch", "train"]

#: The label that Hugging Face's loss ignores.
IGNORE = -100

Conversation = Sequence[Mapping[str, Any]]


def chat_batch(tokenizer: Any, conversations: Sequence[Conversation]) -> dict[str, torch.Tensor]:
    """``input_ids``, ``attention_mask`` and ``labels`` for a batch of conversations.

    Labels are the token ids where the assistant speaks and ``-100`` elsewhere
    (system and user turns, headers, padding).

    Example:
        >>> from llmsforme import load_model
        >>> _, tokenizer = load_model(progress=False)
        >>> batch = chat_batch(tokenizer, [[{"role": "user", "content": "Hi"},
        ...                                 {"role": "assistant", "content": "Hello!"}]])
        >>> tokenizer.decode([t for t in batch["labels"][0].tolist() if t != -100])
        'Hello!<|im_end|>'

    Taught in: [Fine-tuning the course model](../part-2/fine-tuning.ipynb).
    """
    if isinstance(conversations, (str, bytes)) or not isinstance(conversations, Sequence) or not conversations:
        raise ValueError("conversations must be a non-empty list of conversations (lists of messages)")
    examples = [training_example(tokenizer, messages) for messages in conversations]
    for index, (_, mask) in enumerate(examples):
        if not any(mask):
            raise ValueError(f"conversations[{index}] has no assistant message: nothing to train on")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    length = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), length), int(pad))
    attention_mask = torch.zeros((len(examples), length), dtype=torch.long)
    labels = torch.full((len(examples), length), IGNORE)
    for row, (ids, mask) in enumerate(examples):
        n = len(ids)
        input_ids[row, :n] = torch.tensor(ids)
        attention_mask[row, :n] = 1
        labels[row, :n] = torch.tensor([t if m else IGNORE for t, m in zip(ids, mask)])
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def train(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[Conversation],
    *,
    epochs: int = 1,
    batch_size: int = 8,
    learning_rate: float = 2e-3,
    seed: int = 0,
    max_steps: int | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Fine-tune the trainable parameters of ``model`` on ``conversations``; return the loss of each step.

    Args:
        epochs: passes over the data, each in a new seeded order.
        batch_size: conversations per step.
        learning_rate: AdamW's learning rate.
        seed: seeds the order of the conversations.
        max_steps: stop after this many steps (``None``: all epochs).
        on_step: called as ``on_step(step, loss)`` after each step (progress).

    The model is left in eval mode.

    Taught in: [Fine-tuning the course model](../part-2/fine-tuning.ipynb).
    """
    for name, value, low in (("epochs", epochs, 1), ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1):
        raise ValueError(f"max_steps must be None or an int >= 1, got {max_steps!r}")
    if not isinstance(learning_rate, (int, float)) or not 0 < learning_rate < 1:
        raise ValueError(f"learning_rate must be a number in (0, 1), got {learning_rate!r}")
    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError("the model has no trainable parameters: add adapters first (peft or llmsforme.lora)")
    if not conversations:
        raise ValueError("conversations must not be empty")
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate)
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    model.train()
    try:
        for _ in range(epochs):
            order = torch.randperm(len(conversations), generator=generator).tolist()
            for start in range(0, len(order), batch_size):
                batch = chat_batch(tokenizer, [conversations[i] for i in order[start : start + batch_size]])
                loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                losses.append(loss.item())
                if on_step is not None:
                    on_step(len(losses), losses[-1])
                if max_steps is not None and len(losses) >= max_steps:
                    return losses
    finally:
        model.eval()
    return losses
