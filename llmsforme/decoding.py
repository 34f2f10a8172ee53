"""Decoding strategies: turn next-token distributions into text.

Each strategy is a short loop written to be read, and runs on any
:class:`~llmsforme.lm.LanguageModel` (a Hugging Face model or a toy table):

* :func:`greedy` takes the most likely token at every step;
* :func:`beam_search` keeps the ``num_beams`` best partial sequences;
* :func:`sample` draws from the distribution after temperature, top-k, top-p.

They give the same tokens as ``model.generate`` with the same settings
(checked by the test suite), and can record a *trace* of every step for the
tables and pictures of the course.

Taught in: [Greedy and beam search](../part-1/greedy-and-beam-search.ipynb),
[Temperature](../part-1/temperature.ipynb), [Top-k and top-p](../part-1/top-k-top-p.ipynb).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any, Literal

import torch

from .lm import LanguageModel, as_language_model
from .processors import check_sampling_args, warp

__all__ = [
    "LogitsProcessor",
    "Candidate",
    "Step",
    "BeamCandidate",
    "BeamStep",
    "Generation",
    "greedy",
    "sample",
    "beam_search",
    "next_token_table",
]

Prompt = str | Sequence[int] | torch.Tensor
#: A step's extra rule on the scores: ``(generated_ids, logits) -> logits``,
#: as transformers' ``LogitsProcessor`` (e.g. :func:`~llmsforme.processors.penalize`).
LogitsProcessor = Callable[[Sequence[int], torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Candidate:
    """One possible next token at one step of greedy decoding or sampling."""

    token_id: int
    token: str
    probability: float  # under the model, before any processor
    final_probability: float  # after temperature / top-k / top-p (0 if removed)

    @property
    def kept(self) -> bool:
        return self.final_probability > 0


@dataclass(frozen=True)
class Step:
    """The top candidates at one step, and the token that was chosen."""

    candidates: tuple[Candidate, ...]
    chosen: int


@dataclass(frozen=True)
class BeamCandidate:
    """One continuation considered by beam search at one step."""

    parent: int  # index of the running beam it extends (in the previous step's ``running``)
    token_id: int
    token: str
    log_probability: float  # of this token given its beam
    score: float  # sum of log-probabilities of the whole continuation
    status: Literal["running", "finished", "dropped"]


@dataclass(frozen=True)
class BeamStep:
    """All candidates beam search ranked at one step (best first)."""

    candidates: tuple[BeamCandidate, ...]

    @property
    def running(self) -> tuple[BeamCandidate, ...]:
        """The beams carried to the next step, in beam order."""
        return tuple(c for c in self.candidates if c.status == "running")


@dataclass
class Generation:
    """What a strategy returns: the generated tokens, their text and scores.

    ``sequences`` holds the generated token ids (prompt excluded) of each
    returned sequence, best first; ``scores`` is, for beam search, the
    length-normalised log-probability (transformers' ``sequences_scores``),
    otherwise the sum of the log-probabilities of the chosen tokens under the
    model's unprocessed distribution.
    """

    prompt_ids: list[int]
    sequences: list[list[int]]
    texts: list[str]
    scores: list[float]
    trace: list[Any] | None = field(default=None, repr=False)

    @property
    def token_ids(self) -> list[int]:
        """Generated ids of the best sequence."""
        return self.sequences[0]

    @property
    def text(self) -> str:
        """Generated text of the best sequence."""
        return self.texts[0]

    @property
    def score(self) -> float:
        return self.scores[0]


# --- checks shared by the strategies -------------------------------------------------


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int >= {low}, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value}")
    return int(value)


def _prompt_ids(lm: LanguageModel, prompt: Prompt) -> list[int]:
    if isinstance(prompt, str):
        ids = lm.encode(prompt)
    elif isinstance(prompt, torch.Tensor):
        ids = prompt.reshape(-1).tolist()
    elif isinstance(prompt, Sequence) and all(isinstance(i, Integral) for i in prompt):
        ids = [int(i) for i in prompt]
    else:
        raise TypeError(f"prompt must be a string or a sequence of token ids, got {type(prompt).__name__}")
    if not ids:
        raise ValueError("prompt must not be empty: the model needs at least one token to continue")
    bad = [i for i in ids if not 0 <= i < lm.vocab_size]
    if bad:
        raise ValueError(f"prompt has token ids outside [0, {lm.vocab_size}): {bad[:5]}")
    return ids


def _eos_ids(lm: LanguageModel, eos_token_id: int | Sequence[int] | None) -> tuple[int, ...]:
    if eos_token_id is None:
        return tuple(lm.eos_token_ids)
    ids = [eos_token_id] if isinstance(eos_token_id, Integral) else list(eos_token_id)
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, Integral) or not 0 <= i < lm.vocab_size:
            raise ValueError(f"eos_token_id must be token ids in [0, {lm.vocab_size}), got {eos_token_id!r}")
    return tuple(int(i) for i in ids)


def _step_trace(lm: LanguageModel, logits: torch.Tensor, scores: torch.Tensor, chosen: int, top: int) -> Step:
    probs = torch.softmax(logits, dim=-1)
    final = torch.softmax(scores, dim=-1)
    best = torch.topk(probs, min(top, probs.numel())).indices.tolist()
    return Step(
        candidates=tuple(
            Candidate(i, lm.token_text(i), float(probs[i]), float(final[i])) for i in best
        ),
        chosen=chosen,
    )


def _finish(
    lm: LanguageModel,
    prompt_ids: list[int],
    sequences: list[list[int]],
    scores: list[float],
    trace: Any,
    eos: tuple[int, ...],
) -> Generation:
    """Package the result; the text leaves out a final end token."""
    texts = [lm.decode(s[:-1] if s and s[-1] in eos else s) for s in sequences]
    return Generation(prompt_ids, sequences, texts, scores, trace)


# --- greedy and sampling: one loop, two ways to pick -----------------------------------


def _one_sequence(
    lm: LanguageModel,
    prompt_ids: list[int],
    max_new_tokens: int,
    eos: tuple[int, ...],
    pick: Any,
    trace: bool,
    trace_top: int,
    on_token: Callable[[int], None] | None,
    logits_processors: Sequence[LogitsProcessor] = (),
    on_step: Callable[[int, torch.Tensor], bool | None] | None = None,
) -> Generation:
    """The autoregressive loop shared by greedy and sampling.

    ``pick(logits) -> (scores, token)`` chooses the next token from the
    float32 logits of the last position, after ``logits_processors``;
    ``on_token`` sees each token as soon as it is chosen (for streaming);
    ``on_step`` also sees the model's own logits and may end the loop.
    """
    logits, cache = lm.start(torch.tensor([prompt_ids]))
    generated: list[int] = []
    log_probability = 0.0
    steps: list[Step] = []
    for _ in range(max_new_tokens):
        processed = logits[0]
        for process in logits_processors:
            processed = process(generated, processed)
        scores, token = pick(processed)
        log_probability += float(torch.log_softmax(logits[0], dim=-1)[token])
        if trace:
            steps.append(_step_trace(lm, logits[0], scores, token, trace_top))
        generated.append(token)
        if on_token is not None:
            on_token(token)
        if on_step is not None and on_step(token, logits[0]):
            break  # the caller has what it needs (a stop string, a client gone)
        if token in eos or len(generated) == max_new_tokens:
            break
        logits, cache = lm.advance(cache, torch.tensor([token]))
    return _finish(lm, prompt_ids, [generated], [log_probability], steps if trace else None, eos)


def _check_step_hooks(
    logits_processors: Sequence[LogitsProcessor], on_step: Callable[..., Any] | None
) -> tuple[LogitsProcessor, ...]:
    if isinstance(logits_processors, (str, bytes)) or not isinstance(logits_processors, Sequence):
        raise TypeError(
            "logits_processors must be a sequence of functions (generated_ids, logits) -> logits, "
            f"got {type(logits_processors).__name__}"
        )
    for index, process in enumerate(logits_processors):
        if not callable(process):
            raise TypeError(f"logits_processors[{index}] must be a function, got {type(process).__name__}")
    if on_step is not None and not callable(on_step):
        raise TypeError(f"on_step must be a function (token_id, logits) -> bool, got {type(on_step).__name__}")
    return tuple(logits_processors)


def greedy(
    model: Any,
    prompt: Prompt,
    *,
    tokenizer: Any = None,
    max_new_tokens: int = 20,
    eos_token_id: int | Sequence[int] | None = None,
    trace: bool = False,
    trace_top: int = 5,
    on_token: Callable[[int], None] | None = None,
    logits_processors: Sequence[LogitsProcessor] = (),
    on_step: Callable[[int, torch.Tensor], bool | None] | None = None,
) -> Generation:
    """Greedy decoding: at every step take the single most likely token.

    Args:
        model: a :class:`~llmsforme.lm.LanguageModel`, or a Hugging Face model
            (then pass ``tokenizer``).
        prompt: text, or its token ids.
        max_new_tokens: how many tokens to generate at most (>= 1).
        eos_token_id: token id(s) that end the text (default: the model's).
        trace: record the ``trace_top`` best candidates of every step.
        on_token: called with each token id as soon as it is chosen (streaming).
        logits_processors: functions ``(generated_ids, logits) -> logits``
            applied in order to the model's logits before the choice (e.g.
            the repetition penalties of :func:`~llmsforme.processors.penalize`).
        on_step: called with each chosen token id and the model's own logits
            of that step (before any processor); if it returns ``True`` the
            generation ends there (a stop string was seen, the reader left).

    Example:
        >>> from llmsforme.lm import ToyModel
        >>> toy = ToyModel({"the": {"plain": 0.6, "meadow": 0.4},
        ...                 "the plain": {"which": 0.55, "and": 0.45},
        ...                 "the meadow": {"where": 0.9, "and": 0.1}})
        >>> greedy(toy, "the").text
        'plain which'
        >>> greedy(toy, "the", on_step=lambda token, logits: True).text  # stop after one
        'plain'

    Taught in: [Greedy and beam search](../part-1/greedy-and-beam-search.ipynb).
    """
    lm = as_language_model(model, tokenizer)
    prompt_ids = _prompt_ids(lm, prompt)
    max_new_tokens = _check_int("max_new_tokens", max_new_tokens, 1)
    trace_top = _check_int("trace_top", trace_top, 1)

    processors = _check_step_hooks(logits_processors, on_step)

    def pick(logits: torch.Tensor) -> tuple[torch.Tensor, int]:
        return logits, int(torch.argmax(logits))

    eos = _eos_ids(lm, eos_token_id)
    return _one_sequence(lm, prompt_ids, max_new_tokens, eos, pick, trace, trace_top, on_token, processors, on_step)


def sample(
    model: Any,
    prompt: Prompt,
    *,
    tokenizer: Any = None,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    max_new_tokens: int = 20,
    eos_token_id: int | Sequence[int] | None = None,
    seed: int | None = None,
    trace: bool = False,
    trace_top: int = 5,
    on_token: Callable[[int], None] | None = None,
    logits_processors: Sequence[LogitsProcessor] = (),
    on_step: Callable[[int, torch.Tensor], bool | None] | None = None,
) -> Generation:
    """Sampling: draw each token at random from the reshaped distribution.

    The logits go through temperature, then top-k, then top-p (see
    :mod:`llmsforme.processors`); one token is drawn with
    ``torch.multinomial`` on torch's global generator, as ``model.generate``
    does. Our defaults switch every filter off (``top_k=0``, ``top_p=1``);
    note that transformers applies ``top_k=50`` unless told otherwise.

    What equals what: the draw always happens on the CPU, wherever the model
    runs (the logits come back as float32 on the CPU). So on a CPU, a seeded
    ``sample`` gives the tokens of ``torch.manual_seed(seed)`` then
    ``model.generate(do_sample=True, top_k=0, ...)`` with the same settings.
    On a GPU, the same seed gives the same tokens every time, and the same
    tokens as on a CPU as long as the logits agree, but *not* those of
    ``model.generate`` on the GPU, which draws from CUDA's own random stream.

    Args:
        temperature: > 0; below 1 sharpens, above 1 flattens.
        top_k: keep the k most likely tokens (0 = off).
        top_p: keep the smallest set of tokens whose mass reaches p, in (0, 1].
        seed: if given, ``torch.manual_seed(seed)`` first, for repeatable draws.
        logits_processors, on_step: as for :func:`greedy`; the processors
            run before temperature, top-k and top-p.

    Example:
        >>> from llmsforme.lm import ToyModel
        >>> toy = ToyModel({"the": {"plain": 0.6, "meadow": 0.4}})
        >>> sample(toy, "the", top_k=1, seed=0).text  # top_k=1 is greedy
        'plain'

    Taught in: [Temperature](../part-1/temperature.ipynb),
    [Top-k and top-p](../part-1/top-k-top-p.ipynb).
    """
    lm = as_language_model(model, tokenizer)
    prompt_ids = _prompt_ids(lm, prompt)
    temperature, top_k, top_p = check_sampling_args(temperature, top_k, top_p)
    max_new_tokens = _check_int("max_new_tokens", max_new_tokens, 1)
    trace_top = _check_int("trace_top", trace_top, 1)
    processors = _check_step_hooks(logits_processors, on_step)
    eos = _eos_ids(lm, eos_token_id)
    if seed is not None:
        torch.manual_seed(_check_int("seed", seed, 0))

    def pick(logits: torch.Tensor) -> tuple[torch.Tensor, int]:
        scores = warp(logits[None], temperature=temperature, top_k=top_k, top_p=top_p)
        token = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1)
        return scores[0], int(token)

    return _one_sequence(lm, prompt_ids, max_new_tokens, eos, pick, trace, trace_top, on_token, processors, on_step)


# --- beam search ----------------------------------------------------------------------


def beam_search(
    model: Any,
    prompt: Prompt,
    *,
    tokenizer: Any = None,
    num_beams: int = 2,
    max_new_tokens: int = 20,
    length_penalty: float = 1.0,
    early_stopping: bool | Literal["never"] = False,
    num_return_sequences: int = 1,
    eos_token_id: int | Sequence[int] | None = None,
    trace: bool = False,
    logits_processors: Sequence[LogitsProcessor] = (),
) -> Generation:
    """Beam search: keep the ``num_beams`` most likely partial sequences.

    At each step every running beam is extended by every token; the best
    ``2 * num_beams`` candidates by total log-probability are ranked. A
    candidate that ends with an end token (or reaches ``max_new_tokens``) is
    *finished* if it ranks among the first ``num_beams``; its score is
    ``sum log p / length ** length_penalty`` (length counts the generated
    tokens, end token included). The best unfinished candidates run on.

    Args:
        num_beams: beams kept per step (>= 1; 1 is greedy).
        length_penalty: exponent of the length normalisation; > 0 favours
            longer sequences, < 0 shorter ones.
        early_stopping: ``True`` stops once ``num_beams`` sequences are
            finished; ``False`` stops when no running beam can plausibly beat
            the finished ones (heuristic); ``"never"`` only when none can.
        num_return_sequences: how many finished sequences to return (<= num_beams).
        logits_processors: functions ``(generated_ids, log_probs) -> log_probs``
            applied to each beam's next-token log-probabilities, with that
            beam's tokens so far, before the candidates are ranked (as in
            transformers); a constrained-decoding grammar goes here.

    Example (the course's example: greedy would take "plain", p = 0.6):
        >>> from llmsforme.lm import ToyModel
        >>> toy = ToyModel({"the": {"plain": 0.6, "meadow": 0.4},
        ...                 "the plain": {"which": 0.55, "and": 0.45},
        ...                 "the meadow": {"where": 0.9, "and": 0.1}})
        >>> beam_search(toy, "the", num_beams=2).text
        'meadow where'

    Taught in: [Greedy and beam search](../part-1/greedy-and-beam-search.ipynb).
    """
    lm = as_language_model(model, tokenizer)
    prompt_ids = _prompt_ids(lm, prompt)
    num_beams = _check_int("num_beams", num_beams, 1)
    max_new_tokens = _check_int("max_new_tokens", max_new_tokens, 1)
    num_return_sequences = _check_int("num_return_sequences", num_return_sequences, 1)
    if num_return_sequences > num_beams:
        raise ValueError(
            f"num_return_sequences must be in [1, num_beams={num_beams}], got {num_return_sequences}"
        )
    if isinstance(length_penalty, bool) or not isinstance(length_penalty, Real) or not math.isfinite(length_penalty):
        raise TypeError(f"length_penalty must be a finite number, got {length_penalty!r}")
    if early_stopping not in (True, False, "never"):
        raise ValueError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")
    eos = _eos_ids(lm, eos_token_id)
    length_penalty = float(length_penalty)
    processors = _check_step_hooks(logits_processors, None)

    # Candidates ranked per step: enough that num_beams of them can run on even
    # if the best ones all end with an end token.
    n_candidates = max(2, 1 + len(eos)) * num_beams
    n_candidates = min(n_candidates, num_beams * lm.vocab_size)
    vocab = lm.vocab_size

    # All beams start as copies of the prompt; only the first is "live", so the
    # first step does not pick the same token num_beams times.
    running: list[list[int]] = [[] for _ in range(num_beams)]
    running_scores = torch.full((num_beams,), -1e9)
    running_scores[0] = 0.0
    finished: list[list[int]] = []
    finished_scores: list[float] = []
    eos_tensor = torch.tensor(eos, dtype=torch.long)
    steps: list[BeamStep] = []

    logits, cache = lm.start(torch.tensor([prompt_ids] * num_beams))
    for length in range(1, max_new_tokens + 1):
        log_probs = torch.log_softmax(logits, dim=-1)  # [num_beams, vocab]
        scores = log_probs
        if processors:
            rows = []
            for beam, row in zip(running, log_probs):
                for process in processors:
                    row = process(beam, row)
                rows.append(row)
            scores = torch.stack(rows)
        totals = (scores + running_scores[:, None]).reshape(-1)
        top_scores, top_flat = torch.topk(totals, n_candidates)
        parents = top_flat // vocab
        tokens = top_flat % vocab
        # A candidate stops if it ends with an end token or reaches the limit.
        stops = torch.isin(tokens, eos_tensor) | (length == max_new_tokens)

        # 1. Finished hypotheses: a stopping candidate that ranks among the first
        #    num_beams joins the finished list, scored by its length-normalised
        #    log-probability. The list keeps its best num_beams (a stable sort:
        #    on a tie the older hypothesis stays first, as in transformers).
        just_finished = stops & (torch.arange(n_candidates) < num_beams)
        normalised = top_scores / (length**length_penalty)
        new = [
            (float(normalised[i]), running[int(parents[i])] + [int(tokens[i])])
            for i in torch.nonzero(just_finished).flatten().tolist()
        ]
        best = sorted(list(zip(finished_scores, finished)) + new, key=lambda item: -item[0])[:num_beams]
        finished_scores = [score for score, _ in best]
        finished = [sequence for _, sequence in best]

        # 2. Running beams: the best num_beams candidates that did not stop.
        ranking = top_scores + stops.float() * -1e9
        keep = torch.topk(ranking, num_beams).indices
        kept = set(keep.tolist())
        if trace:
            steps.append(
                BeamStep(
                    tuple(
                        BeamCandidate(
                            parent=int(parents[i]),
                            token_id=int(tokens[i]),
                            token=lm.token_text(int(tokens[i])),
                            log_probability=float(log_probs[parents[i], tokens[i]]),
                            score=float(top_scores[i]),
                            status="finished" if just_finished[i] else "running" if i in kept else "dropped",
                        )
                        for i in range(n_candidates)
                    )
                )
            )
        running = [running[int(parents[i])] + [int(tokens[i])] for i in keep]
        running_scores = ranking[keep]

        # 3. Stop when nothing can change the finished list any more.
        if bool(stops.all()) or length == max_new_tokens:
            break
        if early_stopping is True and len(finished) == num_beams:
            break
        if len(finished) == num_beams:
            if early_stopping == "never" and length_penalty > 0.0:
                best_length = max_new_tokens
            else:
                best_length = length
            best_possible = running_scores[:1] / (best_length**length_penalty)
            if not bool((best_possible > min(finished_scores)).any()):
                break
        cache = lm.reorder(cache, parents[keep])
        logits, cache = lm.advance(cache, tokens[keep])

    sequences = finished[:num_return_sequences]
    return _finish(
        lm, prompt_ids, sequences, finished_scores[:num_return_sequences], steps if trace else None, eos
    )


def next_token_table(
    model: Any,
    prompt: Prompt,
    *,
    tokenizer: Any = None,
    top: int = 10,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
) -> list[dict[str, Any]]:
    """The most likely next tokens after ``prompt``, as rows of a table.

    Each row has ``rank``, ``token_id``, ``token``, ``probability`` (after
    temperature), ``cumulative``, and whether top-k and top-p keep it.

    Example:
        >>> from llmsforme.lm import ToyModel
        >>> toy = ToyModel({"the": {"plain": 0.6, "meadow": 0.4}})
        >>> [(r["token"], r["probability"]) for r in next_token_table(toy, "the", top=2)]
        [('plain', 0.6000000238418579), ('meadow', 0.4000000059604645)]

    Taught in: [Next-token probabilities](../part-1/generating-text.ipynb),
    [Top-k and top-p sampling](../part-1/top-k-top-p.ipynb).
    """
    lm = as_language_model(model, tokenizer)
    prompt_ids = _prompt_ids(lm, prompt)
    top = _check_int("top", top, 1)
    temperature, top_k, top_p = check_sampling_args(temperature, top_k, top_p)
    logits, _ = lm.start(torch.tensor([prompt_ids]))
    scaled = warp(logits, temperature=temperature)
    probs = torch.softmax(scaled, dim=-1)[0]
    kept_k = warp(scaled, top_k=top_k)[0].isfinite()
    kept_p = warp(scaled, top_p=top_p)[0].isfinite()
    ids = torch.topk(probs, min(top, probs.numel())).indices.tolist()
    # Among tokens of equal probability, list the kept ones first, so that the
    # kept set reads as the top of the table even where a filter cut a tie.
    ids.sort(key=lambda i: (-float(probs[i]), not kept_p[i], not kept_k[i]))
    rows = []
    cumulative = 0.0
    for rank, i in enumerate(ids, start=1):
        p = float(probs[i])
        cumulative += p
        rows.append(
            {
                "rank": rank,
                "token_id": i,
                "token": lm.token_text(i),
                "probability": p,
                "cumulative": cumulative,
                "top_k": bool(kept_k[i]),
                "top_p": bool(kept_p[i]),
            }
        )
    return rows
