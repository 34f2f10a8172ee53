"""Every notebook in examples/ re-executes to exactly the outputs stored in it.

The notebooks are the pages of the site, stored with their outputs (written by
``python -m llmsforme.notebooks run examples``). Here each one is executed
again with pytest-notebook, in its own folder, and its text outputs are
compared with the stored ones: a drifting number, a new warning or an error
fails. Image bytes, execution counts and metadata are not compared; the
``text/plain`` line of a figure (``<Figure size ...>``) is.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from llmsforme.notebooks import find_notebooks, kernel_environment, problems, repository_from_mkdocs, setup_cell_source

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = find_notebooks([ROOT / "examples"])
IDS = [path.relative_to(ROOT / "examples").as_posix() for path in NOTEBOOKS]

DIFF_IGNORE = (
    "/metadata",
    "/cells/*/metadata",
    "/cells/*/execution_count",
    "/cells/*/outputs/*/execution_count",
    "/cells/*/outputs/*/metadata",
    "/cells/*/outputs/*/data/image/png",
)


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 11, NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_stored_notebook_is_clean(path: Path):
    """The stored notebook: standard install cell, ran in order, clean outputs, short lines."""
    setup = setup_cell_source(*repository_from_mkdocs(ROOT))
    assert problems(nbformat.read(path, as_version=4), setup) == []


def test_problems_catches_bad_notebooks():
    """Self-check: the checks above can fail."""
    setup = setup_cell_source("https://github.com/llmsforme/llmsforme")
    nb = nbformat.v4.new_notebook()
    first = nbformat.v4.new_code_cell(setup, metadata={"tags": ["colab-setup"]})
    cell = nbformat.v4.new_code_cell("print(object())  # " + "x" * 80, execution_count=2)
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="<object object at 0x7f3a2b1c0d90>\n"),
        nbformat.v4.new_output("stream", name="stderr", text="UserWarning: careful\n"),
    ]
    nb.cells = [first, cell]
    found = "\n".join(problems(nb, setup))
    for expected in ("longer than", "execution_count None", "object address", "stderr", "a warning"):
        assert expected in found
    assert any("install cell differs" in p for p in problems(nb, setup + "\n# changed"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_reexecutes_to_stored_outputs(path: Path, nb_regression):
    nb_regression.diff_ignore = DIFF_IGNORE
    nb_regression.exec_timeout = 600
    nb_regression.exec_cwd = str(path.parent)
    # HOME and LLMSFORME_CACHE: the kernels read the model cache the tests use.
    passed = ("PATH", "HOME", "LLMSFORME_CACHE", "HF_HUB_OFFLINE", "TOKENIZERS_PARALLELISM",
              "PYDEVD_DISABLE_FILE_VALIDATION", "PYTHONHASHSEED")
    nb_regression.exec_env = {key: value for key, value in kernel_environment().items() if key in passed}
    nb_regression.check(str(path))
