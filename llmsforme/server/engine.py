"""The generation engine behind the server: one model, many requests at once.

A web server answers many clients at once. On a CPU, one decoding step of the
course model is limited by reading its weights from memory, so advancing 8
replies in one forward pass costs far less than 8 passes. By default the
engine therefore **batches**: a :class:`~llmsforme.batching.ContinuousBatcher`
runs in a thread of its own, requests join the batch when they arrive and
leave it when they finish, and each keeps its own settings and random
stream, so a seeded request gives the same text whoever else is connected.
``batching=False`` (``llmsforme serve --one-at-a-time``) keeps **one queue**
instead, each request running alone, as the first version of the course's
server did; a llama.cpp model always runs that way (llama-cpp-python's
``Llama`` keeps one sequence's cache and sampler).

One at a time, each reply is made by the package's own strategies,
:func:`~llmsforme.decoding.greedy` and :func:`~llmsforme.decoding.sample`;
batched, by the batcher's loop, which the tests check against them. Either
way the prompt is :func:`~llmsforme.chat.chat_prompt`'s, and the engine adds what
an API needs around them: stop strings, log-probabilities, repetition
penalties, token counts and cancellation. Nothing here knows about HTTP.

Taught in: [Your first call](../part-3/first-call.ipynb),
[Parameters](../part-3/parameters.ipynb), [Streaming](../part-3/streaming.ipynb).
"""

from __future__ import annotations

import functools
import json
import queue
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import decoding
from ..batching import BatchRequest, ContinuousBatcher
from ..chat import ChatPrompt, chat_prompt, tool_call_grammar
from ..constrained import GrammarProcessor, json_schema
from ..lm import HFLanguageModel, as_language_model
from ..processors import penalize

#: Requests that share one forward pass by default (``llmsforme serve --max-batch``).
DEFAULT_MAX_BATCH = 8

__all__ = ["DEFAULT_MAX_BATCH", "Settings", "TokenLogprob", "Delta", "Finish", "StopText", "Engine", "token_bytes"]


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
    """Generate chat replies on one model: batched in a thread of its own, or one request at a time.

    ``max_batch`` requests share each forward pass; ``max_cache_tokens``
    bounds the positions their KV caches may hold together (each request
    counts its prompt plus its ``max_tokens``; default: 4 context windows),
    and a request that does not fit waits for others to finish.

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

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        template: str | None = None,
        vision: Any = None,
        batching: bool = True,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_cache_tokens: int | None = None,
    ) -> None:
        self.lm = as_language_model(model, tokenizer)
        self.tokenizer = tokenizer
        self.template = template
        if vision is not None and (vision.lm is not model or vision.tokenizer is not tokenizer):
            # Two copies of the course model's weights would double the memory for nothing.
            raise ValueError("vision must share the engine's model and tokenizer: "
                             "load_digits_vlm(model=model, tokenizer=tokenizer)")
        if not isinstance(batching, bool):
            raise TypeError(f"batching must be True or False, got {batching!r}")
        #: The vision-language model (a :class:`~llmsforme.multimodal.DigitsVLM` on the same
        #: weights), or ``None`` when the server reads text only.
        self.vision = vision
        #: Prompt and reply together must fit in this many tokens.
        self.context_window = int(getattr(self.lm, "context_window", 0) or 2048)
        self.history: deque[Record] = deque(maxlen=100)
        self._grammars: OrderedDict[str, GrammarProcessor] = OrderedDict()
        self._grammars_lock = threading.Lock()
        #: Whether requests share forward passes (:class:`~llmsforme.batching.ContinuousBatcher`).
        #: Only a transformers model can; other models run one request at a time.
        self.batching = batching and isinstance(self.lm, HFLanguageModel)
        if self.batching:
            if max_cache_tokens is None:
                max_cache_tokens = 4 * self.context_window
            if isinstance(max_cache_tokens, int) and not isinstance(max_cache_tokens, bool) and (
                max_cache_tokens < self.context_window
            ):
                raise ValueError(f"max_cache_tokens must be at least the context window ({self.context_window}), "
                                 f"got {max_cache_tokens!r}: a request of the full window could never run")
            self.batcher: ContinuousBatcher | None = ContinuousBatcher(
                self.lm, max_batch=max_batch, max_cache_tokens=max_cache_tokens)
            self._inbox: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
            self._closed = False
            self._loop_thread = threading.Thread(target=self._loop, name="llmsforme-batch", daemon=True)
            self._loop_thread.start()
        else:
            self.batcher = None
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
        lm = lm or self.lm
        if self.batcher is None:
            return self._worker.submit(self._run, prompt, settings, emit, cancelled, request_id, lm)
        if self._closed:
            raise RuntimeError("cannot submit to an engine that is closed")
        job = _Job(prompt, settings, emit, cancelled, request_id, lm, Future())
        self._inbox.put(job)
        return job.future

    def close(self) -> None:
        """Stop the worker thread once the running requests are done (waiting ones are cancelled)."""
        if self.batcher is None:
            self._worker.shutdown(wait=True, cancel_futures=True)
            return
        if not self._closed:
            self._closed = True
            self._inbox.put(None)
        self._loop_thread.join()

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

    # --- the batched loop (its own thread) ---------------------------------------------

    def _loop(self) -> None:
        """Feed new requests to the batcher and step it; sleep when there is nothing to do."""
        assert self.batcher is not None
        jobs: list[_Job] = []
        closing = False
        while True:
            while True:  # take what has arrived; wait only when nothing runs
                try:
                    job = self._inbox.get(block=not jobs and not closing)
                except queue.Empty:
                    break
                if job is None:
                    closing = True
                    continue
                if closing or not job.future.set_running_or_notify_cancel():
                    job.future.cancel()  # arrived after close(), or cancelled by its caller
                    continue
                if self._start_reply(job):
                    jobs.append(job)
            if closing:
                for job in jobs:
                    if job.request is not None and job.request.first_token_at is None:
                        job.cancelled.set()  # not started: cancelled, as the one-at-a-time engine does
            if not jobs:
                if closing:
                    return
                continue
            for job in jobs:
                if job.cancelled.is_set() and job.request is not None and job.request.first_token_at is None:
                    job.request.cancelled = True  # still waiting for its turn
            try:
                self.batcher.step()
            except Exception as error:  # the forward pass failed: every running request fails with it
                for job in jobs:
                    job.error = job.error or error
                    self._end_job(job)
                jobs.clear()
                self.batcher = ContinuousBatcher(self.lm, max_batch=self.batcher.max_batch,
                                                 max_cache_tokens=self.batcher.max_cache_tokens)
                continue
            for job in [job for job in jobs if job.request is not None and job.request.done]:
                jobs.remove(job)
                if self._end_reply(job) and self._start_reply(job):
                    jobs.append(job)

    def _start_reply(self, job: _Job) -> bool:
        """Put the job's next reply in the batcher; ``False`` if the job is over."""
        assert self.batcher is not None
        if job.index >= job.settings.n or job.cancelled.is_set() or job.error is not None:
            self._end_job(job)
            return False
        settings = job.settings
        if job.generator is None:  # one stream per request: the n replies continue it
            job.generator = torch.default_generator if settings.seed is None else \
                torch.Generator().manual_seed(settings.seed)
        job.reply = _Reply(self, job.index, job.prompt, settings, job.emit, job.cancelled)
        try:
            job.request = self.batcher.submit(BatchRequest(
                job.prompt.ids, settings.max_tokens, eos_token_ids=tuple(job.reply.end_ids),
                temperature=0.0 if settings.greedy else settings.temperature, top_k=settings.top_k,
                top_p=settings.top_p, logits_processors=[job.guard(p) for p in job.reply.processors],
                on_step=job.guard_step(job.reply.on_step), lm=None if job.lm is self.lm else job.lm,
                generator=job.generator,
            ))
        except (TypeError, ValueError) as error:
            job.error = error
            self._end_job(job)
            return False
        return True

    def _end_reply(self, job: _Job) -> bool:
        """Close the reply that just left the batch; ``True`` if the job has more to do."""
        assert job.request is not None and job.reply is not None
        if job.request.finish_reason != "cancelled" or job.request.generated:
            job.total += job.reply.finish() if job.error is None else 0
        job.index += 1
        job.request = None
        return True

    def _end_job(self, job: _Job) -> None:
        self.history.append(Record(job.request_id, len(job.prompt.ids), job.total, job.cancelled.is_set()))
        if job.error is not None:
            job.future.set_exception(job.error)
        else:
            job.future.set_result(job.total)

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
        reply = _Reply(self, index, prompt, settings, emit, cancelled)
        common = {
            "max_new_tokens": settings.max_tokens,
            "eos_token_id": reply.end_ids,
            "logits_processors": reply.processors,
            "on_step": reply.on_step,
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
        return reply.finish()


class _Reply:
    """One reply in the making: the text so far, its stop strings, log-probabilities and events."""

    def __init__(
        self,
        engine: Engine,
        index: int,
        prompt: ChatPrompt,
        settings: Settings,
        emit: Callable[[Delta | Finish], None],
        cancelled: threading.Event,
    ) -> None:
        self.engine, self.index, self.settings, self.emit, self.cancelled = engine, index, settings, emit, cancelled
        self.end_ids = prompt.stop_ids(engine.lm)
        self.text = StopText(engine.lm.decode, settings.stop)
        self.pending: list[TokenLogprob] = []  # log-probabilities waiting for their text
        self.generated = 0
        self.finish_reason = "length"
        self.processors: list[Callable[[Any, torch.Tensor], torch.Tensor]] = []
        if settings.presence_penalty or settings.frequency_penalty:
            self.processors.append(
                functools.partial(
                    penalize,
                    presence_penalty=settings.presence_penalty,
                    frequency_penalty=settings.frequency_penalty,
                )
            )
        if settings.constraint is not None:  # last: it masks what the penalties left
            self.processors.append(settings.constraint)

    def on_step(self, token_id: int, logits: torch.Tensor) -> bool:
        """Turn one token into events; ``True`` when the reply is over."""
        self.generated += 1
        if token_id in self.end_ids:
            self.finish_reason = "stop"
            return True
        if self.settings.logprobs:
            self.pending.append(self.engine._logprob(token_id, logits, self.settings.top_logprobs))
        piece = self.text.add(token_id)
        if piece:
            self.emit(Delta(self.index, piece, self.pending[:]))
            self.pending.clear()
        if self.text.stopped:
            self.finish_reason = "stop"
            return True
        return self.cancelled.is_set()

    def finish(self) -> int:
        """Send the text held back for stop strings, then the reply's ``Finish``."""
        rest = self.text.finish()
        if rest:
            self.emit(Delta(self.index, rest, self.pending[:]))
            self.pending.clear()
        self.emit(Finish(self.index, self.finish_reason, self.generated, self.pending))
        return self.generated


@dataclass(eq=False)
class _Job:
    """One API request in the batched engine: its ``n`` replies run one after another."""

    prompt: ChatPrompt
    settings: Settings
    emit: Callable[[Delta | Finish], None]
    cancelled: threading.Event
    request_id: str
    lm: Any
    future: Future[int]
    index: int = 0  # the reply being made
    total: int = 0  # tokens over all replies so far
    generator: torch.Generator | None = None
    reply: _Reply | None = None
    request: BatchRequest | None = None
    error: BaseException | None = None

    def guard(self, process: Callable[[Any, torch.Tensor], torch.Tensor]) -> Callable[[Any, torch.Tensor], torch.Tensor]:
        """A processor that fails this request alone, not the whole batch."""

        def guarded(generated: Any, scores: torch.Tensor) -> torch.Tensor:
            try:
                return process(generated, scores)
            except Exception as error:
                self.error = self.error or error
                return scores

        return guarded

    def guard_step(self, on_step: Callable[[int, torch.Tensor], bool]) -> Callable[[int, torch.Tensor], bool]:
        def guarded(token_id: int, logits: torch.Tensor) -> bool:
            if self.error is not None:
                return True
            try:
                return on_step(token_id, logits)
            except Exception as error:
                self.error = error
                return True

        return guarded
