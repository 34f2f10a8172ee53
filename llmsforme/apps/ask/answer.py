"""Answering from the retrieved chunks: the prompt, the generation, and the sources.

The retrieved sections go into the system message, numbered, within a
token budget; the model is told to answer only from them and to say when
they do not hold the answer. The answer comes from the course model (the
package's own ``chat``) or from any OpenAI-compatible server
(``base_url``), and always with the pages it was given: with a model of
135 million parameters, the retrieval is the product and the answer text
is a draft. An evaluation, which reads many answers, asks
:func:`generate_answers` for them in one batch.

Taught in: [Prompting with context](../part-6/prompting.ipynb); the plan in [From idea to MVP](../part-6/mvp.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .retrieve import Hit

__all__ = ["SITE", "SYSTEM", "Answer", "context_messages", "generate_answer", "generate_answers"]

SITE = "https://llmsforme.github.io/llmsforme/"
SYSTEM = (
    "You answer questions about the llmsforme course, using only the numbered course "
    "sections below. If they do not contain the answer, reply exactly: I don't know. "
    "Keep the answer short."
)
"""The system instruction; the retrieved sections follow it, numbered."""


@dataclass(frozen=True)
class Answer:
    """The generated text, and the sections it was given, as site paths (``part-1/top-k-top-p/#top-p``)."""

    text: str
    sources: tuple[str, ...]


def context_messages(
    question: str, hits: Sequence[Hit], *, count_tokens: Callable[[str], int] | None = None, budget: int = 1500
) -> tuple[list[dict[str, str]], list[Hit]]:
    """The chat messages for ``question``, and the hits that fit in ``budget`` tokens of context.

    Example::

        >>> from llmsforme.apps.ask.corpus import Chunk
        >>> chunk = Chunk("p/", "top-p", "Sampling", "Top-p", "Keeps the smallest set.", "p.md")
        >>> messages, used = context_messages("What is top-p?", [Hit(chunk, 1.0, 1)])
        >>> print(messages[0]["content"].splitlines()[-2:])
        ['[1] Sampling > Top-p', 'Keeps the smallest set.']
    """
    count = count_tokens or (lambda text: len(text) // 4)  # about 4 characters a token in English
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 50:
        raise ValueError(f"budget must be an int >= 50 (tokens), got {budget!r}")
    parts, used, spent = [], [], count(SYSTEM)
    for hit in hits:
        section = f"[{len(used) + 1}] {hit.chunk.for_embedding()}"
        cost = count(section)
        if used and spent + cost > budget:
            break
        parts.append(section)
        used.append(hit)
        spent += cost
    system = SYSTEM + "\n\n" + "\n\n".join(parts)
    return [{"role": "system", "content": system}, {"role": "user", "content": question}], used


def generate_answer(
    messages: list[dict[str, str]],
    used: Sequence[Hit],
    *,
    model: Any = None,
    tokenizer: Any = None,
    base_url: str | None = None,
    api_key: str | None = None,
    model_name: str = "smollm2-135m-instruct",
    max_new_tokens: int = 160,
    on_text: Callable[[str], None] | None = None,
) -> Answer:
    """Generate the answer, locally (``model``, ``tokenizer``) or on a server (``base_url``), streaming ``on_text``."""
    if (base_url is None) == (model is None):
        raise ValueError("give either model and tokenizer (local) or base_url (a server), not both")
    show = on_text or (lambda text: None)
    if base_url is not None:
        import openai

        client = openai.OpenAI(base_url=base_url, api_key=api_key or "not-needed")
        pieces = []
        try:
            stream = client.chat.completions.create(
                model=model_name, messages=messages, temperature=0, max_tokens=max_new_tokens, stream=True
            )
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    pieces.append(chunk.choices[0].delta.content)
                    show(pieces[-1])
        except openai.APIConnectionError as error:
            raise ConnectionError(f"cannot reach the server at {base_url}: {error}") from error
        except openai.APIStatusError as error:
            # e.g. the course's own server refuses sections that quote its template's
            # special tokens: it cannot tell them from forged turns (Part 1's guard).
            raise ValueError(f"the server at {base_url} refused the request ({error.status_code}): "
                             f"{error.message}") from error
        text = "".join(pieces)
    else:
        from ...chat import chat

        # The sections are data, and some quote the template's special tokens
        # (Part 1 teaches them): keep those as plain text, never as turns.
        reply = chat(model, tokenizer, messages, max_new_tokens=max_new_tokens, on_text=show,
                     on_special_tokens="neutralise")
        text = reply[-1]["content"]
    return Answer(text.strip(), tuple(hit.chunk.url for hit in used))


def generate_answers(
    prompts: Sequence[tuple[list[dict[str, str]], Sequence[Hit]]],
    *,
    model: Any,
    tokenizer: Any,
    max_new_tokens: int = 160,
    max_batch: int = 8,
) -> list[Answer]:
    """Answers to several questions on the local model, generated together in one batch.

    ``prompts`` are what :func:`context_messages` returns, one ``(messages,
    used)`` pair per question. Each answer equals what :func:`generate_answer`
    gives that question alone (the test suite checks it), but the questions
    share every decoding step (:func:`~llmsforme.chat.chat_many`), which is
    how an evaluation reads many answers in a fraction of the time.

    Example::

        prompts = [context_messages(q, retriever.search(q, k=3)) for q in questions]
        for answer in generate_answers(prompts, model=model, tokenizer=tokenizer):
            print(answer.text, answer.sources)
    """
    from ...chat import chat_many

    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
        raise TypeError(f"prompts must be a list of (messages, used) pairs from context_messages, got "
                        f"{type(prompts).__name__}")
    for number, prompt in enumerate(prompts):
        if not (isinstance(prompt, tuple) and len(prompt) == 2):
            raise TypeError(f"prompts[{number}] must be a (messages, used) pair from context_messages")
    if model is None or tokenizer is None:
        raise ValueError("generate_answers runs on the local model: give model and tokenizer")
    if not prompts:
        return []
    # Sections quoting the template's special tokens stay plain text, as in generate_answer.
    replies = chat_many(model, tokenizer, [messages for messages, _ in prompts], max_new_tokens=max_new_tokens,
                        max_batch=max_batch, on_special_tokens="neutralise")
    return [Answer(reply[-1]["content"].strip(), tuple(hit.chunk.url for hit in used))
            for reply, (_, used) in zip(replies, prompts)]
