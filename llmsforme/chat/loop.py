"""Chatting with a model: one call per turn.

:func:`chat` renders the conversation with the model's template, asks a
decoding strategy of :mod:`llmsforme.decoding` to continue it until the
end-of-turn token, and returns the conversation with the reply appended.
:func:`chat_many` does the same for several conversations at once, in one
batch.

Taught in: [Chat templates](../part-1/chat-templates.ipynb).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import decoding
from ..lm import as_language_model
from .guard import OnSpecialTokens
from .registry import ChatTemplate, get_template
from .tokens import encode_chat
from .tools import uses_tools, with_tools

__all__ = ["chat", "chat_many", "chat_prompt", "ChatPrompt", "detect_template", "TextStream"]

STRATEGIES: dict[str, Callable[..., decoding.Generation]] = {
    "greedy": decoding.greedy,
    "sample": decoding.sample,
    "beam_search": decoding.beam_search,
}

# A template's tell-tale token, checked in this order.
_SIGNATURES = (
    ("<|im_start|>", "chatml"),
    ("<|start_header_id|>", "llama3"),
    ("<start_of_turn>", "gemma"),
    ("<|user|>", "phi3"),
    ("<<SYS>>", "llama2"),
    ("[INST]", "mistral"),
)


def detect_template(tokenizer: Any) -> str:
    """The name of our template family for a tokenizer, read from its ``chat_template``.

    Example:
        >>> class Tokenizer:
        ...     chat_template = "{% for m in messages %}{{ '<|im_start|>' + m['role'] }}..."
        >>> detect_template(Tokenizer())
        'chatml'

    Taught in: [Chat templates](../part-1/chat-templates.ipynb).
    """
    source = getattr(tokenizer, "chat_template", None)
    if isinstance(source, str):
        for signature, name in _SIGNATURES:
            if signature in source:
                return name
    raise ValueError(
        "cannot tell which chat template this tokenizer uses: pass template= one of "
        + ", ".join(repr(name) for _, name in _SIGNATURES)
    )


class TextStream:
    """Turn token ids, one at a time, into text increments.

    Each new token is decoded together with the ones before it and only the
    new end of the text is emitted: a character split across several byte
    tokens (an emoji, an accented letter) comes out whole, once complete.

    Example:
        >>> pieces = []
        >>> stream = TextStream(lambda ids: bytes(ids).decode("utf-8", errors="replace"), pieces.append)
        >>> for byte in "é!".encode():  # "é" is two bytes: nothing shows after the first
        ...     stream.add(byte)
        >>> stream.finish()
        >>> pieces
        ['é', '!']

    Taught in: [Chat templates](../part-1/chat-templates.ipynb).
    """

    def __init__(self, decode: Callable[[list[int]], str], on_text: Callable[[str], None]) -> None:
        self._decode = decode
        self._on_text = on_text
        self._ids: list[int] = []
        self.text = ""  # what was emitted so far

    def _emit(self, final: bool) -> None:
        text = self._decode(self._ids)
        # Hold back while the end is an incomplete character (decoded as U+FFFD).
        if (final or not text.endswith("\ufffd")) and text.startswith(self.text) and len(text) > len(self.text):
            self._on_text(text[len(self.text) :])
            self.text = text

    def add(self, token_id: int) -> None:
        self._ids.append(token_id)
        self._emit(final=False)

    def finish(self) -> None:
        """Emit what was held back."""
        self._emit(final=True)


@dataclass(frozen=True)
class ChatPrompt:
    """A conversation ready for a decoding strategy.

    ``ids`` are the prompt's token ids (the rendered conversation and the
    generation prompt); ``end_of_turn`` is the id of the template's token
    that ends the reply.
    """

    ids: list[int]
    end_of_turn: int
    template: ChatTemplate

    def stop_ids(self, lm: Any) -> tuple[int, ...]:
        """The tokens that end the reply: the end of turn, then the model's own end tokens."""
        return (self.end_of_turn, *(i for i in lm.eos_token_ids if i != self.end_of_turn))


def chat_prompt(
    tokenizer: Any,
    messages: Sequence[Mapping[str, Any]],
    *,
    template: str | ChatTemplate | None = None,
    on_special_tokens: OnSpecialTokens = "error",
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> ChatPrompt:
    """Validate and encode a conversation for the next reply; say which tokens end it.

    This is the first half of :func:`chat`, for callers that run the
    strategy themselves (the course's server counts, streams and stops
    tokens on its own).

    Example:
        >>> from llmsforme import load_model
        >>> model, tokenizer = load_model()
        >>> prompt = chat_prompt(tokenizer, [{"role": "user", "content": "Hi!"}])
        >>> prompt.end_of_turn, tokenizer.convert_ids_to_tokens(prompt.end_of_turn)
        (2, '<|im_end|>')

    With ``tools`` (OpenAI-shaped), or ``tool`` messages and assistant
    ``tool_calls`` in the conversation, the messages are first written in the
    tool format of :func:`~llmsforme.chat.with_tools`.

    Taught in: [Messages and roles](../part-3/messages.ipynb).
    """
    spec = get_template(detect_template(tokenizer) if template is None else template)
    if uses_tools(messages, tools):
        messages = with_tools(messages, tools)
    ids = encode_chat(tokenizer, messages, spec, add_generation_prompt=True, on_special_tokens=on_special_tokens)
    end_of_turn = tokenizer.convert_tokens_to_ids(spec.end_of_turn)
    if end_of_turn is None or tokenizer.convert_ids_to_tokens(end_of_turn) != spec.end_of_turn:
        raise ValueError(
            f"template {spec.name!r} does not fit this tokenizer: it has no {spec.end_of_turn!r} token to stop at"
        )
    return ChatPrompt(ids, int(end_of_turn), spec)


def chat(
    model: Any,
    tokenizer: Any,
    messages: Sequence[Mapping[str, Any]],
    *,
    strategy: str = "greedy",
    template: str | ChatTemplate | None = None,
    max_new_tokens: int = 256,
    on_text: Callable[[str], None] | None = None,
    on_special_tokens: OnSpecialTokens = "error",
    **decoding_options: Any,
) -> list[dict[str, str]]:
    """One turn: the conversation with the model's reply appended.

    The conversation is rendered with ``template`` (by default the one the
    tokenizer's ``chat_template`` uses) and a generation prompt, then the
    strategy generates until the end-of-turn token (``<|im_end|>``, id 2 for
    the course model) or ``max_new_tokens``. The input is not modified: the
    result is a new list, the input messages (copied) and one assistant
    message whose content is the reply without its end-of-turn token.

    Args:
        model: a Hugging Face causal LM, or a :class:`~llmsforme.lm.LanguageModel`.
        tokenizer: its Hugging Face tokenizer.
        strategy: ``"greedy"``, ``"sample"`` or ``"beam_search"``.
        on_text: called with each new piece of the reply's text (streaming;
            greedy and sample only).
        on_special_tokens: see :func:`~llmsforme.chat.encode_chat`.
        **decoding_options: passed to the strategy (``temperature``,
            ``top_k``, ``top_p``, ``seed``, ``num_beams``, ``on_token``...).

    Example:
        >>> from llmsforme import load_model
        >>> model, tokenizer = load_model()
        >>> conversation = chat(model, tokenizer, [{"role": "user", "content": "Hi!"}])
        >>> conversation[-1]["role"]
        'assistant'
        >>> conversation = chat(model, tokenizer, conversation + [
        ...     {"role": "user", "content": "And then?"}], max_new_tokens=5,
        ...     on_text=lambda s: print(s, end=""))  # streams the reply
        I'm sorry for any
        >>> len(conversation)
        4

    Taught in: [Chat templates](../part-1/chat-templates.ipynb).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(map(repr, STRATEGIES))}, got {strategy!r}")
    if on_text is not None and not callable(on_text):
        raise TypeError(f"on_text must be a function of one string, got {type(on_text).__name__}")
    if on_text is not None and strategy == "beam_search":
        raise ValueError("on_text streams one sequence as it is generated: use strategy 'greedy' or 'sample'")
    prompt = chat_prompt(tokenizer, messages, template=template, on_special_tokens=on_special_tokens)
    lm = as_language_model(model, tokenizer)
    # Stop at the end of the turn, and at the model's own end tokens too.
    stop = decoding_options.setdefault("eos_token_id", prompt.stop_ids(lm))
    stop_ids = (stop,) if isinstance(stop, int) else tuple(stop)

    stream = TextStream(lm.decode, on_text) if on_text is not None else None
    if stream is not None:
        user_on_token = decoding_options.pop("on_token", None)

        def on_token(token_id: int) -> None:
            if user_on_token is not None:
                user_on_token(token_id)
            if token_id not in stop_ids:
                stream.add(token_id)

        decoding_options["on_token"] = on_token
    generation = STRATEGIES[strategy](lm, prompt.ids, max_new_tokens=max_new_tokens, **decoding_options)
    reply_ids = generation.token_ids
    if reply_ids and reply_ids[-1] in stop_ids:
        reply_ids = reply_ids[:-1]
    reply = lm.decode(reply_ids)
    if stream is not None:
        stream.finish()
    return [dict(message) for message in messages] + [{"role": "assistant", "content": reply}]


def chat_many(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[Sequence[Mapping[str, Any]]],
    *,
    template: str | ChatTemplate | None = None,
    max_new_tokens: int = 256,
    max_batch: int = 8,
    on_special_tokens: OnSpecialTokens = "error",
) -> list[list[dict[str, str]]]:
    """The next greedy reply of several conversations, generated together.

    Each conversation gets the reply that ``chat(model, tokenizer,
    conversation)`` gives it alone (greedy; the test suite checks it), but
    up to ``max_batch`` of them share every forward pass of a
    :class:`~llmsforme.batching.ContinuousBatcher`: on a CPU, a step for
    several sequences costs little more than a step for one, so ten replies
    take a fraction of ten calls of :func:`chat`.

    Args:
        model: a Hugging Face causal LM (or a PEFT model around one), or an
            :class:`~llmsforme.lm.HFLanguageModel`: batching needs
            transformers' KV cache.
        conversations: a list of conversations, each a list of messages.
        max_batch: most conversations generating at once (an int >= 1).
        template, max_new_tokens, on_special_tokens: as in :func:`chat`.

    Returns:
        One new list per conversation, in order: its messages (copied) and
        the assistant's reply.

    Example:
        >>> from llmsforme import load_model
        >>> model, tokenizer = load_model()
        >>> questions = ["What is 2 + 2?", "Name a colour."]
        >>> replies = chat_many(model, tokenizer, [
        ...     [{"role": "user", "content": q}] for q in questions], max_new_tokens=8)
        >>> [c[-1]["content"] for c in replies] == [
        ...     chat(model, tokenizer, [{"role": "user", "content": q}], max_new_tokens=8)[-1]["content"]
        ...     for q in questions]
        True

    Taught in: [Fine-tuning the course model](../part-2/fine-tuning.ipynb);
    how the batch works: [Serving many users](../part-4/serving-many.ipynb).
    """
    from ..batching import BatchRequest, ContinuousBatcher

    if isinstance(conversations, (str, bytes, Mapping)) or not isinstance(conversations, Sequence):
        raise TypeError(
            f"conversations must be a list of conversations (lists of messages), got {type(conversations).__name__}"
        )
    if not conversations:
        raise ValueError("conversations is empty: give at least one conversation")
    for number, messages in enumerate(conversations):
        if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
            raise TypeError(f"conversations[{number}] must be a list of messages, got {type(messages).__name__}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    lm = as_language_model(model, tokenizer)
    prompts = [chat_prompt(tokenizer, messages, template=template, on_special_tokens=on_special_tokens)
               for messages in conversations]
    batcher = ContinuousBatcher(lm, max_batch=max_batch)  # checks max_batch
    requests = [batcher.submit(BatchRequest(prompt.ids, max_new_tokens=max_new_tokens,
                                            eos_token_ids=prompt.stop_ids(lm)))
                for prompt in prompts]
    batcher.run()
    replies = []
    for messages, prompt, request in zip(conversations, prompts, requests):
        ids = list(request.generated)
        if ids and ids[-1] in prompt.stop_ids(lm):
            ids = ids[:-1]
        replies.append([dict(message) for message in messages] + [{"role": "assistant", "content": lm.decode(ids)}])
    return replies
