"""Pictures for the pages: next-token bars, temperature curves, beam-search trees.

Every function returns a matplotlib ``Figure`` (and draws on ``ax`` if you pass
one), so a notebook shows it and a script can ``savefig`` it. Plots sit at the
edge of the package: the algorithms never import this module.

Taught in: [Generating text](../part-1/generating-text.ipynb),
[Temperature](../part-1/temperature.ipynb),
[Greedy and beam search](../part-1/greedy-and-beam-search.ipynb),
[Diffusion from scratch](../part-5/diffusion-from-scratch.ipynb),
[Serving many users](../part-4/serving-many.ipynb).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..decoding import BeamStep, Generation, _prompt_ids
from ..lm import as_language_model, visible_token
from ..processors import check_sampling_args, scale_temperature

__all__ = ["plot_next_token_probabilities", "plot_temperatures", "plot_beam_tree", "plot_image_grid",
           "plot_batch_timeline"]

KEPT = "#3f51b5"  # Material indigo: the site's primary colour
REMOVED = "#b0b0b0"
FINISHED = "#2e7d32"


def _axes(ax: Axes | None, size: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax  # type: ignore[return-value]
    fig, new_ax = plt.subplots(figsize=size, layout="constrained")
    return fig, new_ax


def plot_next_token_probabilities(
    rows: Sequence[dict[str, Any]],
    *,
    ax: Axes | None = None,
    title: str | None = None,
    kept_by: str | None = None,
) -> Figure:
    """Horizontal bars of next-token probabilities, kept tokens highlighted.

    Args:
        rows: rows of :func:`~llmsforme.decoding.next_token_table`, most likely first.
        kept_by: ``"top_k"``, ``"top_p"``, ``"both"`` or ``None`` (every bar in
            the kept colour).

    Example:
        >>> from llmsforme.examples import top_k_top_p_model
        >>> from llmsforme.decoding import next_token_table
        >>> rows = next_token_table(top_k_top_p_model(), "the", top_p=0.8)
        >>> fig = plot_next_token_probabilities(rows, kept_by="top_p")
        >>> len(fig.axes[0].patches)
        10

    Taught in: [Next-token probabilities](../part-1/generating-text.ipynb),
    [Top-k and top-p sampling](../part-1/top-k-top-p.ipynb).
    """
    if kept_by not in (None, "top_k", "top_p", "both"):
        raise ValueError(f"kept_by must be None, 'top_k', 'top_p' or 'both', got {kept_by!r}")
    if not rows:
        raise ValueError("rows must not be empty")
    fig, ax = _axes(ax, (6.4, 0.35 * len(rows) + 1.2))
    labels = [visible_token(r["token"]) for r in rows]
    probabilities = [r["probability"] for r in rows]

    def kept(row: dict[str, Any]) -> bool:
        if kept_by is None:
            return True
        if kept_by == "both":
            return bool(row["top_k"] and row["top_p"])
        return bool(row[kept_by])

    colours = [KEPT if kept(r) else REMOVED for r in rows]
    positions = range(len(rows))
    ax.barh(positions, probabilities, color=colours)
    ax.set_yticks(list(positions), labels, fontfamily="monospace")
    ax.invert_yaxis()  # most likely on top
    ax.set_xlabel("probability")
    for y, p in zip(positions, probabilities):
        ax.text(p, y, f" {p:.3f}", va="center", fontsize=8)
    ax.set_xlim(0, max(probabilities) * 1.18)
    if kept_by is not None:
        from matplotlib.patches import Patch

        ax.legend(handles=[Patch(color=KEPT, label="kept"), Patch(color=REMOVED, label="removed")], loc="lower right")
    if title:
        ax.set_title(title)
    return fig


def plot_temperatures(
    model: Any,
    prompt: str | Sequence[int],
    temperatures: Sequence[float],
    *,
    tokenizer: Any = None,
    top: int = 10,
    ax: Axes | None = None,
) -> Figure:
    """Probabilities of the ``top`` most likely next tokens at several temperatures.

    The tokens are those most likely at T = 1; each temperature is one line.

    Example:
        >>> from llmsforme.examples import top_k_top_p_model
        >>> fig = plot_temperatures(top_k_top_p_model(), "the", [0.5, 1.0, 2.0], top=5)
        >>> len(fig.axes[0].lines)
        3

    Taught in: [Temperature](../part-1/temperature.ipynb).
    """
    if not temperatures:
        raise ValueError("temperatures must list at least one temperature > 0")
    for t in temperatures:
        check_sampling_args(t, 0, 1.0)
    lm = as_language_model(model, tokenizer)
    logits, _ = lm.start(torch.tensor([_prompt_ids(lm, prompt)]))
    logits = logits[0]
    top = min(top, logits.numel())
    order = torch.topk(logits, top).indices
    fig, ax = _axes(ax, (7, 3.6))
    positions = list(range(top))
    for t in temperatures:
        probs = torch.softmax(scale_temperature(logits, t), dim=-1)[order]
        ax.plot(positions, probs.tolist(), marker="o", label=f"T = {t:g}")
    ax.set_xticks(positions, [visible_token(lm.token_text(int(i))) for i in order], rotation=45, ha="right", fontfamily="monospace")
    ax.set_ylabel("probability")
    ax.set_ylim(0, None)
    ax.legend()
    return fig


def plot_beam_tree(generation: Generation, *, ax: Axes | None = None, max_steps: int | None = None) -> Figure:
    """Draw the candidates beam search ranked at each step, as a tree.

    Columns are steps; each node is a candidate with its token and total
    log-probability. Running beams are blue, finished hypotheses green,
    dropped candidates grey; edges join a candidate to the beam it extends.

    Args:
        generation: the result of ``beam_search(..., trace=True)``.

    Example:
        >>> from llmsforme.examples import beam_example_model
        >>> from llmsforme.decoding import beam_search
        >>> fig = plot_beam_tree(beam_search(beam_example_model(), "the", num_beams=2, trace=True))
        >>> fig.axes[0].get_title()
        'Beam search: 2 beams, 3 steps'

    Taught in: [Greedy and beam search](../part-1/greedy-and-beam-search.ipynb).
    """
    steps = generation.trace
    if not steps or not all(isinstance(s, BeamStep) for s in steps):
        raise ValueError("generation must come from beam_search(..., trace=True)")
    steps = steps[: max_steps or len(steps)]

    def shown(step: BeamStep) -> list[tuple[int, Any]]:
        # Leave out impossible candidates: -inf, or extensions of the -1e9
        # placeholder beams that make the first step pick distinct tokens.
        return [(i, c) for i, c in enumerate(step.candidates) if c.score > -1e8]

    width = max(len(shown(s)) for s in steps)
    fig, ax = _axes(ax, (2.3 * (len(steps) + 1), 0.55 * width + 1.2))
    colours = {"running": KEPT, "finished": FINISHED, "dropped": REMOVED}
    # y position of each running beam, per step, to draw edges from
    previous: list[float] = [width / 2]
    ax.text(0, width / 2, "prompt", ha="center", va="center", bbox={"boxstyle": "round", "fc": "white", "ec": KEPT})
    for x, step in enumerate(steps, start=1):
        current: list[float] = []
        for y, (_, candidate) in enumerate(shown(step)):
            parent_y = previous[candidate.parent] if candidate.parent < len(previous) else previous[0]
            colour = colours[candidate.status]
            ax.plot([x - 1, x], [parent_y, y], color=colour, lw=1.5 if candidate.status != "dropped" else 0.8, zorder=1)
            ax.text(
                x,
                y,
                f"{visible_token(candidate.token)}\n{candidate.score:.2f}",
                ha="center",
                va="center",
                fontsize=8,
                fontfamily="monospace",
                bbox={"boxstyle": "round", "fc": "white", "ec": colour},
                zorder=2,
            )
            if candidate.status == "running":
                current.append(y)
        previous = current or previous
    ax.set_xlim(-0.6, len(steps) + 0.6)
    ax.set_ylim(width - 0.4, -0.6)
    ax.axis("off")
    n_beams = len(steps[0].running) or 1
    ax.set_title(f"Beam search: {n_beams} beams, {len(steps)} steps")
    from matplotlib.lines import Line2D

    ax.legend(
        handles=[Line2D([], [], color=c, label=s) for s, c in colours.items()],
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=3,
        frameon=False,
    )
    return fig


def plot_image_grid(
    images: torch.Tensor | Sequence[torch.Tensor],
    *,
    row_labels: Sequence[str] | None = None,
    column_labels: Sequence[str] | None = None,
    cell: float = 0.55,
) -> Figure:
    """Grey images in a grid: one row per tensor of ``images``, one column per image.

    Args:
        images: a ``(rows, columns, 1, H, W)`` tensor, a ``(columns, 1, H, W)``
            tensor (one row), or a sequence of ``(columns, 1, H, W)`` tensors;
            pixel values in [0, 1] (0 is black).
        row_labels, column_labels: text on the left of each row, above each column.
        cell: inches per image.

    Example::

        >>> fig = plot_image_grid(torch.rand(2, 5, 1, 16, 16), row_labels=["a", "b"])
        >>> len(fig.axes)
        10
    """
    rows = [images] if isinstance(images, torch.Tensor) and images.dim() == 4 else list(images)
    if not rows or any(row.dim() != 4 or row.shape[1] != 1 for row in rows):
        raise ValueError("images must be (rows, columns, 1, H, W), (columns, 1, H, W) or a list of the latter")
    columns = max(len(row) for row in rows)
    if row_labels is not None and len(row_labels) != len(rows):
        raise ValueError(f"row_labels: {len(row_labels)} labels for {len(rows)} rows")
    if column_labels is not None and len(column_labels) != columns:
        raise ValueError(f"column_labels: {len(column_labels)} labels for {columns} columns")
    left = 0.9 if row_labels is not None else 0.0
    fig, axes = plt.subplots(
        len(rows), columns, figsize=(left + cell * columns, cell * len(rows) + (0.3 if column_labels else 0)),
        squeeze=False, layout="constrained",
    )
    for r, row in enumerate(rows):
        for c in range(columns):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(row):
                ax.imshow(row[c, 0].detach().cpu().float().numpy(), cmap="gray", vmin=0, vmax=1)
            else:
                ax.axis("off")
            if c == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[r], rotation=0, ha="right", va="center", fontsize=9)
            if r == 0 and column_labels is not None:
                ax.set_title(column_labels[c], fontsize=9)
    return fig


def plot_batch_timeline(
    trace: Sequence[Any],
    *,
    arrivals: dict[int, int] | None = None,
    labels: dict[int, str] | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Requests joining and leaving a batch, one row per request, one column per step.

    Args:
        trace: the :class:`~llmsforme.batching.StepRecord` list of a
            :class:`~llmsforme.batching.ContinuousBatcher` (its ``trace``).
        arrivals: the step at which each request number arrived; the steps
            it then waited for room are drawn in grey.
        labels: text for each request number's row (default: "request N").

    Example::

        >>> from types import SimpleNamespace as Step
        >>> trace = [Step(index=0, joined=(0, 1), left=()), Step(index=1, joined=(), left=(0,)),
        ...          Step(index=2, joined=(2,), left=(1, 2))]
        >>> fig = plot_batch_timeline(trace, arrivals={2: 0})
        >>> len(fig.axes[0].patches)  # three runs and one wait
        4
    """
    joined = {n: record.index for record in trace for n in record.joined}
    left = {n: record.index for record in trace for n in record.left}
    if not joined:
        raise ValueError("trace has no request joining: pass a batcher's trace after it has run")
    numbers = sorted(joined)
    fig, ax = _axes(ax, (7, 0.35 * len(numbers) + 1.0))
    end = trace[-1].index + 1
    for row, n in enumerate(numbers):
        start = joined[n]
        stop = left.get(n, end)
        if arrivals is not None and arrivals.get(n, start) < start:
            ax.barh(row, start - arrivals[n], left=arrivals[n], color=REMOVED, height=0.6)
        ax.barh(row, stop - start + 1, left=start, color=KEPT, height=0.6)
    ax.set_yticks(range(len(numbers)), [(labels or {}).get(n, f"request {n}") for n in numbers])
    ax.invert_yaxis()
    ax.set_xlabel("step (one forward pass for every running request)")
    ax.set_xlim(0, end)
    ax.spines[["top", "right"]].set_visible(False)
    return fig
