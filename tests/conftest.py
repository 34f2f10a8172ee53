"""Shared fixtures: the course model is loaded once per test session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network


def _default_cache_is_valid() -> bool:
    from llmsforme import model_source as ms

    folder = ms.course_cache_folder()
    return folder.is_dir() and ms.cache_problem(folder, ms.SourceInfo.of(ms.find_course_gguf())) is None


@pytest.fixture(scope="session")
def course_conversion(tmp_path_factory):
    """One fresh conversion of the course GGUF file: (folder, the model as loaded from GGUF, tokenizer).

    On a fresh clone, as in CI, the default cache is empty: the conversion is then written there, where
    every later ``load_model()`` (and every notebook) reads it, so the session converts once instead of
    twice (about 25 s each). A valid cache is left alone: the conversion goes to a temporary folder.
    """
    from llmsforme import model_source as ms

    folder = ms.course_cache_folder()
    if _default_cache_is_valid():
        folder = tmp_path_factory.mktemp("cache") / "course"
    model, tokenizer = ms.convert_gguf(ms.find_course_gguf(), folder, progress=False)
    return folder, model, tokenizer


@pytest.fixture(scope="session")
def course_model(request):
    """(model, tokenizer) of the course model, from the default cache (converted first if missing)."""
    from llmsforme import load_model

    if not _default_cache_is_valid():
        request.getfixturevalue("course_conversion")
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
