"""The site's notebook hook (hooks/notebook_pages.py): link rewriting and collapsed solutions.

The built site is checked as a whole in test_site.py; here each rewrite is
checked on a small input, including what it must refuse.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
from mkdocs.exceptions import PluginError

ROOT = Path(__file__).resolve().parents[1]
SITE = "https://llmsforme.github.io/llmsforme/"


def _hook():
    spec = importlib.util.spec_from_file_location("notebook_pages", ROOT / "hooks" / "notebook_pages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hook = _hook()


class _Files:
    def __init__(self, urls: dict[str, str]):
        self.urls = urls

    def get_file_from_path(self, uri: str):
        return SimpleNamespace(url=self.urls[uri]) if uri in self.urls else None


PAGE = SimpleNamespace(url="part-1/temperature/", file=SimpleNamespace(src_uri="part-1/temperature.ipynb"))
FILES = _Files({"part-1/top-k-top-p.ipynb": "part-1/top-k-top-p/", "part-2/lora.ipynb": "part-2/lora/"})


@pytest.mark.parametrize(
    ("href", "expected"),
    [
        ("top-k-top-p.ipynb", "../top-k-top-p/"),
        ("top-k-top-p.ipynb#top-p", "../top-k-top-p/#top-p"),
        ("../part-2/lora.ipynb", "../../part-2/lora/"),
        (f"{SITE}api/decoding/#llmsforme.decoding.sample", "../../api/decoding/#llmsforme.decoding.sample"),
        (f"{SITE}part-1/", "../"),
        (f"{SITE}part-1/temperature/#the-formula", "./#the-formula"),
        ("https://arxiv.org/abs/1904.09751", "https://arxiv.org/abs/1904.09751"),
        ("#the-formula", "#the-formula"),
    ],
)
def test_links_become_relative_site_links(href: str, expected: str):
    html = f'<p><a href="{href}">x</a></p>'
    assert hook.rewrite_links(html, PAGE, FILES, SITE) == f'<p><a href="{expected}">x</a></p>'


def test_a_link_to_a_missing_notebook_fails_the_build():
    with pytest.raises(PluginError, match="no-such.ipynb"):
        hook.rewrite_links('<a href="no-such.ipynb">x</a>', PAGE, FILES, SITE)


def test_solution_cells_start_collapsed_together():
    code = ('<div class="jp-Cell jp-CodeCell jp-Notebook-cell celltag_solution">'
            '<div class="jp-InputArea"><pre>print(1)</pre></div><div class="jp-OutputArea">1</div></div>')
    prose = ('<div id="cell-id=ab" class="jp-Cell jp-MarkdownCell jp-Notebook-cell"><div class="jp-InputArea">'
             '<div class="jp-RenderedMarkdown celltag_solution"><p>It prints 1.</p></div></div></div>')
    other = '<div class="jp-Cell jp-MarkdownCell"><div><p>Question?</p></div></div>'
    out = hook.collapse_solutions(other + code + "\n" + prose + other + code)
    opening = '<details class="success nb-solution"><summary>Solution</summary>'
    assert out == (other + opening + code + "\n" + prose + "</details>" + other + opening + code + "</details>")
    assert hook.collapse_solutions(other) == other


def test_unbalanced_cells_are_an_error():
    with pytest.raises(PluginError, match="unbalanced"):
        hook.collapse_solutions('<div class="jp-Cell celltag_solution"><div>')
