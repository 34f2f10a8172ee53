"""One small interface for "a language model", and three kinds of model behind it.

A decoding strategy needs only four things from a model: the logits of the
next token after a prompt, the logits after one more token (re-using what it
computed before, the *cache*), a way to reorder that cache when beam search
shuffles its beams, and a tokenizer. :class:`LanguageModel` says exactly that.

Three adapters implement it:

* :class:`HFLanguageModel` wraps any Hugging Face causal LM and its KV cache;
* :class:`LlamaCppLanguageModel` wraps a llama.cpp model on a GGUF file;
* :class:`ToyModel` is a hand-written table of next-word probabilities, small
  enough to follow by hand, which reproduces the worked examples of the course.

Taught in: [Generating text](../part-1/generating-text.ipynb).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = [
    "HFLanguageModel",
    "LanguageModel",
    "LlamaCppLanguageModel",
    "ToyModel",
    "as_language_model",
    "cache_argument",
    "visible_token",
]


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
        #: Prompt and reply together must fit in this many tokens.
        self.context_window = int(getattr(model.config, "max_position_embeddings", 0) or 2048)

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


class LlamaCppLanguageModel:
    """A llama.cpp model (``llama_cpp.Llama``, on a GGUF file) behind :class:`LanguageModel`.

    The strategies of :mod:`llmsforme.decoding` then run unchanged on
    llama.cpp's 4-bit kernels. One sequence (greedy, sampling) uses the
    context's own KV cache: each step evaluates the new token only, as
    llama.cpp's ``generate`` does. Several rows (beam search) keep one
    saved llama.cpp *state* (its KV cache) per row, restored before each
    row's step and saved after it: correct, but each step copies every
    beam's cache, so beam search is much slower here than greedy.

    Tokens are llama.cpp's, read from the GGUF file; for the course model
    they are the same ids as its Hugging Face tokenizer's (checked by the
    tests). The context is not thread-safe: one generation at a time.

    Example::

        from llmsforme import load_model, greedy
        model, tokenizer = load_model(backend="llama.cpp")
        greedy(model, "The rain in Spain", tokenizer=tokenizer).text

    Taught in: [Part 4: LLM applications locally](../part-4/index.md).
    """

    def __init__(self, llama: Any) -> None:
        if not _is_llama(llama):
            raise TypeError(f"llama must be a llama_cpp.Llama, got {type(llama).__name__}")
        self.llama = llama
        self.vocab_size = int(llama.n_vocab())
        self.eos_token_ids = (int(llama.token_eos()),)
        #: Prompt and reply together must fit in this many tokens (llama.cpp's n_ctx).
        # llama.cpp may round its context up; the binding's buffers keep the size asked for.
        self.context_window = min(int(llama.n_ctx()), len(llama.input_ids))
        self._generation = 0  # which generation owns the context's KV cache now

    def encode(self, text: str) -> list[int]:
        return list(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.llama.detokenize([int(i) for i in token_ids], special=True).decode("utf-8", errors="replace")

    def token_text(self, token_id: int) -> str:
        return self.decode([int(token_id)])

    def _eval(self, ids: Sequence[int]) -> torch.Tensor:
        import llama_cpp
        import numpy as np

        if self.llama.n_tokens + len(ids) > self.context_window:
            raise ValueError(
                f"the sequence would reach {self.llama.n_tokens + len(ids)} tokens, more than this "
                f"llama.cpp context holds (n_ctx={self.context_window}): load it with a larger n_ctx"
            )
        self.llama.eval([int(i) for i in ids])
        pointer = llama_cpp.llama_get_logits_ith(self.llama.ctx, -1)  # the last position's logits
        logits = np.ctypeslib.as_array(pointer, shape=(self.vocab_size,))
        return torch.from_numpy(logits.astype(np.float32, copy=True))

    def start(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, Any]:
        rows = input_ids.tolist()
        self.llama.reset()
        logits = self._eval(rows[0])
        self._generation += 1
        if len(rows) == 1:
            return logits[None], _LiveCache(self._generation)
        if any(row != rows[0] for row in rows):
            raise ValueError("the rows of a llama.cpp start must be copies of one prompt (beam search)")
        state = self.llama.save_state()
        return logits.expand(len(rows), -1).clone(), [state] * len(rows)

    def advance(self, cache: Any, next_ids: torch.Tensor) -> tuple[torch.Tensor, Any]:
        tokens = [int(i) for i in next_ids.reshape(-1).tolist()]
        if isinstance(cache, _LiveCache):
            if cache.generation != self._generation:
                raise RuntimeError("this llama.cpp context was used by another generation since this one started")
            return self._eval(tokens)[None], cache
        logits, states = [], []
        for state, token in zip(cache, tokens):
            self.llama.load_state(state)
            logits.append(self._eval([token]))
            states.append(self.llama.save_state())
        self._generation += 1
        return torch.stack(logits), states

    def reorder(self, cache: Any, rows: torch.Tensor) -> Any:
        if isinstance(cache, _LiveCache):
            if rows.tolist() != [0]:
                raise ValueError("a single llama.cpp sequence can only be kept, not copied")
            return cache
        return [cache[int(i)] for i in rows.tolist()]


class _LiveCache:
    """The KV cache that lives in the llama.cpp context, for one generation."""

    def __init__(self, generation: int) -> None:
        self.generation = generation


def _is_llama(model: Any) -> bool:
    return type(model).__module__.startswith("llama_cpp") and type(model).__name__ == "Llama"


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
    if _is_llama(model):  # llama.cpp has its own tokenizer (the same ids for the course model)
        return LlamaCppLanguageModel(model)
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
