"""What every benchmark here shares: interleaved rounds, their median and spread, and the warning.

These machines are noisy (one 5-round run read 1.78x where a quiet one read
0.98x), so each benchmark interleaves what it compares for at least
``MIN_ROUNDS`` rounds, reports the median and the spread, ``(max - min) /
median``, and flags a spread above ``NOISY``. The scripts run as
``.venv/bin/python benchmarks/<name>.py``, which puts this folder on the path:

    from rounds import add_rounds, flag, median_spread
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence

MIN_ROUNDS = 7
NOISY = 0.10
WARNING = "\nWARNING: some spreads passed 10 %: the machine was busy; those figures are not reliable."


def median_spread(values: Sequence[float]) -> tuple[float, float]:
    """The median of ``values`` and their spread, ``(max - min) / median``.

    >>> median, spread = median_spread([1.0, 1.1, 0.9])
    >>> print(median, round(spread, 3))
    1.0 0.2
    """
    if not values:
        raise ValueError("values is empty: a benchmark needs at least one round")
    median = statistics.median(values)
    if median <= 0:
        raise ValueError(f"the median must be positive to give a spread, got {median!r}")
    return median, (max(values) - min(values)) / median


def flag(spread: float) -> str:
    """The mark printed after a figure whose spread passed :data:`NOISY` (empty otherwise)."""
    return "  <- spread > 10 %, run again" if spread > NOISY else ""


def add_rounds(parser: argparse.ArgumentParser) -> None:
    """Add ``--rounds`` (default and least :data:`MIN_ROUNDS`); call :func:`check_rounds` after parsing."""
    parser.add_argument("--rounds", type=int, default=MIN_ROUNDS, help=f"interleaved rounds, at least {MIN_ROUNDS}")


def check_rounds(parser: argparse.ArgumentParser, rounds: int) -> None:
    """Stop with the parser's usage error when ``rounds`` is below :data:`MIN_ROUNDS`."""
    if rounds < MIN_ROUNDS:
        parser.error(f"--rounds must be at least {MIN_ROUNDS} (medians of fewer rounds are noise here)")
