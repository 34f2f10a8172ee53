"""The generation engine behind the server: one model, one request at a time.

A web server answers many clients at once, but the course model runs on a
CPU, where two generations side by side would only slow each other down.
The engine therefore keeps **one queue**: requests wait their turn and each
runs alone, so a seeded request gives the same text whoever else is
connected. (Servers built for many users batch requests instead: Part 4.)

Each reply is made by the package's own strategies,
:func:`~llmsforme.decoding.greedy` and :func:`~llmsforme.decoding.sample`,
on the prompt of :func:`~llmsforme.chat.chat_prompt`; the engine adds what
an API needs around them: stop strings, log-probabilities, repetition
penalties, token counts and cancellation. Nothing here knows about HTTP.

Taught in: [Your first call](../part-3/first-call.ipynb),
[Parameters](../part-3/parameters.ipynb), [Streaming](../part-3/streaming.ipynb).
"""

from __future__ import annotations

import functools
import json
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import decoding
from ..chat import ChatPrompt, chat_prompt, tool_call_grammar
from ..constrained import GrammarProcessor, json_schema
from ..lm import as_language_model
from ..processors import penalize

__all__ = ["Settings", "TokenLogprob", "Delta", "Finish", "StopText", "Engine", "token_bytes"]


@dataclass(frozen=True)
class Settings:
    """How to generate one request's replies (already validated by the API layer).

    ``temperature == 0`` (or ``top_p == 0``) means greedy decoding, as in
    OpenAI's API; otherwise the package's :func:`~llmsforme.decoding.sample`
    runs with ``temperature`` and ``top_p`` (no top-k). With a ``seed``,
    the first reply equals ``sample(..., seed=seed)``; the next replies of
    the same request continue the same random stream, so they differ.
    """

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: off (OpenAI's API has no top-k; Ollama's does)
    n: int = 1
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: bool = False
    top_logprobs: int = 0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    #: A logits processor every reply must obey, such as a grammar from
    #: :meth:`Engine.json_constraint` (``response_format``, Ollama's ``format``).
    constraint: Callable[[Any, torch.Tensor], torch.Tensor] | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_p == 0


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token with its log-probability, and the most likely alternatives.

    The log-probabilities are the model's own (log-softmax of its logits),
    before penalties, temperature or top-p: what the model thought, not
    what the sampler did with it.
    """

    token: str
    logprob: float
    bytes: list[int]
    top: list[tuple[str, float, list[int]]] = field(default_factory=list)


@dataclass(frozen=True)
class Delta:
    """New text of reply ``index`` (possibly empty), with the log-probabilities that came with it."""

    index: int
    text: str
    logprobs: list[TokenLogprob] = field(default_factory=list)


@dataclass(frozen=True)
class Finish:
    """Reply ``index`` is complete: why it ended, and how many tokens it took."""

    index: int
    finish_reason: str  # "stop" (end of turn or a stop string) or "length"
    completion_tokens: int
    logprobs: list[TokenLogprob] = field(default_factory=list)


@dataclass(frozen=True)
class Record:
    """What the engine remembers of a finished request: counts only, never the text."""

    request_id: str
    prompt_tokens: int
    completion_tokens: int
    cancelled: bool


def token_bytes(tokenizer: Any, token_id: int) -> bytes:
    """The raw bytes a token stands for (a byte-level BPE token may be part of a character).

    Example:
        >>> from llmsforme import load_model
        >>> _, tokenizer = load_model()
        >>> token_bytes(tokenizer, tokenizer.convert_tokens_to_ids("Ġhello"))
        b' hello'
    """
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    piece = tokenizer.convert_ids_to_tokens(int(token_id))
    byte_of = _unicode_to_byte(tuple(sorted(bytes_to_unicode().items())))
    if all(char in byte_of for char in piece):
        return bytes(byte_of[char] for char in piece)
    return str(piece).encode("utf-8")  # a special token, or a tokenizer of another kind


@functools.cache
def _unicode_to_byte(pairs: tuple[tuple[int, str], ...]) -> dict[str, int]:
    return {char: byte for byte, char in pairs}


class StopText:
    """The text of a reply as its tokens arrive, cut before the first stop string.

    :meth:`add` returns only text that is safe to show: text that could
    still turn into a stop string (``"\\n\\nUs"`` when a stop string is
    ``"\\n\\nUser:"``) and an incomplete character are held back until the
    next tokens decide. The stop string itself is never shown.

    Example:
        >>> text = StopText(lambda ids: "".join(chr(i) for i in ids), stop=("END",))
        >>> [text.add(ord(c)) for c in "Hi EN"], text.add(ord("D")), text.stopped
        (['H', 'i', ' ', '', ''], '', True)
        >>> text.text
        'Hi '
    """

    def __init__(self, decode: Callable[[list[int]], str], stop: Sequence[str] = ()) -> None:
        self._decode = decode
        self._stop = tuple(stop)
        self._ids: list[int] = []
        self.text = ""  # shown so far
        self.stopped = False

    def _safe_end(self, text: str) -> int:
        """How much of ``text`` can be shown now."""
        end = len(text.rstrip("\ufffd"))  # an incomplete character waits
        for stop in self._stop:
            for size in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:size]):
                    end = min(end, len(text) - size)
                    break
        return end

    def _show(self, text: str, end: int) -> str:
        if end <= len(self.text) or not text.startswith(self.text):
            return ""
        piece = text[len(self.text) : end]
        self.text = text[:end]
        return piece

    def add(self, token_id: int) -> str:
        """Take the next token; return the new text to show (maybe empty)."""
        if self.stopped:
            raise RuntimeError("this reply already reached a stop string")
        self._ids.append(token_id)
        text = self._decode(self._ids)
        found = [position for position in map(text.find, self._stop) if position >= 0]
        if found:
            self.stopped = True
            cut = max(min(found), len(self.text))
            return self._show(text[:cut], cut)
        return self._show(text, self._safe_end(text))

    def finish(self) -> str:
        """The end of the reply: return what was still held back."""
        if self.stopped:
            return ""
        text = self._decode(self._ids)
        return self._show(text, len(text))


class Engine:
    """Generate chat replies on one model, one request at a time, in a worker thread.

    Example:
        >>> from llmsforme import load_model
        >>> engine = Engine(*load_model())
        >>> prompt = engine.prompt([{"role": "user", "content": "Say hi."}])
        >>> events = []
        >>> engine.submit(prompt, Settings(max_tokens=3, temperature=0), events.append).result()
        3
        >>> "".join(e.text for e in events if isinstance(e, Delta))
        'Hello there!'
        >>> engine.close()
    """

    def __init__(self, model: Any, tokenizer: Any, *, template: str | None = None, vision: Any = None) -> None:
        self.lm = as_language_model(model, tokenizer)
        self.tokenizer = tokenizer
        self.template = template
        if vision is not None and (vision.lm is not model or vision.tokenizer is not tokenizer):
            # Two copies of the course model's weights would double the memory for nothing.
            raise ValueError("vision must share the engine's model and tokenizer: "
                             "load_digits_vlm(model=model, tokenizer=tokenizer)")
        #: The vision-language model (a :class:`~llmsforme.multimodal.DigitsVLM` on the same
        #: weights), or ``None`` when the server reads text only.
        self.vision = vision
        #: Prompt and reply together must fit in this many tokens.
        self.context_window = int(getattr(self.lm, "context_window", 0) or 2048)
        self.history: deque[Record] = deque(maxlen=100)
        self._grammars: OrderedDict[str, GrammarProcessor] = OrderedDict()
        self._grammars_lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmsforme-generate")

    def prompt(
        self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None = None
    ) -> ChatPrompt:
        """Validate and encode a conversation (raises ``ValueError``/``TypeError`` on bad input).

        ``tools`` are described in the system turn, in the format of
        :func:`~llmsforme.chat.with_tools`.
        """
        return chat_prompt(self.tokenizer, messages, template=self.template, tools=tools)

    def image_prompt(
        self, messages: Sequence[Mapping[str, Any]], image_message: int, image: torch.Tensor
    ) -> tuple[ChatPrompt, Any]:
        """A conversation about ``image`` (in ``messages[image_message]``), and the model that sees it.

        Pass both to :meth:`submit` (``prompt``, then ``lm=``). Raises
        ``ValueError`` if the engine has no vision model or the messages are bad.
        """
        from ..chat import get_template

        if self.vision is None:
            raise ValueError("this engine has no vision model")
        ids = self.vision.chat_ids(messages, image_message)
        spec = get_template("chatml")  # the projector's training format
        return ChatPrompt(ids, int(self.tokenizer.convert_tokens_to_ids(spec.end_of_turn)), spec), \
            self.vision.language_model(image)

    #: How many compiled schemas :meth:`json_constraint` keeps.
    GRAMMAR_CACHE_SIZE = 64

    def json_constraint(self, schema: Mapping[str, Any]) -> GrammarProcessor:
        """The processor that keeps replies to JSON valid against ``schema``; ``ValueError`` if it cannot be built.

        Compiled grammars are cached per schema (its JSON text, key order
        included, since the order of the properties is the order the JSON is
        written in): a client that sends the same schema with every request
        pays for the compilation once. The cache keeps the last
        :attr:`GRAMMAR_CACHE_SIZE` schemas. A cached processor is shared by
        the requests that use its schema, which is safe because the engine
        runs one request at a time.

        Example:
            >>> from llmsforme import load_model
            >>> engine = Engine(*load_model())
            >>> engine.json_constraint({"type": "object"}) is engine.json_constraint({"type": "object"})
            True
            >>> engine.close()
        """
        key = json.dumps(schema, ensure_ascii=False)
        with self._grammars_lock:
            processor = self._grammars.get(key)
            if processor is not None:
                self._grammars.move_to_end(key)
                return processor
        processor = json_schema(self.lm, schema)  # compiled outside the lock: a few milliseconds
        with self._grammars_lock:
            self._grammars[key] = processor
            while len(self._grammars) > self.GRAMMAR_CACHE_SIZE:
                self._grammars.popitem(last=False)
        return processor

    def tool_constraint(
        self, tools: Sequence[Mapping[str, Any]], tool_choice: Any = "auto", parallel: bool = False
    ) -> GrammarProcessor:
        """The processor that keeps replies to text or tool calls (:func:`~llmsforme.chat.tool_call_grammar`), cached."""
        key = json.dumps(["tools", tools, tool_choice, parallel], ensure_ascii=False)
        with self._grammars_lock:
            processor = self._grammars.get(key)
        if processor is None:
            processor = tool_call_grammar(self.lm, tools, tool_choice, parallel=parallel)
            with self._grammars_lock:
                self._grammars[key] = processor
                while len(self._grammars) > self.GRAMMAR_CACHE_SIZE:
                    self._grammars.popitem(last=False)
        return processor

    def submit(
        self,
        prompt: ChatPrompt,
        settings: Settings,
        emit: Callable[[Delta | Finish], None],
        *,
        cancelled: threading.Event | None = None,
        request_id: str = "",
        lm: Any = None,
    ) -> Future[int]:
        """Queue a request; ``emit`` receives its events from the worker thread.

        The future's result is the number of tokens generated for all
        ``settings.n`` replies. Setting ``cancelled`` stops the request at
        its next token (or before it starts, if it is still waiting).
        ``lm`` replaces the engine's model for this request (an image's, from
        :meth:`image_prompt`); it must share the engine's tokenizer.
        """
        cancelled = cancelled or threading.Event()
        return self._worker.submit(self._run, prompt, settings, emit, cancelled, request_id, lm or self.lm)

    def close(self) -> None:
        """Stop the worker thread once the queued requests are done."""
        self._worker.shutdown(wait=True, cancel_futures=True)

    # --- in the worker thread -----------------------------------------------------

    def _run(
        self,
        prompt: ChatPrompt,
        settings: Settings,
        emit: Callable[[Delta | Finish], None],
        cancelled: threading.Event,
        request_id: str,
        lm: Any,
    ) -> int:
        total = 0
        for index in range(settings.n):
            if cancelled.is_set():
                break
            # One seed per request: the first reply draws from it, the next
            # ones continue the same random stream.
            seed = settings.seed if index == 0 else None
            total += self._reply(index, prompt, settings, seed, emit, cancelled, lm)
        self.history.append(Record(request_id, len(prompt.ids), total, cancelled.is_set()))
        return total

    def _logprob(self, token_id: int, logits: torch.Tensor, top: int) -> TokenLogprob:
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        alternatives = []
        if top:
            values, ids = torch.topk(log_probs, top)
            alternatives = [
                (self.lm.token_text(i), float(v), list(token_bytes(self.tokenizer, i)))
                for v, i in zip(values.tolist(), ids.tolist())
            ]
        return TokenLogprob(
            self.lm.token_text(token_id),
            float(log_probs[token_id]),
            list(token_bytes(self.tokenizer, token_id)),
            alternatives,
        )

    def _reply(
        self,
        index: int,
        prompt: ChatPrompt,
        settings: Settings,
        seed: int | None,
        emit: Callable[[Delta | Finish], None],
        cancelled: threading.Event,
        lm: Any,
    ) -> int:
        end_ids = prompt.stop_ids(self.lm)
        text = StopText(self.lm.decode, settings.stop)
        pending: list[TokenLogprob] = []  # log-probabilities waiting for their text
        generated = 0
        finish_reason = "length"

        def on_step(token_id: int, logits: torch.Tensor) -> bool:
            nonlocal generated, finish_reason
            generated += 1
            if token_id in end_ids:
                finish_reason = "stop"
                return True
            if settings.logprobs:
                pending.append(self._logprob(token_id, logits, settings.top_logprobs))
            piece = text.add(token_id)
            if piece:
                emit(Delta(index, piece, pending[:]))
                pending.clear()
            if text.stopped:
                finish_reason = "stop"
                return True
            return cancelled.is_set()

        processors = []
        if settings.presence_penalty or settings.frequency_penalty:
            processors.append(
                functools.partial(
                    penalize,
                    presence_penalty=settings.presence_penalty,
                    frequency_penalty=settings.frequency_penalty,
                )
            )
        if settings.constraint is not None:  # last: it masks what the penalties left
            processors.append(settings.constraint)
        common = {
            "max_new_tokens": settings.max_tokens,
            "eos_token_id": end_ids,
            "logits_processors": processors,
            "on_step": on_step,
        }
        if settings.greedy:
            decoding.greedy(lm, prompt.ids, **common)
        else:
            decoding.sample(
                lm,
                prompt.ids,
                temperature=settings.temperature,
                top_k=settings.top_k,
                top_p=settings.top_p,
                seed=seed,
                **common,
            )
        rest = text.finish()
        if rest:
            emit(Delta(index, rest, pending[:]))
            pending.clear()
        emit(Finish(index, finish_reason, generated, pending))
        return generated
