"""Compute the data of the decoding playground: docs/playground/data.json.

Regenerate with (from the repository root):

    .venv/bin/python scripts/playground_data.py

For each prompt, the course model's next-token distribution is stored as the
100 most likely tokens (text, id, logit) plus the probability mass that the
other tokens share at T = 1. For one prompt, a greedy continuation is stored
too: the distribution at every step, and the token that greedy decoding picks.

Logits are the model's float32 values rounded to ``DECIMALS`` decimal places;
the remaining mass is rounded to ``REST_DECIMALS`` places. The page's
JavaScript (docs/assets/playground/playground.js) does the filtering on these
100 logits only: every other token counts as removed, as if top-k = 100 were
always on (see ``RULE``). tests/test_playground.py checks that the shipped
file equals what :func:`compute_playground_data` returns, and that the
JavaScript filtering equals ``llmsforme.processors.warp`` on the same logits.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "playground" / "data.json"

TOP = 100  # tokens stored per distribution
DECIMALS = 5  # logits: float32 rounded to 5 decimal places (distinct values, no ties)
REST_DECIMALS = 6  # remaining probability mass
CONTINUATION_STEPS = 12  # greedy steps stored for the step-through

RULE = (
    "Only the 100 most likely tokens are stored. The playground applies "
    "temperature, top-k and top-p to these 100 logits and renormalizes over them: "
    "every other token counts as removed, as if top-k = 100 were always on "
    "(top-k = 0, 'off', therefore keeps the 100). Since temperature keeps the "
    "order of the tokens, this equals llmsforme.processors.warp on the full "
    "vocabulary with top_k = min(k, 100), or 100 when k = 0. 'rest' is the "
    "probability the other tokens share at T = 1, before any filtering."
)

# (id, title, kind, text, note). kind "chat": text is the user's message,
# rendered with the model's chat template; kind "text": text is the prompt.
PROMPTS: list[tuple[str, str, str, str, str]] = [
    ("spain", "The rain in Spain…", "text", "The rain in Spain falls mainly in the",
     "The proverb says 'plain', but a 135M-parameter model spreads its bets."),
    ("france", "Chat: capital of France", "chat", "What is the capital of France?",
     "A question to the chat model, rendered with its chat template: the answer starts here."),
    ("cat", "Chat: a story about a cat (step through)", "chat", "Write a one-sentence story about a cat.",
     "A chat request with a greedy continuation you can step through."),
    ("once", "Once upon a time… (flat)", "text", "Once upon a time, there was a",
     "A flat distribution: many tokens are plausible and none stands out."),
    ("fridge", "I opened the fridge…", "text", "I opened the fridge and found a",
     "Fairly flat too, with a long tail of foods and containers."),
    ("japan", "The capital of Japan is", "text", "The capital of Japan is",
     "A peaked distribution: one answer dominates."),
    ("count", "Counting: 1, 2, 3, 4,", "text", "1, 2, 3, 4,",
     "Almost certain: the top token is a space, because this tokenizer writes each digit as its own token."),
    ("code", "Python: def fibonacci(n):", "text", "def fibonacci(n):\n",
     "Code: a newline, an indentation or a docstring come next."),
]
CONTINUATION_PROMPT = "cat"


def _distribution(lm: Any, logits: Any) -> dict[str, Any]:
    """The top-``TOP`` tokens of one next-token distribution, and the rest mass at T = 1."""
    import torch

    logits = logits.reshape(-1).to(torch.float32)
    # Highest logit first; a stable sort orders ties (none in the shipped data) by token id.
    values, ids = torch.sort(logits, descending=True, stable=True)
    values, ids = values[:TOP], ids[:TOP]
    probs = torch.softmax(logits.to(torch.float64), dim=-1)
    rest = float(1.0 - probs[ids].sum())
    return {
        "tokens": [lm.token_text(int(i)) for i in ids],
        "ids": [int(i) for i in ids],
        "logits": [round(float(v), DECIMALS) for v in values],
        "rest": round(max(rest, 0.0), REST_DECIMALS),
    }


def compute_playground_data(model: Any = None, tokenizer: Any = None) -> dict[str, Any]:
    """Return the playground data (the content of data.json) computed with the course model.

    ``model`` and ``tokenizer`` default to ``llmsforme.load_model()``.
    """
    import torch

    from llmsforme import HFLanguageModel, load_model
    from llmsforme.model_source import COURSE_GGUF, COURSE_MODEL

    if model is None or tokenizer is None:
        model, tokenizer = load_model(progress=False)
    lm = HFLanguageModel(model, tokenizer)
    # One thread: the numbers then do not depend on the number of cores (how
    # the matrix products are split), and it is faster on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        prompts = _prompts(lm, tokenizer)
    finally:
        torch.set_num_threads(threads)
    return {
        "model": f"{COURSE_MODEL} ({COURSE_GGUF})",
        "vocab_size": lm.vocab_size,
        "top": TOP,
        "decimals": DECIMALS,
        "rule": RULE,
        "generated_by": ".venv/bin/python scripts/playground_data.py",
        "prompts": prompts,
    }


def _prompts(lm: Any, tokenizer: Any) -> list[dict[str, Any]]:
    import torch

    prompts = []
    for pid, title, kind, text, note in PROMPTS:
        if kind == "chat":
            prompt_text = tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
            )
        else:
            prompt_text = text
        ids = lm.encode(prompt_text)
        logits, cache = lm.start(torch.tensor([ids]))
        steps = [_distribution(lm, logits)]
        greedy: list[str] = []
        if pid == CONTINUATION_PROMPT:
            for step in range(CONTINUATION_STEPS):
                next_id = steps[-1]["ids"][0]  # greedy: the most likely token
                greedy.append(lm.token_text(next_id))
                if step == CONTINUATION_STEPS - 1 or next_id in lm.eos_token_ids:
                    break
                logits, cache = lm.advance(cache, torch.tensor([next_id]))
                steps.append(_distribution(lm, logits))
        entry: dict[str, Any] = {
            "id": pid,
            "title": title,
            "kind": kind,
            "prompt": prompt_text,
            "note": note,
            "steps": steps,
        }
        if kind == "chat":
            entry["message"] = text
        if greedy:
            entry["greedy"] = greedy  # greedy[i] is the token picked at steps[i]
        prompts.append(entry)
    return prompts


def dumps(data: dict[str, Any]) -> str:
    """JSON text: indented objects, but each list of numbers or strings on one line."""

    def encode(value: Any, indent: int) -> str:
        pad, inner = " " * indent, " " * (indent + 1)
        if isinstance(value, dict):
            items = [f"{inner}{json.dumps(k)}: {encode(v, indent + 1)}" for k, v in value.items()]
            return "{\n" + ",\n".join(items) + "\n" + pad + "}"
        if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
            return "[\n" + ",\n".join(inner + encode(v, indent + 1) for v in value) + "\n" + pad + "]"
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    return encode(data, 0) + "\n"


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    data = compute_playground_data()
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(dumps(data), encoding="utf-8")
    size = OUTPUT.stat().st_size
    print(f"wrote {OUTPUT.relative_to(ROOT)}: {len(data['prompts'])} prompts, {size / 1000:.1f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
