"""Constrained decoding: a logits processor that lets through only the tokens a grammar allows.

A model of 135M parameters cannot be trusted to write valid JSON. It does not
have to be: before each token is chosen, :class:`GrammarProcessor` sets to
``-inf`` every token that would break the grammar, so greedy search, sampling
and beam search can only produce text the grammar accepts. When the grammar
is complete, only the end token is left. That is how llama.cpp, vLLM and
OpenAI's strict mode guarantee a format.

Four grammars: :func:`json_schema` (the subset of JSON Schema that OpenAI's
strict mode accepts, and more), :func:`any_json`, :func:`regex` and
:func:`choice`. Each needs the model's vocabulary, read from any of the
package's three adapters (``HFLanguageModel``, ``LlamaCppLanguageModel``,
``ToyModel``), a Hugging Face tokenizer or a ``llama_cpp.Llama``.

The grammar library is **llguidance**, chosen by measurement
(``benchmarks/grammar_libraries.py``, its output in
``benchmarks/results/grammar_libraries.txt``; 2 CPU cores, the course
model's tokenizer of 49,152 tokens, medians of 9 interleaved rounds):

| library       | vocabulary | compile | mask + advance   | extra dependencies     |
| ------------- | ---------- | ------- | ---------------- | ---------------------- |
| llguidance    | 616 ms     | 2.8 ms  | 24 us / token    | none                   |
| xgrammar      | 326 ms     | 11.7 ms | 21 us / token    | triton, apache-tvm-ffi |
| outlines-core | 288 ms     | 546 ms  | 1,840 us / token | none                   |

All three accept the four kinds of grammar (outlines-core turns a schema into
a regular expression, so its "any JSON" stops at a fixed depth). llguidance
compiles a schema 4x faster than xgrammar and 200x faster than outlines-core;
per token it is as fast as xgrammar (the two differ by less than the noise:
the spreads of that busy machine were above 10 %). It installs as one wheel
with no dependency, where xgrammar pulls in ``triton`` (a GPU compiler) and
``apache-tvm-ffi``; it reads llama.cpp's vocabulary and word-level ones too;
and it names the keyword it cannot compile (``Unimplemented keys: ["if"]``).
The vocabulary is built once per model and cached.

The matcher's state is kept per generated prefix, so beam search may ask for
the mask of any hypothesis, in any order.

Example (the toy model's vocabulary: words):
    >>> from llmsforme.lm import ToyModel
    >>> from llmsforme.decoding import greedy
    >>> toy = ToyModel({"the": {"plain": 0.6, "meadow": 0.4},
    ...                 "the meadow": {"where": 0.9, "and": 0.1}})
    >>> greedy(toy, "the").text
    'plain'
    >>> greedy(toy, "the", logits_processors=[choice(toy, ["meadow where"])]).text
    'meadow where'

Taught in: the idea, a processor that gives forbidden tokens ``-inf``, in
[Top-k and top-p sampling](../part-1/top-k-top-p.ipynb); the mask step by
step, and ``response_format`` on the server, in
[Structured outputs](../part-3/structured-outputs.ipynb).
"""

from __future__ import annotations

import json
import math
import warnings
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import llguidance
import numpy as np
import torch

__all__ = [
    "AllowedTokens",
    "GrammarProcessor",
    "UnsupportedSchemaError",
    "allowed_tokens",
    "any_json",
    "check_strict_schema",
    "choice",
    "json_schema",
    "lark",
    "regex",
]

#: JSON written as ``{"key": "value", "list": [1, 2]}``: one space after ``:``
#: and ``,``, no newlines, so the model cannot pad its reply with blanks forever.
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}

# source -> its _Vocabulary; weak, so that a cached vocabulary never keeps a model alive
_VOCABULARIES: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


class _WordVocabulary:
    """A word-level vocabulary (the toy model) as llguidance reads one.

    The toy model writes its words separated by spaces. Each word reads here
    as the word and one space, so a grammar over the text is matched against
    the text and one final space (added by :func:`_grammar`).
    """

    def __init__(self, words: Sequence[str], eos_token_id: int) -> None:
        self.eos_token_id = eos_token_id
        self.bos_token_id = None
        self.special_token_ids = [eos_token_id]
        self.tokens = [b"\xff" + w.encode() if i == eos_token_id else w.encode() + b" " for i, w in enumerate(words)]
        self._ids = {token: i for i, token in enumerate(self.tokens) if i != eos_token_id}

    def __call__(self, text: str | bytes) -> list[int]:
        data = text.encode() if isinstance(text, str) else text
        return [self._ids[w + b" "] for w in data.split() if w + b" " in self._ids]


@dataclass(frozen=True)
class _Vocabulary:
    tokenizer: Any  # llguidance.LLTokenizer
    size: int  # the length of the model's logits
    eos: tuple[int, ...]
    words: bool  # word-level (the toy model): each token reads as the word and a space


def _vocabulary(source: Any) -> _Vocabulary:
    """llguidance's view of the vocabulary of ``source``, built once per source (about 0.5 s)."""
    try:
        cached = _VOCABULARIES.get(source)
    except TypeError:  # not weakly referable: built every time
        cached = None
    if cached is not None:
        return cached
    adapter = callable(getattr(source, "start", None))  # a LanguageModel of llmsforme.lm
    eos = [int(i) for i in source.eos_token_ids] if adapter else None
    size = int(source.vocab_size) if adapter else None
    words = False
    if isinstance(getattr(source, "vocabulary", None), tuple) and eos:  # ToyModel
        wrapper = llguidance.TokenizerWrapper(_WordVocabulary(source.vocabulary, eos[0]))
        tokenizer, words = llguidance.LLTokenizer(wrapper, slices=[]), True
    elif getattr(source, "llama", None) is not None or type(source).__name__ == "Llama":  # llama.cpp
        import llama_cpp
        from llguidance.llamacpp import lltokenizer_from_vocab

        llama = getattr(source, "llama", None) or source
        vocab = llama_cpp.llama_model_get_vocab(llama.model)
        with warnings.catch_warnings():  # llguidance calls a function llama-cpp-python renamed
            warnings.simplefilter("ignore", DeprecationWarning)
            tokenizer = lltokenizer_from_vocab(vocab, n_vocab=size, eos_token=eos)
    else:  # a Hugging Face tokenizer, or an adapter that holds one
        hf = getattr(source, "tokenizer", source)
        if not hasattr(hf, "backend_tokenizer"):
            raise TypeError(
                "model must be a language model of llmsforme.lm (HFLanguageModel, LlamaCppLanguageModel, "
                f"ToyModel), a fast Hugging Face tokenizer or a llama_cpp.Llama; got {type(source).__name__}"
            )
        from llguidance.hf import from_tokenizer

        tokenizer = from_tokenizer(hf, n_vocab=size, eos_token=eos)
    vocabulary = _Vocabulary(tokenizer, int(size or tokenizer.vocab_size), tuple(eos or tokenizer.eos_tokens), words)
    try:
        _VOCABULARIES[source] = vocabulary
    except TypeError:
        pass
    return vocabulary


class GrammarProcessor:
    """A logits processor ``(generated_ids, logits) -> logits`` that masks what a grammar forbids.

    Build one with :func:`json_schema`, :func:`any_json`, :func:`regex` or
    :func:`choice`, and pass it in ``logits_processors``. Forbidden tokens
    get ``-inf``; the others keep their logits. A processor is tied to one
    vocabulary and may serve any number of generations, one at a time.

    The matcher's state is cached by generated prefix (a tuple of ids): a
    new prefix starts from the state of its longest known prefix and reads
    the rest. A prefix the grammar refuses (a beam search candidate of
    probability 0) gets its logits back unchanged: its score is already
    ``-inf``, and masking every token would turn softmax into NaN.
    """

    def __init__(self, grammar: str, model: Any, *, description: str) -> None:
        vocabulary = _vocabulary(model)
        root = llguidance.LLMatcher(vocabulary.tokenizer, grammar, log_level=0)
        if root.is_error():
            raise ValueError(f"{description}: the grammar cannot be built: {root.get_error().splitlines()[0]}")
        self.description = description
        self.vocab_size = vocabulary.size
        self._eos = list(vocabulary.eos)
        self._states: dict[tuple[int, ...], Any] = {(): root}

    def __repr__(self) -> str:
        return f"GrammarProcessor({self.description})"

    def _matcher(self, prefix: tuple[int, ...]) -> Any:
        """The matcher after ``prefix``, or ``None`` if the grammar refuses it."""
        state = self._states.get(prefix)
        if state is not None:
            return state
        known = len(prefix) - 1
        while prefix[:known] not in self._states:
            known -= 1
        matcher = self._states[prefix[:known]].deep_copy()
        for token in prefix[known:]:
            if not matcher.consume_token(token):
                return None
        # Keep the states a next step can extend (and the root): memory stays
        # in proportion to the number of hypotheses, not to their length.
        for key in [key for key in self._states if 0 < len(key) < len(prefix) - 1]:
            del self._states[key]
        self._states[prefix] = matcher
        return matcher

    def allowed(self, generated_ids: Sequence[int] | torch.Tensor) -> torch.Tensor | None:
        """Boolean mask ``[vocab_size]`` of the tokens allowed after ``generated_ids`` (``None``: refused prefix)."""
        prefix = tuple(int(i) for i in (generated_ids.tolist() if isinstance(generated_ids, torch.Tensor) else generated_ids))
        matcher = self._matcher(prefix)
        if matcher is None or matcher.is_error():
            return None
        bias = np.frombuffer(matcher.compute_logit_bias(), dtype=np.uint8)
        mask = torch.zeros(self.vocab_size, dtype=torch.bool)
        n = min(len(bias), self.vocab_size)
        mask[:n] = torch.from_numpy(bias[:n] != 0)
        return mask

    def __call__(self, generated_ids: Sequence[int] | torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        if not isinstance(logits, torch.Tensor) or logits.shape[-1] != self.vocab_size:
            raise ValueError(
                f"logits must be a tensor whose last dimension is the vocabulary ({self.vocab_size}), "
                f"got {tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__}"
            )
        mask = self.allowed(generated_ids)
        if mask is None:
            return logits
        return logits.masked_fill(~mask.to(logits.device), -math.inf)


def _grammar(model: Any, body: str) -> str:
    """A Lark grammar whose start is ``body``; on a word vocabulary, followed by the last word's space."""
    words = _vocabulary(model).words
    return llguidance.LLMatcher.grammar_from_lark(f'start: body{" " + json.dumps(" ") if words else ""}\nbody: {body}')


def json_schema(model: Any, schema: Mapping[str, Any] | str) -> GrammarProcessor:
    """Only JSON that validates against ``schema`` (a dict or its JSON text).

    Objects, arrays, strings, numbers, integers, booleans, null; ``enum``,
    ``const``, ``required``, ``additionalProperties``, ``anyOf``, ``$defs``
    and ``$ref`` (OpenAI strict mode's subset), and more (``minLength``,
    ``maxLength``, ``pattern``, ``minItems``, ``maxItems``, ``minimum``,
    ``maximum``). A schema the grammar cannot express raises ``ValueError``
    naming what failed. The JSON is written compactly, one space after
    ``:`` and ``,``.

    Example:
        >>> from llmsforme.lm import ToyModel
        >>> toy = ToyModel({"a": {"b": 1.0}})
        >>> json_schema(toy, "not json")
        Traceback (most recent call last):
        ...
        ValueError: schema must be a JSON Schema (a dict, or its JSON text): Expecting value: line 1 column 1 (char 0)
    """
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except ValueError as error:
            raise ValueError(f"schema must be a JSON Schema (a dict, or its JSON text): {error}") from None
    if not isinstance(schema, Mapping):
        raise TypeError(f"schema must be a JSON Schema (a dict, or its JSON text), got {type(schema).__name__}")
    layout = {**JSON_LAYOUT, **dict(schema.get("x-guidance") or {})}
    text = json.dumps({**schema, "x-guidance": layout})
    return GrammarProcessor(_grammar(model, "%json " + text), model, description="schema")


def any_json(model: Any) -> GrammarProcessor:
    """Any JSON object (the ``{"type": "json_object"}`` of OpenAI's API)."""
    processor = json_schema(model, {"type": "object"})
    processor.description = "any JSON object"
    return processor


def lark(model: Any, rules: str, *, description: str = "grammar") -> GrammarProcessor:
    """Only text that the Lark grammar ``rules`` accepts from its rule ``main`` (llguidance's Lark dialect).

    The rules may embed JSON Schemas (``%json {...}``; give them
    ``"x-guidance": JSON_LAYOUT`` to write them as :func:`json_schema`
    does): the chat layer builds its "text or a tool call" grammar this way.

    Example:
        >>> from llmsforme.lm import ToyModel
        >>> from llmsforme.decoding import greedy
        >>> toy = ToyModel({"the": {"plain": 0.6, "meadow": 0.4}})
        >>> greedy(toy, "the", logits_processors=[lark(toy, 'main: "meadow"')]).text
        'meadow'
    """
    if not isinstance(rules, str) or "main" not in rules:
        raise ValueError(f"rules must be a Lark grammar (a str) with a rule 'main', got {rules!r}")
    words = _vocabulary(model).words
    grammar = f'start: main{" " + json.dumps(" ") if words else ""}\n' + rules
    return GrammarProcessor(llguidance.LLMatcher.grammar_from_lark(grammar), model, description=description)


def regex(model: Any, pattern: str) -> GrammarProcessor:
    """Only text that matches the regular expression ``pattern`` in full (Rust ``regex`` syntax).

    Example:
        >>> from llmsforme.lm import ToyModel
        >>> regex(ToyModel({"a": {"b": 1.0}}), "([")
        Traceback (most recent call last):
        ...
        ValueError: pattern '([': the grammar cannot be built: at 2(7): invalid regex "([" (in regex): regex parse error:
    """
    if not isinstance(pattern, str) or not pattern:
        raise TypeError(f"pattern must be a non-empty str, got {pattern!r}")
    body = "/" + llguidance.regex_to_lark(pattern) + "/"
    return GrammarProcessor(_grammar(model, body), model, description=f"pattern {pattern!r}")


def choice(model: Any, options: Sequence[str]) -> GrammarProcessor:
    """Exactly one of ``options`` (non-empty strings).

    Example:
        >>> from llmsforme.lm import ToyModel
        >>> choice(ToyModel({"a": {"b": 1.0}}), [])
        Traceback (most recent call last):
        ...
        ValueError: options must be a non-empty list of non-empty strings, got []
    """
    if isinstance(options, str) or not isinstance(options, Sequence):
        raise TypeError(f"options must be a list of strings, got {type(options).__name__}")
    if not options or not all(isinstance(o, str) and o for o in options):
        raise ValueError(f"options must be a non-empty list of non-empty strings, got {list(options)!r}")
    body = " | ".join(json.dumps(o) for o in options)
    return GrammarProcessor(_grammar(model, body), model, description=f"options {list(options)!r}")


@dataclass(frozen=True)
class AllowedTokens:
    """What the mask lets through at one point: how many tokens, and a few of each kind."""

    allowed: int
    vocab_size: int
    allowed_sample: tuple[str, ...]
    refused_sample: tuple[str, ...]


def allowed_tokens(processor: GrammarProcessor, model: Any, text: str, *, sample: int = 8) -> AllowedTokens:
    """The mask after ``text`` (the reply so far), read on the vocabulary of ``model``.

    ``model`` is an adapter of :mod:`llmsforme.lm` (anything with ``encode``
    and ``token_text``). The samples are the first allowed and refused
    tokens in vocabulary order, shown as :func:`llmsforme.lm.visible_token`
    shows them (``␣`` for a space).

    Example:
        >>> from llmsforme.lm import ToyModel
        >>> toy = ToyModel({"the": {"plain": 0.6, "meadow": 0.4}})
        >>> allowed_tokens(choice(toy, ["the meadow", "the plain"]), toy, "the")
        AllowedTokens(allowed=2, vocab_size=4, allowed_sample=('plain', 'meadow'), refused_sample=('<eos>', 'the'))
    """
    if not isinstance(processor, GrammarProcessor):
        raise TypeError(f"processor must be a GrammarProcessor, got {type(processor).__name__}")
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 0:
        raise ValueError(f"sample must be an int >= 0, got {sample!r}")
    mask = processor.allowed(model.encode(text))
    if mask is None:
        raise ValueError(f"text {text!r} already breaks the grammar ({processor.description})")

    def shown(ids: torch.Tensor) -> tuple[str, ...]:
        return tuple(repr(model.token_text(int(i)))[1:-1].replace(" ", "␣") or "∅" for i in ids[:sample])

    return AllowedTokens(
        allowed=int(mask.sum()),
        vocab_size=int(mask.numel()),
        allowed_sample=shown(torch.nonzero(mask).flatten()),
        refused_sample=shown(torch.nonzero(~mask).flatten()),
    )


# --- OpenAI strict mode's subset of JSON Schema -------------------------------------------

#: The keywords a schema may use in OpenAI's strict mode (its Structured Outputs
#: guide, "Supported schemas"): the types, ``anyOf``, local ``$ref`` with
#: ``$defs``, and a few constraints per type. Annotations are allowed too.
STRICT_KEYWORDS = {
    "any": {"type", "enum", "const", "anyOf", "$ref", "$defs", "definitions",
            "title", "description", "default", "examples", "$comment", "$schema"},
    "object": {"properties", "required", "additionalProperties"},
    "array": {"items", "minItems", "maxItems"},
    "string": {"pattern", "format"},
    "number": {"multipleOf", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"},
}
#: The string ``format`` values strict mode accepts.
STRICT_FORMATS = ("date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid")
_TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}
_ALLOWED = set().union(*STRICT_KEYWORDS.values())


class UnsupportedSchemaError(ValueError):
    """A schema uses what OpenAI's strict mode does not accept: ``keyword`` at ``path`` (a JSON Pointer)."""

    def __init__(self, message: str, keyword: str, path: str) -> None:
        super().__init__(message)
        self.keyword = keyword
        self.path = path


def check_strict_schema(schema: Any, *, strict: bool = True) -> None:
    """Raise :class:`UnsupportedSchemaError` where ``schema`` leaves OpenAI strict mode's subset.

    llguidance compiles more than that subset, and silently ignores some
    keywords it cannot enforce (``patternProperties``, ``minProperties``),
    so a server that promises valid output checks the keywords itself. Every
    keyword must be one of :data:`STRICT_KEYWORDS`, a ``format`` one of
    :data:`STRICT_FORMATS`, a ``$ref`` point inside the schema (``#...``).
    With ``strict=True`` the structure must also be strict mode's: the root
    is an object, every object sets ``additionalProperties: false`` and lists
    all its properties in ``required``.

    Example:
        >>> check_strict_schema({"type": "object", "properties": {"tags": {"type": "object",
        ...     "patternProperties": {"^x": {"type": "string"}}}}}, strict=False)
        Traceback (most recent call last):
        ...
        llmsforme.constrained.UnsupportedSchemaError: 'patternProperties' at #/properties/tags is not supported \
(OpenAI's strict mode does not accept it)
    """
    if not isinstance(schema, Mapping):
        raise TypeError(f"schema must be a JSON Schema (a dict), got {type(schema).__name__}")
    if strict and (schema.get("type") != "object" or "anyOf" in schema):
        raise _refuse("type", "#", "the root of a strict schema must be an object, not a union or another type")
    _check_node(schema, "#", schema, strict)


def _refuse(keyword: str, path: str, why: str = "OpenAI's strict mode does not accept it") -> UnsupportedSchemaError:
    return UnsupportedSchemaError(f"{keyword!r} at {path} is not supported ({why})", keyword, path)


def _check_node(node: Any, path: str, root: Mapping[str, Any], strict: bool) -> None:
    if isinstance(node, bool):
        raise _refuse("true" if node else "false", path, "a schema must be an object, not a boolean")
    if not isinstance(node, Mapping):
        raise UnsupportedSchemaError(f"the schema at {path} must be an object, got {type(node).__name__}", "", path)
    for keyword in node:
        if keyword not in _ALLOWED:
            raise _refuse(str(keyword), path)
    kinds = node.get("type", [])
    for kind in kinds if isinstance(kinds, list) else [kinds]:
        if kind not in _TYPES:
            raise _refuse("type", path, f"unknown type {kind!r}")
    if "format" in node and node["format"] not in STRICT_FORMATS:
        raise _refuse("format", path, f"format {node['format']!r} is not one of {', '.join(STRICT_FORMATS)}")
    ref = node.get("$ref")
    if ref is not None and not _resolves(ref, root):
        raise _refuse("$ref", path, f"{ref!r} does not point inside this schema")
    properties = node.get("properties", {}) if isinstance(node.get("properties"), Mapping) else {}
    if strict and ("object" == kinds or (isinstance(kinds, list) and "object" in kinds)):
        if node.get("additionalProperties") is not False:
            raise _refuse("additionalProperties", path, "strict mode needs 'additionalProperties': false on every object")
        missing = [name for name in properties if name not in node.get("required", [])]
        if missing:
            raise _refuse("required", path, f"strict mode needs every property in 'required'; missing {missing}")
    for name, kind in (("properties", Mapping), ("$defs", Mapping), ("definitions", Mapping), ("anyOf", list)):
        if name in node and not isinstance(node[name], kind):
            raise _refuse(name, path, f"'{name}' must be {'an object' if kind is Mapping else 'a list'}")
    children = [(f"{path}/properties/{_escape(k)}", v) for k, v in properties.items()]
    for name in ("$defs", "definitions"):
        children += [(f"{path}/{name}/{_escape(k)}", v) for k, v in node.get(name, {}).items()]
    children += [(f"{path}/anyOf/{i}", v) for i, v in enumerate(node.get("anyOf", []))]
    if "items" in node:
        children.append((f"{path}/items", node["items"]))
    if isinstance(node.get("additionalProperties"), Mapping):
        children.append((f"{path}/additionalProperties", node["additionalProperties"]))
    for child_path, child in children:
        _check_node(child, child_path, root, strict)


def _escape(key: str) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")


def _resolves(ref: Any, root: Mapping[str, Any]) -> bool:
    """``ref`` is ``#`` or a JSON Pointer ``#/...`` to a schema inside ``root``."""
    if not isinstance(ref, str) or not ref.startswith("#"):
        return False
    node: Any = root
    for part in filter(None, ref[1:].split("/")):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return isinstance(node, Mapping)
