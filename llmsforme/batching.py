"""Continuous batching: many generations advanced by one forward pass per step.

On a CPU (and on a GPU at small batch sizes) one decoding step of a language
model is limited by reading its weights from memory, not by arithmetic: a
step for 8 sequences reads the weights once, so it costs far less than 8
steps. :class:`ContinuousBatcher` exploits that, the way vLLM, TGI and
``transformers serve`` do (Orca's *iteration-level scheduling*, Yu et al.,
2022):

- a request **joins** the running batch at the next step after it arrives:
  its prompt is read alone (the *prefill*), then its tokens are generated
  together with everyone else's;
- it **leaves** as soon as it is finished (an end token, its token limit, its
  ``on_step`` saying stop, or cancellation), and a waiting request takes the
  place;
- each request keeps its own settings: greedy or sampling (temperature,
  top-k, top-p, its own seeded random stream), logits processors (penalties,
  a grammar), an ``on_step`` callback.

The sequences have different lengths, so each step pads their KV caches on
the left to the longest, masks the padding out, and passes each sequence's
own position. Written by hand, because the scheduling *is* the lesson; the
test suite checks each request against the package's one-at-a-time
:func:`~llmsforme.decoding.greedy` and :func:`~llmsforme.decoding.sample`.

Example::

    from llmsforme import HFLanguageModel, load_model
    lm = HFLanguageModel(*load_model())
    batcher = ContinuousBatcher(lm, max_batch=8)
    requests = [batcher.submit(BatchRequest(lm.encode(p), max_new_tokens=16))
                for p in ["The rain in Spain", "Once upon a time"]]
    batcher.run()
    print([lm.decode(r.generated) for r in requests])

Taught in: [Serving many users](../part-4/serving-many.ipynb), with its
timeline; the idea also in [Choosing a local runtime](../part-4/choosing.md).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from .processors import warp

__all__ = ["BatchRequest", "ContinuousBatcher", "StepRecord"]


@dataclass(eq=False)
class BatchRequest:
    """One generation: its prompt, its settings, and (as it runs) its tokens.

    ``temperature == 0`` means greedy. With a ``seed``, the draws equal those
    of :func:`~llmsforme.decoding.sample` with that seed, whoever else is in
    the batch: each request draws from its own generator.
    """

    prompt_ids: Sequence[int]
    max_new_tokens: int
    eos_token_ids: Sequence[int] = ()
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    logits_processors: Sequence[Callable[[list[int], torch.Tensor], torch.Tensor]] = ()
    #: Called with each chosen token and the model's own logits; ``True`` ends the request.
    on_step: Callable[[int, torch.Tensor], bool | None] | None = None
    #: Set (from any thread) to end the request at its next step.
    cancelled: bool = False
    #: The model that reads the prompt, if not the batcher's: one that shares its
    #: weights but starts differently (an image-prefixed prompt's
    #: :class:`~llmsforme.multimodal.vision_language.ImagePromptedLM`).
    lm: Any = None
    #: The random stream to draw from (shared by requests that continue one
    #: stream, or ``torch.default_generator`` for the global one); ``None``: a
    #: new generator, seeded with ``seed`` if given.
    generator: torch.Generator | None = None

    # Filled in as the request runs.
    generated: list[int] = field(default_factory=list)
    finish_reason: str | None = None  # "stop", "length" or "cancelled"
    submitted_at: float = 0.0
    first_token_at: float | None = None
    finished_at: float | None = None

    @property
    def done(self) -> bool:
        return self.finish_reason is not None


@dataclass(frozen=True)
class StepRecord:
    """What one step of the batcher did (for timelines): who ran, who joined, who left."""

    index: int
    started: float
    seconds: float
    running: tuple[int, ...]
    joined: tuple[int, ...]
    left: tuple[int, ...]


@dataclass(eq=False)
class _Sequence:
    request: BatchRequest
    number: int
    length: int  # positions in its KV cache: the prompt, then one per token fed back
    logits: torch.Tensor  # the model's logits for the next token, float32 (vocab,)
    generator: torch.Generator | None
    #: Its own cache from the prefill, per layer (1, kv_heads, length, head_dim),
    #: until it is packed into the batch's cache.
    prefill: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None


class ContinuousBatcher:
    """Run many :class:`BatchRequest` on one Hugging Face model, one forward pass per step.

    Args:
        lm: a :class:`~llmsforme.lm.HFLanguageModel` (transformers' KV cache is needed).
        max_batch: most sequences generating at once.
        max_cache_tokens: most positions the running sequences may hold in
            their KV caches together (prompt plus ``max_new_tokens`` each,
            counted when a request joins); a request that would pass it
            waits for others to leave. ``None``: only ``max_batch`` limits.
    """

    def __init__(self, lm: Any, *, max_batch: int = 8, max_cache_tokens: int | None = None) -> None:
        from transformers import DynamicCache

        if not hasattr(lm, "model") or not hasattr(lm, "start"):
            raise TypeError(f"lm must be an HFLanguageModel, got {type(lm).__name__}")
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be an int >= 1, got {max_batch!r}")
        if max_cache_tokens is not None and (
            isinstance(max_cache_tokens, bool) or not isinstance(max_cache_tokens, int) or max_cache_tokens < 1
        ):
            raise ValueError(f"max_cache_tokens must be an int >= 1 or None, got {max_cache_tokens!r}")
        self.lm = lm
        self.max_batch = max_batch
        self.max_cache_tokens = max_cache_tokens
        self._cache_class = DynamicCache
        self._waiting: deque[BatchRequest] = deque()
        self._running: list[_Sequence] = []
        self._count = 0
        self._numbers: dict[int, int] = {}  # id(request) -> its number, for the trace
        # The running batch's packed KV cache, its width in positions, and each sequence's row.
        self._cache: Any = None
        self._width = 0
        self._rows: dict[int, int] = {}
        #: One :class:`StepRecord` per step, for timelines.
        self.trace: list[StepRecord] = []

    # --- the queue ------------------------------------------------------------------

    def submit(self, request: BatchRequest) -> BatchRequest:
        """Queue ``request``; it joins the batch at the next step there is room."""
        if not isinstance(request, BatchRequest):
            raise TypeError(f"request must be a BatchRequest, got {type(request).__name__}")
        ids = list(request.prompt_ids)
        if not ids or any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < self.lm.vocab_size
                          for i in ids):
            raise ValueError(f"prompt_ids must be a non-empty list of token ids in [0, {self.lm.vocab_size})")
        if isinstance(request.max_new_tokens, bool) or not isinstance(request.max_new_tokens, int) or (
            request.max_new_tokens < 1
        ):
            raise ValueError(f"max_new_tokens must be an int >= 1, got {request.max_new_tokens!r}")
        if not (isinstance(request.temperature, (int, float)) and 0 <= request.temperature < math.inf):
            raise ValueError(f"temperature must be a number >= 0 (0: greedy), got {request.temperature!r}")
        if request.lm is not None and getattr(request.lm, "model", None) is not self.lm.model:
            raise ValueError("request.lm must share the batcher's model (the decoding steps run on it)")
        if request.generator is not None and not isinstance(request.generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(request.generator).__name__}")
        if self.max_cache_tokens is not None and self._budget(request) > self.max_cache_tokens:
            raise ValueError(
                f"the request needs {self._budget(request)} cache positions (prompt + max_new_tokens); "
                f"this batcher holds at most {self.max_cache_tokens}"
            )
        request.submitted_at = time.perf_counter()
        self._numbers[id(request)] = self._count
        self._count += 1
        self._waiting.append(request)
        return request

    @property
    def idle(self) -> bool:
        """No request is waiting or running."""
        return not self._waiting and not self._running

    def run(self) -> None:
        """Step until every submitted request is done."""
        while not self.idle:
            self.step()

    # --- one step --------------------------------------------------------------------

    @staticmethod
    def _budget(request: BatchRequest) -> int:
        return len(request.prompt_ids) + request.max_new_tokens

    def _admit(self) -> list[int]:
        """Prefill waiting requests, first come first served, while there is room."""
        joined = []
        used = sum(self._budget(s.request) for s in self._running)
        while self._waiting and len(self._running) < self.max_batch:
            request = self._waiting[0]
            if request.cancelled:
                self._waiting.popleft()
                self._finish(request, "cancelled")
                continue
            if self.max_cache_tokens is not None and used + self._budget(request) > self.max_cache_tokens:
                break  # it waits until enough of the cache is free
            self._waiting.popleft()
            logits, cache = (request.lm or self.lm).start(torch.tensor([list(request.prompt_ids)]))
            generator = request.generator
            if generator is None and request.temperature > 0:  # its own stream: the same draws in any batch
                generator = torch.Generator()
                if request.seed is not None:
                    generator.manual_seed(request.seed)
                else:
                    generator.seed()
            self._running.append(_Sequence(
                request, self._numbers[id(request)], len(request.prompt_ids), logits[0], generator,
                ([layer.keys for layer in cache.layers], [layer.values for layer in cache.layers]),
            ))
            used += self._budget(request)
            joined.append(self._numbers[id(request)])
        return joined

    def _choose(self, sequence: _Sequence) -> bool:
        """Pick the next token of one sequence; return whether it is now finished."""
        request = sequence.request
        if request.cancelled:
            self._finish(request, "cancelled")
            return True
        scores = sequence.logits
        for process in request.logits_processors:
            scores = process(request.generated, scores)
        if request.temperature == 0 or request.top_p == 0:
            token = int(torch.argmax(scores))
        else:
            warped = warp(scores[None], temperature=request.temperature, top_k=request.top_k, top_p=request.top_p)
            token = int(torch.multinomial(torch.softmax(warped, dim=-1), 1, generator=sequence.generator))
        request.generated.append(token)
        if request.first_token_at is None:
            request.first_token_at = time.perf_counter()
        if request.on_step is not None and request.on_step(token, sequence.logits):
            self._finish(request, "stop")
        elif token in request.eos_token_ids:
            self._finish(request, "stop")
        elif len(request.generated) >= request.max_new_tokens:
            self._finish(request, "length")
        return request.done

    @staticmethod
    def _finish(request: BatchRequest, reason: str) -> None:
        request.finish_reason = reason
        request.finished_at = time.perf_counter()

    def step(self) -> None:
        """Admit who fits, choose every running sequence's next token, then one forward pass for all."""
        started = time.perf_counter()
        joined = self._admit()
        left = [s.number for s in self._running if self._choose(s)]
        self._running = [s for s in self._running if not s.request.done]
        if self._running:
            self._forward(self._running)
        else:
            self._cache, self._rows = None, {}  # nothing runs: free the cache
        self.trace.append(StepRecord(len(self.trace), started, time.perf_counter() - started,
                                     tuple(s.number for s in self._running), tuple(joined), tuple(left)))

    def _pack(self, batch: list[_Sequence]) -> None:
        """Build the batch's KV cache anew: each row left-padded to the longest sequence.

        Only when the batch changes (a request joined or left); between changes
        the model appends to the packed cache itself, so a step copies nothing.
        """
        longest = max(s.length for s in batch)
        cache = self._cache_class(config=self.lm.model.config)
        old = self._cache
        for layer in range(self.lm.model.config.num_hidden_layers):
            keys, values = [], []
            for s in batch:
                if s.prefill is not None:
                    k, v = s.prefill[0][layer], s.prefill[1][layer]
                else:  # its real positions are the last s.length of the old cache's row
                    row = self._rows[id(s)]
                    k = old.layers[layer].keys[row : row + 1, :, self._width - s.length :]
                    v = old.layers[layer].values[row : row + 1, :, self._width - s.length :]
                keys.append(F.pad(k, (0, 0, longest - s.length, 0)))
                values.append(F.pad(v, (0, 0, longest - s.length, 0)))
            cache.update(torch.cat(keys), torch.cat(values), layer)
        for s in batch:
            s.prefill = None
        self._cache, self._width = cache, longest
        self._rows = {id(s): row for row, s in enumerate(batch)}

    def _forward(self, batch: list[_Sequence]) -> None:
        """Each sequence's last token through the model at once; store the new logits."""
        if self._cache is None or len(self._rows) != len(batch) or any(
            s.prefill is not None or self._rows.get(id(s)) != row for row, s in enumerate(batch)
        ):
            self._pack(batch)
        device = self.lm._device
        pads = torch.tensor([[self._width - s.length] for s in batch])
        # Left padding lines every sequence's last position up with the others';
        # the mask hides the padding, and each sequence keeps its own positions.
        mask = (torch.arange(self._width + 1)[None, :] >= pads).long()
        tokens = torch.tensor([[s.request.generated[-1]] for s in batch])
        positions = torch.tensor([[s.length] for s in batch])
        with torch.no_grad():
            output = self.lm.model(input_ids=tokens.to(device), attention_mask=mask.to(device),
                                   position_ids=positions.to(device), use_cache=True, logits_to_keep=1,
                                   **{self.lm._cache_argument: self._cache})
        self._width += 1
        logits = output.logits[:, -1].to(dtype=torch.float32, device="cpu")
        for row, sequence in enumerate(batch):
            sequence.length += 1
            sequence.logits = logits[row].clone()
