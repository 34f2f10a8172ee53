"""Shared fixtures: the course model is loaded once per test session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network


@pytest.fixture(scope="session")
def course_model():
    """(model, tokenizer) of the course model, from the default cache."""
    from llmsforme import load_model

    return load_model(progress=False)


@pytest.fixture(scope="session")
def course_lm(course_model):
    from llmsforme import HFLanguageModel

    return HFLanguageModel(*course_model)
