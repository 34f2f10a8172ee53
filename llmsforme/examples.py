"""The worked examples of Part 1 as data, shared by the pages, notebooks and tests.

Taught in: [Greedy and beam search](../part-1/greedy-and-beam-search.ipynb) and
[Top-k and top-p](../part-1/top-k-top-p.ipynb).
"""

from __future__ import annotations

from .lm import ToyModel

#: Next-word probabilities after "The rain in Spain falls mainly in the":
#: greedy takes "plain" (0.6) and ends with 0.6 x 0.55 = 0.33; a beam of width 2
#: also keeps "meadow" (0.4) and finds 0.4 x 0.9 = 0.36.
BEAM_EXAMPLE: dict[str, dict[str, float]] = {
    "the": {"plain": 0.6, "meadow": 0.4},
    "the plain": {"which": 0.55, "and": 0.45},
    "the meadow": {"where": 0.9, "and": 0.1},
}

#: The ten next words of the top-k / top-p example, as the slides list them
#: (not sorted: "morning", 0.05, sits below words of 0.025).
TOP_K_TOP_P_EXAMPLE: dict[str, float] = {
    "plain": 0.5,
    "meadow": 0.15,
    "field": 0.1,
    "mountains": 0.05,
    "afternoon": 0.05,
    "sunshine": 0.025,
    "cities": 0.025,
    "morning": 0.05,
    "evening": 0.025,
    "farms": 0.025,
}


def beam_example_model() -> ToyModel:
    """The toy model of the beam-search example (prompt: ``"the"``).

    Taught in: [Greedy and beam search](../part-1/greedy-and-beam-search.ipynb).
    """
    return ToyModel(BEAM_EXAMPLE)


def top_k_top_p_model() -> ToyModel:
    """The toy model of the top-k / top-p example (prompt: ``"the"``).

    Taught in: [Top-k and top-p sampling](../part-1/top-k-top-p.ipynb).
    """
    return ToyModel({"the": TOP_K_TOP_P_EXAMPLE})
