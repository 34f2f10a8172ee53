"""The benchmarks' shared rounds helper (benchmarks/rounds.py): every script reports medians and spreads one way."""

from __future__ import annotations

import argparse
import doctest
import importlib.util
import re
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def rounds():
    spec = importlib.util.spec_from_file_location("rounds", BENCHMARKS / "rounds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_median_spread_and_the_flag(rounds):
    assert rounds.median_spread([3.0, 1.0, 2.0, 2.0, 2.5]) == (2.0, 1.0)
    assert rounds.flag(0.10) == "" and "spread > 10 %" in rounds.flag(0.11)
    with pytest.raises(ValueError, match="values is empty"):
        rounds.median_spread([])
    with pytest.raises(ValueError, match="median must be positive"):
        rounds.median_spread([0.0, 0.0])
    assert doctest.testmod(rounds).failed == 0


def test_fewer_than_seven_rounds_are_refused(rounds, capsys):
    parser = argparse.ArgumentParser()
    rounds.add_rounds(parser)
    assert parser.parse_args([]).rounds == rounds.MIN_ROUNDS == 7
    rounds.check_rounds(parser, 7)
    with pytest.raises(SystemExit):
        rounds.check_rounds(parser, parser.parse_args(["--rounds", "5"]).rounds)
    assert "--rounds must be at least 7" in capsys.readouterr().err


def test_every_benchmark_with_rounds_uses_the_shared_helper():
    for path in sorted(BENCHMARKS.glob("*.py")):
        if path.name == "rounds.py":
            continue
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"^def _?(median_spread|flag)\(", text, re.MULTILINE), f"{path.name} defines its own"
        if "--rounds" in text:
            assert re.search(r"^from rounds import .*\badd_rounds\b", text, re.MULTILINE), path.name
            assert "check_rounds(parser, args.rounds)" in text, path.name
