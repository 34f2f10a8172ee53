"""MkDocs hook: every notebook in examples/ becomes a page of the site.

``examples/part-1/temperature.ipynb`` is rendered as the page
``part-1/temperature.md`` (URL ``part-1/temperature/``): its Markdown cells are
page text (so admonitions, collapsed solutions, KaTeX math and links to other
pages and to the API reference work as on any page, and MkDocs checks the
links), its code cells become code blocks followed by their stored outputs.
Nothing is executed here: the outputs are the ones stored in the notebook by
``python -m llmsforme.notebooks run examples``.

Each notebook page gets an "Open in Colab" badge (a local image) and a
"Download notebook" button; the notebook itself is copied next to the page.
The repository URL comes from one place, ``extra.repository`` in mkdocs.yml.

A notebook and a hand-written page may not share a path: that is an error.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import posixpath
import re
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.hooks.notebook_pages")

EXAMPLES = "examples"
BADGE = "assets/badges/open-in-colab.svg"
SETUP_TAG = "colab-setup"  # the first cell: installs on Colab, hidden on the site
HIDE_TAGS = {SETUP_TAG, "remove-cell"}
HIDE_INPUT_TAGS = {"remove-input"}
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _repository(config: MkDocsConfig) -> tuple[str, str]:
    extra = config.extra
    repository, branch = extra.get("repository"), extra.get("branch")
    if not repository or not branch:
        raise PluginError("mkdocs.yml needs extra.repository and extra.branch (the notebooks' Colab links)")
    return str(repository).rstrip("/"), str(branch)


def colab_url(config: MkDocsConfig, notebook: str) -> str:
    """Colab's URL for ``notebook`` (a path inside the repository)."""
    repository, branch = _repository(config)
    owner_repo = repository.removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{owner_repo}/blob/{branch}/{notebook}"


def _text(value: str | list[str]) -> str:
    return "".join(value) if isinstance(value, list) else value


def _fence(body: str, classes: str) -> str:
    """A fenced code block that cannot be closed early by backticks in ``body``."""
    longest = max((len(m) for m in re.findall(r"`{3,}", body)), default=2)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks} {{ {classes} }}\n{body.rstrip()}\n{ticks}"


def _output_block(text: str, kind: str) -> str:
    text = ANSI.sub("", text)
    return _fence(text, f".text .nb-output .nb-{kind} .no-copy")


class _Rendered:
    def __init__(self) -> None:
        self.markdown: list[str] = []
        self.images: dict[str, bytes] = {}


def render_notebook(nb: dict, *, page_uri: str, header: str) -> _Rendered:
    """Markdown of a notebook page; image outputs are returned as files."""
    out = _Rendered()
    page_dir = posixpath.dirname(page_uri)
    stem = posixpath.splitext(posixpath.basename(page_uri))[0]
    header_done = False
    for index, cell in enumerate(nb["cells"]):
        tags = set(cell.get("metadata", {}).get("tags", []))
        if tags & HIDE_TAGS:
            continue
        source = _text(cell.get("source", ""))
        if cell["cell_type"] == "markdown":
            if not header_done:
                # The badges go right under the page title (the first heading).
                lines = source.split("\n")
                if lines and lines[0].startswith("# "):
                    source = "\n".join([lines[0], "", header, *lines[1:]])
                else:
                    source = header + "\n\n" + source
                header_done = True
            out.markdown.append(source)
            continue
        if cell["cell_type"] != "code":
            continue
        if not header_done:
            out.markdown.append(header)
            header_done = True
        if source.strip() and not tags & HIDE_INPUT_TAGS:
            out.markdown.append(_fence(source, ".python .nb-input"))
        for number, output in enumerate(cell.get("outputs", [])):
            kind = output.get("output_type")
            if kind == "stream":
                name = "stderr" if output.get("name") == "stderr" else "stdout"
                out.markdown.append(_output_block(_text(output["text"]), name))
            elif kind == "error":
                out.markdown.append(_output_block("\n".join(output.get("traceback", [])), "error"))
            elif kind in ("display_data", "execute_result"):
                data = output.get("data", {})
                meta = output.get("metadata", {})
                if "image/png" in data:
                    raw = base64.b64decode(_text(data["image/png"]))
                    digest = hashlib.sha256(raw).hexdigest()[:10]
                    name = f"figures/{stem}-{index}-{number}-{digest}.png"
                    out.images[posixpath.join(page_dir, name)] = raw
                    size = meta.get("image/png", {}) if isinstance(meta.get("image/png"), dict) else {}
                    attrs = " ".join(f'{k}="{size[k]}"' for k in ("width", "height") if k in size)
                    alt = cell.get("metadata", {}).get("alt", "Figure made by the code above")
                    # The picture links to itself: wide figures can be opened at full size.
                    out.markdown.append(
                        f'<figure class="nb-figure" markdown>\n'
                        f'[![{alt}]({name}){{ {attrs} loading=lazy }}]({name} "Open the figure at full size")\n'
                        f"</figure>"
                    )
                elif "text/markdown" in data:
                    out.markdown.append(f'<div class="nb-output nb-markdown" markdown>\n\n{_text(data["text/markdown"])}\n\n</div>')
                elif "text/html" in data:
                    # Our own outputs (e.g. llmsforme.chat.training_html), kept as HTML.
                    out.markdown.append(f'<div class="nb-output nb-html">\n{_text(data["text/html"]).strip()}\n</div>')
                elif "text/plain" in data:
                    out.markdown.append(_output_block(_text(data["text/plain"]), "result"))
    return out


def _header(config: MkDocsConfig, page_uri: str, notebook: str) -> str:
    page_dir = posixpath.dirname(page_uri)
    badge = posixpath.relpath(BADGE, page_dir or ".")
    download = posixpath.basename(notebook)
    return (
        '<div class="nb-badges" markdown>\n'
        f"[![Open in Colab]({badge})]({colab_url(config, notebook)}){{ .nb-colab title=\"Run this page's notebook on Google Colab\" }}\n"
        f'[:material-download: Download notebook]({download}){{ .md-button .nb-download download="{download}" }}\n'
        "</div>\n"
    )


def notebook_pages(root: Path) -> list[tuple[Path, str]]:
    """(notebook path, page src_uri) for every notebook under examples/."""
    folder = root / EXAMPLES
    pairs = []
    for path in sorted(folder.rglob("*.ipynb")):
        if ".ipynb_checkpoints" in path.parts:
            continue
        pairs.append((path, path.relative_to(folder).with_suffix(".md").as_posix()))
    return pairs


def on_files(files: Files, config: MkDocsConfig) -> Files:
    root = Path(config.config_file_path).parent
    for path, page_uri in notebook_pages(root):
        if files.get_file_from_path(page_uri) is not None:
            raise PluginError(
                f"{EXAMPLES}/{path.relative_to(root / EXAMPLES).as_posix()} would be the page "
                f"{page_uri}, but docs/{page_uri} exists too: remove one of them"
            )
        raw = path.read_bytes()
        nb = json.loads(raw)
        repo_path = path.relative_to(root).as_posix()
        rendered = render_notebook(nb, page_uri=page_uri, header=_header(config, page_uri, repo_path))
        files.append(File.generated(config, page_uri, content="\n\n".join(rendered.markdown) + "\n"))
        files.append(File.generated(config, page_uri[: -len(".md")] + ".ipynb", content=raw))
        for uri, content in rendered.images.items():
            files.append(File.generated(config, uri, content=content))
    return files
