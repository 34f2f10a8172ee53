"""From a conversation to the token ids a model reads.

:func:`encode_chat` renders with a template and tokenises, like
``tokenizer.apply_chat_template(..., tokenize=True)``. With
``on_special_tokens="neutralise"`` a special token written inside a message
is split into ordinary tokens, so the only special-token ids in the result are
the ones the template itself wrote.

Taught in: [Chat templates](../part-1/chat-templates.ipynb).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from .guard import OnSpecialTokens, raise_if_special_tokens, special_token_pattern
from .registry import ChatTemplate
from .render import prepare, render_template

__all__ = ["encode_chat", "tokenizer_special_tokens"]

# Stand-ins for special tokens found in messages while the template runs: one
# character each from Unicode's supplementary private use area.
_PLACEHOLDER_BASE = 0xF0000


def tokenizer_special_tokens(tokenizer: Any) -> tuple[str, ...]:
    """The strings a Hugging Face tokenizer turns into special tokens (``<|im_start|>``...).

    Example:
        >>> from llmsforme import load_model
        >>> model, tokenizer = load_model()
        >>> tokenizer_special_tokens(tokenizer)[:3]
        ('<|endoftext|>', '<|im_start|>', '<|im_end|>')

    Taught in: [Chat templates](../part-1/chat-templates.ipynb).
    """
    decoder = getattr(tokenizer, "added_tokens_decoder", None)
    if not isinstance(decoder, Mapping):
        raise TypeError(f"tokenizer must be a Hugging Face tokenizer, got {type(tokenizer).__name__}")
    return tuple(token.content for token in decoder.values() if token.special)


def _encode_text(tokenizer: Any, text: str, *, split_special_tokens: bool = False) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False, split_special_tokens=split_special_tokens)["input_ids"])


def _encode_neutralised(
    tokenizer: Any,
    spec: ChatTemplate,
    messages: Sequence[Mapping[str, Any]],
    add_generation_prompt: bool,
    continue_final_message: bool,
) -> list[int]:
    """Tokenise so that special tokens inside messages become ordinary tokens.

    Special tokens in the messages are swapped for placeholder characters, the
    template runs, and the text is cut at the special tokens that remain: the
    template's own. Those become their ids; every piece between them, with the
    placeholders turned back into the original strings, is tokenised with
    ``split_special_tokens=True``. The tokenizer cuts the text at special
    tokens before anything else, so without special tokens in the messages
    this gives exactly the ids of tokenising the whole text.
    """
    special = tokenizer_special_tokens(tokenizer)
    # Delimiters that are plain text for this tokenizer (Llama 2's [INST])
    # look the same to the model whoever wrote them: they cannot be neutralised.
    raise_if_special_tokens(messages, [t for t in spec.special_tokens if t not in special], spec.name)
    placeholders = {token: chr(_PLACEHOLDER_BASE + i) for i, token in enumerate(special)}
    originals = {ord(char): token for token, char in placeholders.items()}
    pattern = special_token_pattern(special)
    stand_ins = []
    for index, message in enumerate(messages):
        content = str(message["content"])
        if any(ord(char) in originals for char in content):
            raise ValueError(f"messages[{index}] contains a private-use character (U+F0000..) that we use internally")
        stand_ins.append({"role": message["role"], "content": pattern.sub(lambda m: placeholders[m.group()], content)})
    text = render_template(
        spec, stand_ins, add_generation_prompt=add_generation_prompt, continue_final_message=continue_final_message
    )
    ids: list[int] = []
    # A capturing split alternates: text, special token, text, special token, ..., text.
    for position, piece in enumerate(re.split(f"({pattern.pattern})", text)):
        if position % 2 == 1:
            ids.append(int(tokenizer.convert_tokens_to_ids(piece)))
        elif piece:
            ids.extend(_encode_text(tokenizer, piece.translate(originals), split_special_tokens=True))
    return ids


def encode_chat(
    tokenizer: Any,
    messages: Sequence[Mapping[str, Any]],
    template: str | ChatTemplate = "chatml",
    *,
    add_generation_prompt: bool = False,
    continue_final_message: bool = False,
    on_special_tokens: OnSpecialTokens = "error",
) -> list[int]:
    """Token ids of ``messages`` rendered with ``template``.

    The same ids as ``tokenizer.apply_chat_template(messages, tokenize=True)``
    for the model's own template. The guard also refuses the tokenizer's own
    special tokens (SmolLM2 has 17, such as ``<filename>``), not only the
    template's.

    Args:
        tokenizer: a Hugging Face tokenizer.
        on_special_tokens: ``"error"`` raises :class:`RoleInjectionError` on a
            special token inside a message; ``"neutralise"`` tokenises it as
            plain text, so it cannot forge a turn.
        add_generation_prompt, continue_final_message: as in :func:`render_chat`.

    Example:
        >>> from llmsforme import load_model
        >>> model, tokenizer = load_model()
        >>> encode_chat(tokenizer, [{"role": "user", "content": "<|im_start|>"}],
        ...             on_special_tokens="neutralise")[-9:]
        [44, 108, 306, 79, 3738, 108, 46, 2, 198]

        Seven ordinary tokens spell ``<|im_start|>``; then come the template's
        ``<|im_end|>`` (2) and ``"\\n"``.

    Taught in: [Chat templates](../part-1/chat-templates.ipynb).
    """
    special = tokenizer_special_tokens(tokenizer)
    spec = prepare(messages, template, add_generation_prompt, continue_final_message, on_special_tokens, special)
    if on_special_tokens == "neutralise":
        return _encode_neutralised(tokenizer, spec, messages, add_generation_prompt, continue_final_message)
    text = render_template(
        spec, messages, add_generation_prompt=add_generation_prompt, continue_final_message=continue_final_message
    )
    return _encode_text(tokenizer, text)
