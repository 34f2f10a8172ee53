"""MkDocs hook: what mkdocs-jupyter lacks for the course's notebook pages.

mkdocs-jupyter renders every notebook of ``examples/`` as a page, from its
stored outputs. This hook only does what the plugin does not:

* **Files.** The notebooks live in ``examples/``, outside ``docs/``: each one
  is added to the site's files under its path inside ``examples/``
  (``examples/part-1/temperature.ipynb`` is the page ``part-1/temperature/``),
  before the plugin picks its pages.
* **Badge.** An "Open in Colab" badge (a local image) under the page title,
  pointing at the notebook of the released version (the git tag ``v`` +
  the version in ``pyproject.toml``).
* **Links.** A notebook links to another notebook as ``other.ipynb`` and to a
  prose page or the API reference with a full URL under ``site_url``; both
  work in Jupyter and on Colab. Here they become relative links, which the
  site's tests check like any other link.
* **Solutions.** Cells tagged ``solution`` (the code, its output and the
  prose about it) start collapsed under one "Solution" summary, as they do in
  JupyterLab (``jupyter.source_hidden``).
* **No other host.** The plugin's page template carries a MathJax loader
  (from a CDN) and a Mermaid loader; both are removed. The site's own KaTeX
  renders the math (``docs/javascripts/katex.js``).
* **Page weight.** The plugin inlines the same ~600 KB of Jupyter CSS into
  every notebook page. Identical ``<style>`` blocks are moved into one shared,
  cacheable stylesheet per content (``assets/notebooks/<hash>.css``).
* **Download.** The plugin's ``include_source`` copies the notebook next to
  its page; Material no longer shows a button for it, so the badge line
  carries a "Download notebook" button that links to that copy.
* **Environment.** A line at the end of the page names what produced its
  stored outputs: the date they were stored and the versions, read from
  ``requirements.lock`` (``llmsforme/environment.py``, loaded by its path so
  that building the site never imports the package).
"""

from __future__ import annotations

import hashlib
import html
import posixpath
import re
from pathlib import Path
from urllib.parse import urlsplit

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

EXAMPLES = "examples"
BADGE = "assets/badges/open-in-colab.svg"
STYLES = "assets/notebooks"
SOLUTION_TAG = "solution"

_STYLE = re.compile(r"<style[^>]*>(.*?)</style>", re.DOTALL)
_MATHJAX = re.compile(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", re.DOTALL)
_MERMAID = re.compile(
    r'<script type="module">(?:(?!</script>).)*?mermaid.*?</script>|<!-- End of mermaid configuration -->', re.DOTALL
)
_HREF = re.compile(r'(<a\b[^>]*?\bhref=")([^"]*)(")')
_DIV = re.compile(r"<div\b|</div>")


def _root(config: MkDocsConfig) -> Path:
    return Path(config.config_file_path).parent


def release_ref(config: MkDocsConfig) -> str:
    """The git tag of the version the site is built from: ``v`` + pyproject's version."""
    import tomllib

    project = tomllib.loads((_root(config) / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return f"v{project['version']}"


def colab_url(config: MkDocsConfig, notebook: str) -> str:
    """Colab's URL for ``notebook`` (a path inside the repository) at the released version."""
    repository = str(config.extra.get("repository") or "").rstrip("/")
    if not repository.startswith("https://github.com/"):
        raise PluginError("mkdocs.yml needs extra.repository, a https://github.com/ URL (the Colab badges)")
    owner_repo = repository.removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{owner_repo}/blob/{release_ref(config)}/{notebook}"


def _load_environment():
    """llmsforme/environment.py by its path (the package's __init__ imports torch)."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "llmsforme" / "environment.py"
    spec = importlib.util.spec_from_file_location("_llmsforme_environment", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_environment = _load_environment()


def environment_footer(config: MkDocsConfig, page: Page) -> str:
    """The page's last line: when its outputs were stored, and with which versions."""
    import json

    root = _root(config)
    notebook = json.loads(Path(page.file.abs_src_path).read_text(encoding="utf-8"))
    lock = (root / "requirements.lock").read_text(encoding="utf-8")
    part = page.file.src_uri.split("/", 1)[0]
    rows = _environment.environment_summary(notebook, lock, release_ref(config)[1:], part=part)
    versions = ", ".join(f"{html.escape(name)} {html.escape(version)}" for name, version in rows)
    date = _environment.execution_date(notebook)
    if date is None:
        raise PluginError(
            f"{EXAMPLES}/{page.file.src_uri} has no execution date: run python -m llmsforme.notebooks run on it"
        )
    return (
        f'<p class="notebook-environment">Outputs stored on {date}, made with {versions} '
        f"(the versions of <code>requirements.lock</code>).</p>"
    )


def _is_notebook_page(page: Page) -> bool:
    return page.file.src_uri.endswith(".ipynb")


# --- files ----------------------------------------------------------------------------------


@event_priority(100)  # before mkdocs-jupyter's on_files, which wraps the notebook files
def on_files(files: Files, config: MkDocsConfig) -> Files:
    folder = _root(config) / EXAMPLES
    for path in sorted(folder.rglob("*.ipynb")):
        if ".ipynb_checkpoints" in path.parts:
            continue
        uri = path.relative_to(folder).as_posix()
        for clash in (uri, uri[: -len(".ipynb")] + ".md"):
            if files.get_file_from_path(clash) is not None:
                raise PluginError(f"{EXAMPLES}/{uri} would be the page of docs/{clash}: remove one of them")
        files.append(File(uri, str(folder), config.site_dir, config.use_directory_urls))
    return files


# --- page content ---------------------------------------------------------------------------


def _relative(target_url: str, page: Page) -> str:
    """``target_url`` (a site URL such as ``part-1/x/``) relative to ``page``'s URL."""
    base = posixpath.dirname(page.url.rstrip("/") + "/x") if page.url else ""
    path, _, fragment = target_url.partition("#")
    rel = posixpath.relpath(path or ".", base or ".")
    if path.endswith("/") and not rel.endswith("/"):
        rel += "/"
    if rel == "./":
        rel = "./"
    return rel + (f"#{fragment}" if fragment else "")


def rewrite_links(content: str, page: Page, files: Files, site_url: str) -> str:
    """Notebook links (``x.ipynb``) and full site URLs become relative site links."""
    page_dir = posixpath.dirname(page.file.src_uri)

    def replace(match: re.Match[str]) -> str:
        url = html.unescape(match.group(2))
        parts = urlsplit(url)
        fragment = f"#{parts.fragment}" if parts.fragment else ""
        if site_url and url.startswith(site_url):
            new = _relative(url[len(site_url):] or "./", page)
        elif not parts.scheme and not parts.netloc and parts.path.endswith(".ipynb"):
            uri = posixpath.normpath(posixpath.join(page_dir, parts.path))
            target = files.get_file_from_path(uri)
            if target is None:
                raise PluginError(f"{page.file.src_uri}: link to {url}, but no notebook {uri}")
            new = _relative(target.url, page) + fragment
        else:
            return match.group(0)
        return match.group(1) + html.escape(new) + match.group(3)

    return _HREF.sub(replace, content)


def _matching_div_end(content: str, start: int) -> int:
    """Index just past the ``</div>`` that closes the ``<div`` at ``start``."""
    depth = 0
    for match in _DIV.finditer(content, start):
        depth += 1 if match.group(0) == "<div" else -1
        if depth == 0:
            return match.end()
    raise PluginError("unbalanced <div> in a notebook page")


_CELL = re.compile(r'<div (?:id="[^"]*" )?class="jp-Cell ')
_SOLUTION_CLASS = re.compile(rf'class="[^"]*\bcelltag_{SOLUTION_TAG}\b')


def collapse_solutions(content: str) -> str:
    """Wrap each run of consecutive cells tagged ``solution`` in one closed ``<details>``.

    A solution is often code, its output and a sentence about that output:
    the reader opens them together, as one "Solution".
    """
    cells = []  # (start, end, is_solution) of every cell, in order
    position = 0
    for match in _CELL.finditer(content):
        if match.start() < position:
            continue  # a cell inside a cell: not produced by nbconvert, but be safe
        end = _matching_div_end(content, match.start())
        cells.append((match.start(), end, bool(_SOLUTION_CLASS.search(content, match.start(), end))))
        position = end
    groups: list[list[int]] = []  # [start, end] of each run of solution cells
    for start, end, is_solution in cells:
        if not is_solution:
            continue
        if groups and not content[groups[-1][1]:start].strip():
            groups[-1][1] = end
        else:
            groups.append([start, end])
    out, position = [], 0
    for start, end in groups:
        out += [content[position:start],
                '<details class="success nb-solution"><summary>Solution</summary>',
                content[start:end], "</details>"]
        position = end
    out.append(content[position:])
    return "".join(out)


def _badge(config: MkDocsConfig, page: Page) -> str:
    badge = _relative(BADGE, page)
    notebook = f"{EXAMPLES}/{page.file.src_uri}"
    name = posixpath.basename(page.file.src_uri)  # include_source puts it next to the page
    return (
        '<p class="nb-badges">'
        f'<a class="nb-colab" href="{html.escape(colab_url(config, notebook))}" '
        f'title="Run this page\'s notebook on Google Colab"><img alt="Open in Colab" src="{badge}"></a> '
        f'<a class="md-button nb-download" href="{name}" download="{name}" '
        f'title="The notebook of this page, with its outputs">Download notebook</a></p>'
    )


def _plain_toc_titles(items) -> None:
    """``$T = 0$`` in a heading reads "T = 0" in the table of contents (no KaTeX there)."""
    for item in items:
        item.title = re.sub(r"\$([^$]+)\$", r"\1", item.title)
        _plain_toc_titles(item.children)


def on_page_content(content: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    if not _is_notebook_page(page):
        return content
    content = _MATHJAX.sub("", content)
    content = _MERMAID.sub("", content)
    content = rewrite_links(content, page, files, config.site_url or "")
    content = collapse_solutions(content)
    _plain_toc_titles(page.toc)
    heading = re.search(r"</h1>", content)
    if heading is None:
        raise PluginError(f"{EXAMPLES}/{page.file.src_uri} has no title (a first Markdown cell with '# Title')")
    footer = environment_footer(config, page)
    return content[: heading.end()] + _badge(config, page) + content[heading.end():] + footer


# --- page weight ----------------------------------------------------------------------------


def on_post_page(output: str, page: Page, config: MkDocsConfig) -> str:
    """Move the notebook's inline styles into a shared stylesheet."""
    if not _is_notebook_page(page):
        return output
    blocks = _STYLE.findall(output)
    if not blocks:
        return output
    css = "\n".join(blocks)
    name = f"{STYLES}/{hashlib.sha256(css.encode()).hexdigest()[:16]}.css"
    target = Path(config.site_dir) / name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(css, encoding="utf-8")
    first = _STYLE.search(output)
    assert first is not None
    link = f'<link rel="stylesheet" href="{_relative(name, page)}">'
    head, tail = output[: first.start()], output[first.start():]
    return head + link + _STYLE.sub("", tail)
