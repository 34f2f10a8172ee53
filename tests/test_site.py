"""The built site (``mkdocs build --strict``, fixture ``built_site``) is self-contained and whole.

* Nothing it loads comes from another host: no ``src=`` , stylesheet, icon or
  preload ``href``, CSS ``url()`` or ``@import``, or JavaScript fetch/import
  pointing elsewhere. Plain ``<a href>`` links to other sites are fine.
* Every internal link, resource and anchor exists.
* Every page of the navigation exists; every notebook page has its Colab badge
  (a local image) and its download button.
* Pages link to the API entries of the functions they use, and the API
  reference links back to the pages.

Each checker is a plain function with a self-check that it flags a planted
problem, so that a silently broken checker cannot pass.
"""

from __future__ import annotations

import ast
import importlib
import json
import posixpath
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]

# --- what a page loads -----------------------------------------------------------------

LOADING_RELS = {
    "stylesheet", "icon", "shortcut", "apple-touch-icon", "mask-icon", "preload", "modulepreload",
    "prefetch", "preconnect", "dns-prefetch", "manifest", "prerender",
}
SRC_ATTRIBUTES = {"src", "poster", "data", "background", "lowsrc", "dynsrc"}
CSS_URL = re.compile(r"""url\(\s*(['"]?)([^'")]*)\1\s*\)""", re.IGNORECASE)
CSS_IMPORT = re.compile(r"""@import\s+(['"])([^'"]+)\1""", re.IGNORECASE)
QUOTE = r"""["'`]"""
JS_LOADS = [
    re.compile(p)
    for p in (
        rf"\bfetch\(\s*{QUOTE}([^\"'`]+)",
        rf"\bimport\(\s*{QUOTE}([^\"'`]+)",
        rf"\bimport\s+[\w{{}}\s,*$]*?\bfrom\s*{QUOTE}([^\"'`]+)",
        rf"\bimport\s*{QUOTE}([^\"'`]+)",
        rf"\bimportScripts\(\s*{QUOTE}([^\"'`]+)",
        rf"\bnew\s+(?:Shared)?Worker\(\s*{QUOTE}([^\"'`]+)",
        rf"\bnew\s+(?:WebSocket|EventSource)\(\s*{QUOTE}([^\"'`]+)",
        rf"\bsendBeacon\(\s*{QUOTE}([^\"'`]+)",
        rf"\.open\(\s*{QUOTE}[A-Za-z]+{QUOTE}\s*,\s*{QUOTE}([^\"'`]+)",
        rf"\.(?:src|href)\s*=\s*{QUOTE}([^\"'`]+)",
        rf"\bsetAttribute\(\s*{QUOTE}(?:src|href){QUOTE}\s*,\s*{QUOTE}([^\"'`]+)",
    )
]
# A string that starts with an absolute URL: "https://..." or "//host.tld/...".
JS_ANY_URL = re.compile(r"""["'`]((?:https?://|//[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)+[/:])[^"'`\s]*)""")


def is_external(url: str) -> bool:
    url = url.strip()
    return bool(re.match(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*:)?//", url)) and not url.startswith("file:")


def css_loads(css: str) -> list[str]:
    return [m.group(2) for m in CSS_URL.finditer(css)] + [m.group(2) for m in CSS_IMPORT.finditer(css)]


def js_loads(js: str) -> list[str]:
    return [m.group(1) for pattern in JS_LOADS for m in pattern.finditer(js)]


class _Page(HTMLParser):
    """Collects what an HTML (or SVG) document loads and links to, and its anchors."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.loads: list[str] = []
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.classes: set[str] = set()
        self._in: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): (v or "") for k, v in attrs}
        for key in ("id", "name"):
            if a.get(key) and (key == "id" or tag == "a"):
                self.ids.add(a[key])
        self.classes.update(a.get("class", "").split())
        for key in SRC_ATTRIBUTES & a.keys():
            if not (tag == "object" and key != "data") and a[key]:
                self.loads.append(a[key])
        if "srcset" in a:
            self.loads += [part.strip().split()[0] for part in a["srcset"].split(",") if part.strip()]
        if tag == "link" and "href" in a:
            rels = set(a.get("rel", "").lower().split())
            (self.loads if rels & LOADING_RELS else self.links).append(a["href"])
        if tag in ("image", "use", "feimage"):
            for key in ("href", "xlink:href"):
                if a.get(key):
                    self.loads.append(a[key])
        if tag in ("a", "area") and "href" in a:
            self.links.append(a["href"])
        if tag == "meta" and a.get("http-equiv", "").lower() == "refresh":
            self.loads.append(a.get("content", "").split("url=")[-1])
        if "style" in a:
            self.loads += css_loads(a["style"])
        if tag in ("script", "style") and "src" not in a:
            self._in, self._text = tag, []

    def handle_data(self, data: str) -> None:
        if self._in:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == self._in:
            text = "".join(self._text)
            self.loads += css_loads(text) if tag == "style" else js_loads(text)
            self._in = None


def parse_html(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    return page


# Absolute URLs that the JavaScript of the theme and of KaTeX mention but that
# the built site never requests. Each entry: (file pattern, URL prefix, why).
INERT_JS_URLS = [
    ("*", "http://www.w3.org/", "XML namespace names (createElementNS), never fetched"),
    ("bundle.*.js", "https://api.github.com/", "Material's repository widget: only with repo_url, which we never set"),
    ("bundle.*.js", "https://${", "Material's GitLab repository widget: only with repo_url"),
    ("bundle.*.js", "https://unpkg.com/mermaid", "loaded only on a page with a Mermaid diagram: there are none"),
    ("bundle.*.js", "https://unpkg.com/resize-observer-polyfill",
     "loaded only by browsers without ResizeObserver (none since 2020)"),
    ("bundle.*.js", "https://clipboardjs.com/", "licence comment"),
    ("bundle.*.js", "https://bit.ly/", "text of an error message"),
    ("*lunr*.js", "http://lunrjs.com", "licence comment"),
    ("*lunr*.js", "http://tartarus.org/", "licence comment"),
    ("search.*.js", "http://lunrjs.com", "licence comment"),
    ("search.*.js", "http://tartarus.org/", "licence comment"),
]


def _inert(path: Path, url: str) -> bool:
    return any(path.match(pattern) and url.startswith(prefix) for pattern, prefix, _ in INERT_JS_URLS)


def external_loads(site: Path) -> list[str]:
    """``file: url`` for every resource of another host that the site would load."""
    found = []
    for path in sorted(site.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(site).as_posix()
        suffix = path.suffix.lower()
        if suffix in (".html", ".htm", ".svg"):
            urls = parse_html(path.read_text(encoding="utf-8", errors="replace")).loads
        elif suffix == ".css":
            urls = css_loads(path.read_text(encoding="utf-8", errors="replace"))
        elif suffix in (".js", ".mjs"):
            js = path.read_text(encoding="utf-8", errors="replace")
            urls = js_loads(js) + [u for u in (m.group(1) for m in JS_ANY_URL.finditer(js)) if not _inert(path, u)]
        else:
            continue
        found += [f"{rel}: {url}" for url in urls if is_external(url)]
    return found


def test_site_loads_nothing_from_other_hosts(built_site: Path):
    assert external_loads(built_site) == []


def test_external_load_scanner_flags_planted_resources(tmp_path: Path):
    (tmp_path / "page.html").write_text(
        '<html><head><script src="https://cdn.example.com/x.js"></script>'
        '<link rel="stylesheet" href="//fonts.example.com/f.css">'
        '<link rel="canonical" href="https://example.com/page/">'
        '<style>body { background: url("https://img.example.com/b.png") }</style></head>'
        '<body><a href="https://example.com/">a plain link is fine</a>'
        '<img src="local.png" srcset="https://img.example.com/2x.png 2x">'
        "<script>fetch('https://api.example.com/track')</script></body></html>"
    )
    (tmp_path / "style.css").write_text("@import 'https://fonts.example.com/x.css'; p { color: red }")
    (tmp_path / "app.js").write_text('const m = await import("https://esm.example.com/m.js");')
    found = external_loads(tmp_path)
    for url in ("cdn.example.com", "fonts.example.com/f.css", "img.example.com/b.png", "2x.png",
                "api.example.com", "fonts.example.com/x.css", "esm.example.com"):
        assert any(url in f for f in found), (url, found)
    assert not any(f.endswith("https://example.com/") or "canonical" in f for f in found), found
    assert not any("example.com/page/" in f for f in found), found


def test_dormant_theme_loaders_stay_dormant(built_site: Path):
    """The conditions under which Material would load from another host never hold."""
    config = (ROOT / "mkdocs.yml").read_text()
    assert not re.search(r"^repo_url\s*:", config, re.MULTILINE)
    for page in built_site.rglob("*.html"):
        parsed = parse_html(page.read_text(encoding="utf-8"))
        assert "mermaid" not in parsed.classes, page
        assert 'data-md-component="source"' not in page.read_text(encoding="utf-8"), page


# --- internal links and anchors --------------------------------------------------------------


def _site_path() -> str:
    text = (ROOT / "mkdocs.yml").read_text()
    match = re.search(r"^site_url:\s*(\S+)", text, re.MULTILINE)
    return urlsplit(match.group(1)).path.rstrip("/") + "/" if match else "/"


#: The path of site_url ("/llmsforme/"): the site's root once published.
SITE_PATH = _site_path()


def _target(site: Path, page: Path, url: str) -> Path | None:
    """The file of the site that ``url`` (relative to ``page``) points to."""
    parts = urlsplit(url)
    path = unquote(parts.path)
    if not path:
        return page
    if path.startswith(SITE_PATH):
        path = "/" + path[len(SITE_PATH):]  # an absolute link (404.html) under site_url's path
    base = "/" + posixpath.dirname(page.relative_to(site).as_posix())
    joined = posixpath.normpath(path if path.startswith("/") else posixpath.join(base, path))
    candidate = site / joined.lstrip("/")
    if candidate.is_dir():
        candidate = candidate / "index.html"
    return candidate


def broken_links(site: Path) -> list[str]:
    anchors: dict[Path, set[str]] = {}

    def ids(path: Path) -> set[str]:
        if path not in anchors:
            anchors[path] = parse_html(path.read_text(encoding="utf-8", errors="replace")).ids
        return anchors[path]

    problems = []
    for page in sorted(site.rglob("*")):
        if page.suffix == ".html":
            parsed = parse_html(page.read_text(encoding="utf-8", errors="replace"))
            urls = parsed.links + parsed.loads
        elif page.suffix == ".css":
            urls = css_loads(page.read_text(encoding="utf-8", errors="replace"))
        else:
            continue
        for url in urls:
            if not url or is_external(url) or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", url):
                continue  # other sites, mailto:, data:, javascript:...
            target = _target(site, page, url)
            rel = page.relative_to(site).as_posix()
            if target is None or not target.is_file():
                problems.append(f"{rel}: {url} (no such file)")
                continue
            fragment = unquote(urlsplit(url).fragment)
            if fragment and target.suffix == ".html" and fragment not in ids(target):
                problems.append(f"{rel}: {url} (no anchor #{fragment})")
    return problems


def test_internal_links_and_anchors_exist(built_site: Path):
    assert broken_links(built_site) == []


def test_link_checker_flags_planted_problems(tmp_path: Path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "index.html").write_text('<h1 id="top">A</h1><a href="../b/#missing">b</a>')
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "index.html").write_text(
        '<h2 id="here">B</h2><a href="../a/#top">ok</a><a href="../nowhere/">broken</a>'
        '<img src="../img/missing.png"><a href="#here">ok</a><a href="https://example.com/x">ok</a>'
    )
    (tmp_path / "s.css").write_text("@font-face { src: url(fonts/gone.woff2) }")
    found = broken_links(tmp_path)
    assert sorted(f.split(": ")[1] for f in found) == sorted(
        ["../b/#missing (no anchor #missing)", "../nowhere/ (no such file)",
         "../img/missing.png (no such file)", "fonts/gone.woff2 (no such file)"]
    ), found


# --- navigation -------------------------------------------------------------------------------


def load_config() -> dict:
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda *args: None)
    return yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=Loader)  # noqa: S506


def nav_pages(nav: list) -> list[str]:
    pages = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        if isinstance(value, list):
            pages += nav_pages(value)
        elif isinstance(value, str) and not is_external(value):
            pages.append(value)
    return pages


def missing_nav_pages(pages: list[str], docs: Path, examples: Path) -> list[str]:
    """Nav entries that are neither a page in docs/ nor a notebook (``x.ipynb``) in examples/."""
    return [
        page for page in pages
        if not (page.endswith(".md") and (docs / page).is_file())
        and not (page.endswith(".ipynb") and (examples / page).is_file())
    ]


def test_every_nav_page_exists_and_is_built(built_site: Path):
    pages = nav_pages(load_config()["nav"])
    assert len(pages) >= 30
    assert missing_nav_pages(pages, ROOT / "docs", ROOT / "examples") == []
    for page in pages:
        stem = page.rsplit(".", 1)[0]
        built = built_site / (stem[: -len("index")] if stem.endswith("index") else stem + "/") / "index.html"
        assert built.is_file(), page


def test_nav_checker_flags_a_missing_page(tmp_path: Path):
    (tmp_path / "docs" / "part-1").mkdir(parents=True)
    (tmp_path / "examples" / "part-1").mkdir(parents=True)
    (tmp_path / "docs" / "index.md").write_text("# Home")
    (tmp_path / "examples" / "part-1" / "nb.ipynb").write_text("{}")
    nav = [{"Home": "index.md"},
           {"Part 1": ["part-1/nb.ipynb", {"Gone": "part-1/gone.md"}, "part-1/gone.ipynb", "part-1/nb.md"]}]
    assert missing_nav_pages(nav_pages(nav), tmp_path / "docs", tmp_path / "examples") == [
        "part-1/gone.md", "part-1/gone.ipynb", "part-1/nb.md"]


def test_topic_pages_of_part_1_are_in_the_nav():
    pages = set(nav_pages(load_config()["nav"]))
    for slug in ("what-is-an-llm", "transformers", "language-modeling", "foundation-models", "use-cases",
                 "gpt-series", "hugging-face", "generating-text", "greedy-and-beam-search", "temperature",
                 "top-k-top-p", "temperature-and-top-p", "message-roles", "chat-templates"):
        assert f"part-1/{slug}.md" in pages or f"part-1/{slug}.ipynb" in pages
    assert {"index.md", "overview.md", "playground/index.md", "performance.md"} <= pages
    assert {f"part-{n}/index.md" for n in range(1, 7)} <= pages


# --- notebook pages --------------------------------------------------------------------------

NOTEBOOKS = sorted((ROOT / "examples").rglob("*.ipynb"))


def notebook_page(site: Path, notebook: Path) -> Path:
    return site / notebook.relative_to(ROOT / "examples").with_suffix("") / "index.html"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_page_has_badge_and_download(built_site: Path, notebook: Path):
    import tomllib

    config = load_config()
    rel = notebook.relative_to(ROOT / "examples").with_suffix("")
    html = notebook_page(built_site, notebook).read_text(encoding="utf-8")
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    colab = (f"https://colab.research.google.com/github/"
             f"{config['extra']['repository'].removeprefix('https://github.com/')}"
             f"/blob/v{version}/examples/{rel.as_posix()}.ipynb")
    assert f'href="{colab}"' in html
    assert re.search(r'<img alt="Open in Colab" src="(\.\./)+assets/badges/open-in-colab\.svg"', html)
    assert f'href="{notebook.name}" download="{notebook.name}"' in html
    assert (built_site / rel / notebook.name).read_bytes() == notebook.read_bytes()
    assert "colab-setup" not in html and 'if "google.colab"' not in html  # the setup cell is hidden
    assert "jp-Notebook" in html  # rendered by mkdocs-jupyter


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_page_names_the_environment_of_its_outputs(built_site: Path, notebook: Path):
    """The last line of each notebook page: the date of its outputs, and the lock's versions."""
    import json
    import tomllib

    from llmsforme.environment import execution_date, lock_python, locked_versions

    html = notebook_page(built_site, notebook).read_text(encoding="utf-8")
    line = re.search(r'<p class="notebook-environment">(.*?)</p>', html, re.DOTALL)
    assert line, "no environment line"
    text = line.group(1)
    lock = (ROOT / "requirements.lock").read_text(encoding="utf-8")
    versions = locked_versions(lock)
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    date = execution_date(json.loads(notebook.read_text(encoding="utf-8")))
    assert f"Outputs stored on {date}," in text
    for name, expected in [("Python", lock_python(lock)), ("torch", versions["torch"]),
                           ("transformers", versions["transformers"]), ("llmsforme", version)]:
        assert f"{name} {expected}" in text, (name, text)
    part = notebook.parent.name
    wanted = {"part-2": "peft", "part-3": "openai", "part-5": "diffusers", "part-6": "sentence-transformers"}
    if part in wanted:
        assert f"{wanted[part]} {versions[wanted[part]]}" in text, text


#: Largest notebook page, in bytes of HTML, images (data: URIs) aside.
PAGE_BUDGET = 200_000
_DATA_URI = re.compile(r"data:image/[a-z+.-]+;base64,[A-Za-z0-9+/=\s]+")


def page_weights(site: Path) -> list[tuple[int, str]]:
    """``(bytes without images, page)`` for every notebook page, heaviest first."""
    pages = []
    for notebook in NOTEBOOKS:
        path = notebook_page(site, notebook)
        pages.append((len(_DATA_URI.sub("", path.read_text(encoding="utf-8")).encode()),
                      path.relative_to(site).as_posix()))
    return sorted(pages, reverse=True)


def test_notebook_pages_are_light(built_site: Path):
    weights = page_weights(built_site)
    heaviest, page = weights[0]
    print(f"heaviest notebook page: {page}, {heaviest / 1000:.1f} KB of HTML without images")
    assert heaviest <= PAGE_BUDGET, weights[:3]
    # The Jupyter CSS is one shared stylesheet, not inlined in every page.
    sheets = list((built_site / "assets" / "notebooks").glob("*.css"))
    assert len(sheets) == 1 and sheets[0].stat().st_size > 100_000, sheets
    for notebook in NOTEBOOKS:
        assert "<style" not in notebook_page(built_site, notebook).read_text(encoding="utf-8")


def test_search_finds_notebook_text(built_site: Path):
    index = json.loads((built_site / "search" / "search_index.json").read_text(encoding="utf-8"))
    page = " ".join(doc["title"] + " " + doc["text"] for doc in index["docs"]
                    if doc["location"].startswith("part-1/top-k-top-p/"))
    assert "nucleus sampling" in page and "smallest set of most likely tokens" in page


def test_notebook_pages_load_no_mathjax_or_mermaid(built_site: Path):
    for notebook in NOTEBOOKS:
        html = notebook_page(built_site, notebook).read_text(encoding="utf-8")
        assert "mathjax" not in html.lower() and "mermaid" not in html.lower(), notebook.name


def _imported_names(notebook: Path) -> set[str]:
    names = set()
    for cell in json.loads(notebook.read_text())["cells"]:
        if cell["cell_type"] != "code" or "colab-setup" in cell["metadata"].get("tags", []):
            continue
        source = "".join(cell["source"])
        tree = ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith("%")))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("llmsforme"):
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_pages_link_to_the_api_entries_they_use(built_site: Path, notebook: Path):
    rel = notebook.relative_to(ROOT / "examples").with_suffix("")
    links = parse_html((built_site / rel / "index.html").read_text(encoding="utf-8")).links
    api_anchors = {unquote(urlsplit(link).fragment) for link in links if "/api/" in link}
    missing = []
    for dotted in sorted(_imported_names(notebook)):
        module, name = dotted.rsplit(".", 1)
        obj = getattr(importlib.import_module(module), name)
        if not any(anchor.endswith(f".{name}") for anchor in api_anchors):
            missing.append(f"{dotted} ({getattr(obj, '__module__', '?')})")
    assert missing == [], f"{rel}: no link to the API entry of {missing}"


API_PAGES = sorted(p.stem for p in (ROOT / "docs" / "api").glob("*.md") if p.stem != "index")


@pytest.mark.parametrize("module", API_PAGES)
def test_api_pages_link_back_to_the_course(built_site: Path, module: str):
    html = (built_site / "api" / module / "index.html").read_text(encoding="utf-8")
    links = parse_html(html).links
    assert any(re.search(r"(\.\./)+(part-\d/[\w-]+/|#running-the-examples|index\.html#running)", link)
               or link.endswith("#running-the-examples") for link in links), module
    assert "Taught in" in html
    assert 'class="md-source-file"' in html or "Source code in" in html  # show_source


def test_math_is_rendered_by_the_local_katex(built_site: Path):
    html = (built_site / "part-1" / "temperature" / "index.html").read_text(encoding="utf-8")
    assert "jp-MarkdownCell" in html and "$T$" in html  # left for KaTeX, as Jupyter leaves it for MathJax
    loads = parse_html(html).loads
    assert any(url.endswith("assets/katex/katex.min.js") for url in loads)
    assert any(url.endswith("assets/katex/contrib/auto-render.min.js") for url in loads)
    assert any(url.endswith("assets/katex/katex.min.css") for url in loads)
    assert '"$", right: "$"' in (built_site / "javascripts" / "katex.js").read_text().replace("'", '"')
    fonts = list((built_site / "assets" / "katex" / "fonts").glob("*.woff2"))
    assert len(fonts) >= 15
