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


@pytest.fixture(scope="session")
def built_site(tmp_path_factory):
    """The site built once per session with ``mkdocs build --strict``; its folder."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    target = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(target)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    return target


@pytest.fixture(scope="session")
def ask_index():
    """Ask the course's search index: the package cache's own (``course_index``), built there if the
    course changed (a few seconds from the shipped embeddings). The Part 6 notebooks and page examples open the same one,
    so the suite builds it once."""
    from llmsforme.apps.ask import course_index

    return course_index(progress=False)
