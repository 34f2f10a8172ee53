"""One small interface for "a language model", and two kinds of model behind it.

A decoding strategy needs only four things from a model: the logits of the
next token after a prompt, the logits after one more token (re-using what it
computed before, the *cache*), a way to reorder that cache when beam search
shuffles its beams, and a tokenizer. :class:`LanguageModel` says exactly that.

Two adapters implement it:

* :class:`HFLanguageModel` wraps any Hugging Face causal LM and its KV cache;
* :class:`ToyModel` is a hand-written table of next-word probabilities, small
  enough to follow by hand, which reproduces the worked examples of the course.

Taught in: [Generating text](../part-1/generating-text.ipynb).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["LanguageModel", "HFLanguageModel", "ToyModel", "as_language_model", "cache_argument", "visible_token"]


@runtime_checkable
class LanguageModel(Protocol):
    """What the decoding strategies need from a model.

    Rows are independent sequences that share one prompt (beam search runs
    ``num_beams`` rows). Logits are float32, shape ``[rows, vocab_size]``.
    """

    eos_token_ids: tuple[int, ...]
    vocab_size: int

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``."""
        ...

    def decode(self, token_ids: Sequence[int]) -> str:
        """Text of ``token_ids``."""
        ...

    def token_text(self, token_id: int) -> str:
        """How one token reads on its own (for tables and plots)."""
        ...

    def start(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Read the prompt (``[rows, length]``): next-token logits and a cache."""
        ...

    def advance(self, cache: Any, next_ids: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Append one token per row (``[rows]``): next-token logits and the cache."""
        ...

    def reorder(self, cache: Any, rows: torch.Tensor) -> Any:
        """Make row ``i`` of the cache a copy of row ``rows[i]`` (beam search)."""
        ...


def cache_argument(model: Any) -> str:
    """The name under which ``model.forward`` takes its KV cache.

    transformers renamed ``past_key_values`` to ``cache`` (5.24 takes both and
    deprecates the old name); a model that takes ``**kwargs`` swallows the
    name it does not know without a word, so the name is read from the
    signature rather than guessed.

    Example::

        cache_argument(model)   # 'cache' with transformers 5.24
    """
    import inspect

    # A wrapper such as peft's PeftModel passes **kwargs on to the model it
    # wraps: the name that counts is that model's.
    inner = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    parameters = inspect.signature(inner.forward).parameters
    for name in ("cache", "past_key_values"):
        if name in parameters:
            return name
    raise TypeError(
        f"{type(model).__name__}.forward takes neither 'cache' nor 'past_key_values': "
        "not a causal LM with a KV cache that llmsforme can drive"
    )


class HFLanguageModel:
    """A Hugging Face causal LM and its tokenizer, behind :class:`LanguageModel`.

    Each step runs one forward pass of the new token only, re-using the KV
    cache, and computes the logits of the last position only: the same calls
    that ``model.generate`` makes, so the results are identical. The
    positions are passed explicitly, and a step whose forward pass did not
    extend the cache raises ``RuntimeError`` instead of returning wrong text.
    Logits come back as float32 on the CPU, wherever the model runs.

    Example::

        from llmsforme import load_model
        lm = HFLanguageModel(*load_model())
        logits, cache = lm.start(torch.tensor([lm.encode("The rain in Spain")]))
        print(lm.token_text(int(logits.argmax())))   # the most likely next token

    Taught in: [Next-token probabilities](../part-1/generating-text.ipynb).
    """

    def __init__(self, model: Any, tokenizer: Any) -> None:
        if not callable(getattr(model, "forward", None)):
            raise TypeError(f"model must be a Hugging Face causal LM, got {type(model).__name__}")
        if not callable(getattr(tokenizer, "decode", None)):
            raise TypeError(f"tokenizer must be a Hugging Face tokenizer, got {type(tokenizer).__name__}")
        self.model = model
        self.tokenizer = tokenizer
        self.vocab_size = int(model.config.vocab_size)
        eos = model.generation_config.eos_token_id
        if eos is None:
            eos = tokenizer.eos_token_id
        self.eos_token_ids = tuple([eos] if isinstance(eos, int) else eos or [])
        self._device = next(model.parameters()).device
        self._cache_argument = cache_argument(model)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False).input_ids)

    def decode(self, token_ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(token_ids), skip_special_tokens=False))

    def token_text(self, token_id: int) -> str:
        return str(self.tokenizer.decode([int(token_id)]))

    def _forward(self, input_ids: torch.Tensor, cache: Any) -> torch.Tensor:
        # Explicit positions and an explicitly named cache: the loop must not
        # depend on defaults that differ between transformers versions.
        past = cache.get_seq_length()
        length = input_ids.shape[1]
        positions = torch.arange(past, past + length, device=self._device).expand(input_ids.shape[0], -1)
        with torch.no_grad():
            output = self.model(
                input_ids=input_ids.to(self._device),
                position_ids=positions,
                use_cache=True,
                logits_to_keep=1,
                **{self._cache_argument: cache},
            )
        if cache.get_seq_length() != past + length:
            # The model did not write into our cache, so the next step would
            # see only its own token: the text would be wrong, silently.
            import transformers

            raise RuntimeError(
                f"{type(self.model).__name__}.forward ignored the KV cache passed as "
                f"{self._cache_argument}= (transformers {transformers.__version__}): the cache holds "
                f"{cache.get_seq_length()} positions instead of {past + length}. llmsforme needs a "
                "transformers whose models take the cache as 'cache' or 'past_key_values'."
            )
        return output.logits[:, -1].to(copy=True, dtype=torch.float32, device="cpu")

    def start(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, Any]:
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        return self._forward(input_ids, cache), cache

    def advance(self, cache: Any, next_ids: torch.Tensor) -> tuple[torch.Tensor, Any]:
        return self._forward(next_ids[:, None], cache), cache

    def reorder(self, cache: Any, rows: torch.Tensor) -> Any:
        cache.reorder_cache(rows.to(self._device))
        return cache


class ToyModel:
    """A hand-written language model: a table of next-word probabilities.

    ``table`` maps a context (the words so far, joined by spaces) to the
    probabilities of the next word. A context the table does not list ends
    the text: its only continuation is the end token ``"<eos>"`` (id 0).

    Example (the course's beam-search example):
        >>> toy = ToyModel({
        ...     "the": {"plain": 0.6, "meadow": 0.4},
        ...     "the plain": {"which": 0.55, "and": 0.45},
        ...     "the meadow": {"where": 0.9, "and": 0.1},
        ... })
        >>> toy.vocabulary
        ('<eos>', 'the', 'plain', 'meadow', 'which', 'and', 'where')
        >>> logits, _ = toy.start(torch.tensor([toy.encode("the")]))
        >>> [round(x, 2) for x in torch.softmax(logits, -1)[0].tolist()]
        [0.0, 0.0, 0.6, 0.4, 0.0, 0.0, 0.0]

    Taught in: [Greedy and beam search](../part-1/greedy-and-beam-search.ipynb).
    """

    EOS = "<eos>"

    def __init__(self, table: Mapping[str, Mapping[str, float]], *, tolerance: float = 1e-6) -> None:
        if not isinstance(table, Mapping) or not table:
            raise TypeError("table must be a non-empty dict: context -> {next word: probability}")
        words: dict[str, None] = {self.EOS: None}
        self._rows: dict[tuple[str, ...], dict[str, float]] = {}
        for context, choices in table.items():
            if not isinstance(context, str) or not isinstance(choices, Mapping) or not choices:
                raise TypeError(f"table[{context!r}] must map next words to probabilities")
            for word, p in choices.items():
                if not isinstance(word, str) or not word or word.split() != [word]:
                    raise ValueError(f"table[{context!r}]: {word!r} is not a single word")
                if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p):
                    raise TypeError(f"table[{context!r}][{word!r}] must be a finite number, got {p!r}")
                if p < 0:
                    raise ValueError(f"table[{context!r}][{word!r}] = {p} is negative; probabilities are in [0, 1]")
            total = math.fsum(choices.values())
            if abs(total - 1.0) > tolerance:
                raise ValueError(
                    f"table[{context!r}] sums to {total:.6g}; the probabilities of a context must sum to 1 "
                    f"(within {tolerance:g})"
                )
            for word in context.split():
                words.setdefault(word, None)
            for word in choices:
                words.setdefault(word, None)
            self._rows[tuple(context.split())] = dict(choices)
        self.vocabulary: tuple[str, ...] = tuple(words)
        self._ids = {w: i for i, w in enumerate(self.vocabulary)}
        self.vocab_size = len(self.vocabulary)
        self.eos_token_ids = (0,)

    def encode(self, text: str) -> list[int]:
        unknown = [w for w in text.split() if w not in self._ids]
        if unknown:
            raise ValueError(f"words not in the toy vocabulary: {unknown}; known: {list(self.vocabulary)}")
        return [self._ids[w] for w in text.split()]

    def decode(self, token_ids: Sequence[int]) -> str:
        return " ".join(self.vocabulary[int(i)] for i in token_ids)

    def token_text(self, token_id: int) -> str:
        return self.vocabulary[int(token_id)]

    def next_probabilities(self, context: Sequence[str]) -> dict[str, float]:
        """The table's row for ``context`` (``{"<eos>": 1.0}`` where it has none)."""
        return self._rows.get(tuple(context), {self.EOS: 1.0})

    def _logits(self, contexts: list[tuple[str, ...]]) -> torch.Tensor:
        logits = torch.full((len(contexts), self.vocab_size), -math.inf, dtype=torch.float32)
        for row, context in enumerate(contexts):
            for word, p in self.next_probabilities(context).items():
                if p > 0:
                    logits[row, self._ids[word]] = math.log(p)
        return logits

    def start(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, list[tuple[str, ...]]]:
        contexts = [tuple(self.vocabulary[int(i)] for i in row) for row in input_ids]
        return self._logits(contexts), contexts

    def advance(
        self, cache: list[tuple[str, ...]], next_ids: torch.Tensor
    ) -> tuple[torch.Tensor, list[tuple[str, ...]]]:
        contexts = [c + (self.vocabulary[int(i)],) for c, i in zip(cache, next_ids)]
        return self._logits(contexts), contexts

    def reorder(self, cache: list[tuple[str, ...]], rows: torch.Tensor) -> list[tuple[str, ...]]:
        return [cache[int(i)] for i in rows]


def as_language_model(model: Any, tokenizer: Any = None) -> LanguageModel:
    """Return ``model`` if it already is a :class:`LanguageModel`, else wrap a HF model.

    Example:
        >>> toy = ToyModel({"a": {"b": 1.0}})
        >>> as_language_model(toy) is toy
        True
    """
    if isinstance(model, LanguageModel):
        return model
    if tokenizer is None:
        raise TypeError(
            "tokenizer is required with a Hugging Face model: pass tokenizer=..., "
            "or wrap them once with HFLanguageModel(model, tokenizer)"
        )
    return HFLanguageModel(model, tokenizer)


def visible_token(token: str) -> str:
    """A token as tables and plots show it: ``␣`` for a space, escapes for newlines.

    So that ``" the"`` and ``"the"``, two different tokens, look different.

    Example:
        >>> visible_token(" the"), visible_token("\\n"), visible_token("")
        ('␣the', '\\\\n', '∅')
    """
    if not isinstance(token, str):
        raise TypeError(f"token must be a str, got {type(token).__name__}")
    return repr(token)[1:-1].replace(" ", "␣") or "∅"
