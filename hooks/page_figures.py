"""MkDocs hook: a Markdown page's measured figures, read from their data files.

A prose page that repeats a number from a stored measurement (for instance
``examples/part-4/data/local_runtimes.json``) writes a placeholder,
``{{ figure("examples/part-4/data/local_runtimes.json", "/llama_cpp_over_transformers") }}``,
and this hook replaces it with the value read from the file when the site is
built. The syntax and the reading are in :mod:`llmsforme.page_figures`, which
the corpus of "Ask the course" uses as well, so that the site and the
corpus show the same numbers.

A placeholder that cannot be filled (a missing file or key, a typo in the
syntax) stops the build with a message that names the page and the
placeholder: a page never shows a stale or a made-up number.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import Files
from mkdocs.structure.pages import Page


def _load_page_figures():
    """llmsforme/page_figures.py by its path: importing the package would import torch, and
    the site (``make serve``) is built without it."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "llmsforme" / "page_figures.py"
    spec = importlib.util.spec_from_file_location("_llmsforme_page_figures", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


_figures = _load_page_figures()
FigureError, substitute_figures = _figures.FigureError, _figures.substitute_figures


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Replace every ``{{ figure(...) }}`` of a Markdown page by its value."""
    if page.file.src_uri.endswith(".ipynb"):  # notebooks compute their numbers in their cells
        return markdown
    root = Path(config.config_file_path).parent
    try:
        return substitute_figures(markdown, root)
    except FigureError as error:
        raise PluginError(f"{page.file.src_uri}: {error}") from None
