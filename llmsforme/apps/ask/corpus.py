"""The course's own pages as a corpus: chunks cut at headings, each with its page and anchor.

Markdown pages (``docs/**/*.md``) and notebooks (``examples/**/*.ipynb``,
their Markdown and code cells, never outputs) are split at every heading
of level 1 to 3, then at blank lines when a section is longer than
``max_chars``. A page's measured figures (``{{ figure(...) }}``) are read
from their data files first, as the site does (:mod:`llmsforme.page_figures`).
Every chunk keeps the address of its section on the site
(``part-1/top-k-top-p/#top-p``), so that an answer can cite it.

The glossary (``docs/glossary.md``) is not cut into chunks: each of its
entries explains a term in everyday words and links to the pages that
teach it, and the search reads it as a list of :class:`Term` (a reader's
words pointing at pages, :mod:`.retrieve`).

Taught in: [Embeddings and retrieval](../part-6/embeddings.ipynb); the plan in [From idea to MVP](../part-6/mvp.md).
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ...page_figures import substitute_figures

__all__ = [
    "GLOSSARY", "NOT_SEARCHED_TAG", "Chunk", "Term", "chunk_markdown", "corpus_hash", "load_corpus", "load_glossary",
    "page_path", "page_summaries", "parse_glossary", "rechunk", "slugify",
]

#: The course's repository, when the package runs from a checkout of it.
REPOSITORY = Path(__file__).resolve().parents[3]
#: The glossary: its terms are read by :func:`load_glossary`, not cut into chunks.
GLOSSARY = "docs/glossary.md"
#: Files left out of the corpus: the generated API reference (not course text), and the glossary.
SKIPPED = ("docs/api/", GLOSSARY)
#: Notebook cells with this tag stay out of the corpus: Part 6's pages quote
#: some of the evaluation questions in code, and indexed, such a question
#: would find its own quote (``tests/test_ask.py`` checks that none is left).
NOT_SEARCHED_TAG = "quotes-questions"
HEADING = re.compile(r"^(#{1,3})\s+(.+?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


@dataclass(frozen=True)
class Chunk:
    """One section (or part of one) of a course page."""

    page: str  #: the page's path on the site, e.g. ``"part-1/top-k-top-p/"``
    anchor: str  #: the section's id on that page ("" for the top of the page)
    title: str  #: the page's title
    heading: str  #: the section's heading
    text: str  #: the section's text (Markdown and code)
    source: str  #: the file it comes from, relative to the repository
    parents: str = ""  #: the headings above the section's own, below the title ("A > B"), if any

    @property
    def url(self) -> str:
        """The section's address on the site, relative to its root."""
        return f"{self.page}#{self.anchor}" if self.anchor else self.page

    @property
    def where(self) -> str:
        """The section's place: page title, the headings above it, its heading ("Title > A > B")."""
        steps = [self.title, *(self.parents.split(" > ") if self.parents else ()), self.heading]
        return " > ".join(step for i, step in enumerate(steps) if step and (i == 0 or step != steps[i - 1]))

    def for_embedding(self) -> str:
        """What the retrievers read: where the text sits, then the text."""
        return f"{self.where}\n{self.text}"


def slugify(heading: str) -> str:
    """The id MkDocs gives a heading (Python-Markdown's ``toc`` slugify on its plain text).

    Example::

        >>> slugify("Top-k and top-p (nucleus) sampling")
        'top-k-and-top-p-nucleus-sampling'
        >>> slugify("The `openai` client, [step by step](x.md)")
        'the-openai-client-step-by-step'
    """
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def page_path(relative: str) -> str:
    """A source file's page on the site: ``docs/part-1/index.md`` -> ``part-1/``.

    Example::

        >>> page_path("examples/part-2/lora.ipynb"), page_path("docs/index.md"), page_path("docs/performance.md")
        ('part-2/lora/', '', 'performance/')
    """
    path = Path(relative)
    parts = path.parts[1:]  # without docs/ or examples/
    stem = path.stem
    folder = "/".join(parts[:-1])
    if stem == "index":
        return f"{folder}/" if folder else ""
    return f"{folder}/{stem}/" if folder else f"{stem}/"


def _sections(markdown: str) -> Iterator[tuple[int, str, list[str], tuple[str, ...]]]:
    """``(level, heading, lines, parents)`` for each part of a Markdown text (level 0: before any
    heading); ``parents`` are the headings of level 2 and deeper above this one."""
    level, heading, lines = 0, "", []
    open_headings: dict[int, str] = {}
    fenced = False
    for line in markdown.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        match = None if fenced else HEADING.match(line)
        if match:
            yield level, heading, lines, tuple(open_headings[n] for n in sorted(open_headings) if 1 < n < level)
            level, heading, lines = len(match.group(1)), match.group(2).strip(), []
            open_headings = {n: h for n, h in open_headings.items() if n < level} | {level: heading}
        else:
            lines.append(line)
    yield level, heading, lines, tuple(open_headings[n] for n in sorted(open_headings) if 1 < n < level)


def _split(text: str, max_chars: int) -> list[str]:
    """Cut a long text at blank lines (never inside a code block) into parts of at most ``max_chars``."""
    blocks, current, fenced = [], [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        if not line.strip() and not fenced and current:
            blocks.append("\n".join(current))
            current = []
        elif line.strip() or current:
            current.append(line)
    if current:
        blocks.append("\n".join(current))
    parts, part = [], ""
    for block in blocks:
        if part and len(part) + len(block) + 2 > max_chars:
            parts.append(part)
            part = block
        else:
            part = f"{part}\n\n{block}" if part else block
    if part:
        parts.append(part)
    return parts


def chunk_markdown(markdown: str, *, page: str, source: str, max_chars: int = 1200) -> list[Chunk]:
    """Cut one page's Markdown into chunks at headings of level 1 to 3.

    Example::

        >>> chunks = chunk_markdown("# Sampling\\nIntro.\\n## Top-p\\nKeeps the smallest set.", page="p/", source="x.md")
        >>> [(c.url, c.heading, c.text) for c in chunks]
        [('p/#sampling', 'Sampling', 'Intro.'), ('p/#top-p', 'Top-p', 'Keeps the smallest set.')]
    """
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 100:
        raise ValueError(f"max_chars must be an int >= 100, got {max_chars!r}")
    sections = list(_sections(markdown))
    title = next((heading for level, heading, _, _ in sections if level == 1), page or "Home")
    chunks, seen = [], {}
    for level, heading, lines, parents in sections:
        anchor = ""
        if level:
            slug = slugify(heading)
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            anchor = slug if count == 0 else f"{slug}_{count}"  # MkDocs' rule for repeated headings
        body = "\n".join(line for line in lines if not line.startswith(":::")).strip()
        if not body:
            continue
        for part in _split(body, max_chars):
            chunks.append(Chunk(page, anchor, title, heading or title, part, source, " > ".join(parents)))
    return chunks


def _notebook_markdown(path: Path) -> str:
    """A notebook as one Markdown text: its Markdown cells, and its code cells fenced; no outputs,
    no setup cell, and no cell tagged :data:`NOT_SEARCHED_TAG`."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    parts = []
    for cell in cells:
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        tags = cell.get("metadata", {}).get("tags", [])
        if "colab-setup" in tags or NOT_SEARCHED_TAG in tags or not source.strip():
            continue
        parts.append(source if cell["cell_type"] == "markdown" else f"```python\n{source}\n```")
    return "\n\n".join(parts)


def _course_files(root: Path) -> list[Path]:
    pages = sorted((root / "docs").rglob("*.md"))
    notebooks = sorted(path for path in (root / "examples").rglob("*.ipynb") if ".ipynb_checkpoints" not in path.parts)
    return [
        path for path in pages + notebooks if not path.relative_to(root).as_posix().startswith(SKIPPED)
    ]


def load_corpus(root: str | Path | None = None, *, max_chars: int = 1200) -> list[Chunk]:
    """Every chunk of the course: from ``root`` (a checkout of the course's repository),
    or, with ``root=None``, from the copy that ships in the package
    (``llmsforme/data/ask_corpus.jsonl``, written by ``scripts/ask_corpus.py``).

    Example::

        >>> chunks = load_corpus()  # the copy in the package
        >>> len(chunks) > 100, "part-1/top-k-top-p/" in {chunk.page for chunk in chunks}
        (True, True)
    """
    if root is None:
        shipped = Path(__file__).resolve().parents[2] / "data" / "ask_corpus.jsonl"
        lines = shipped.read_text(encoding="utf-8").splitlines()
        return [Chunk(**json.loads(line)) for line in lines if line.strip()]
    root = Path(root)
    if not (root / "docs").is_dir() or not (root / "examples").is_dir():
        raise FileNotFoundError(f"{root} is not the course's repository: it needs docs/ and examples/")
    chunks = []
    for path in _course_files(root):
        relative = path.relative_to(root).as_posix()
        if path.suffix == ".ipynb":
            text = _notebook_markdown(path)
        else:  # a page's measured figures, as the site shows them (hooks/page_figures.py)
            text = substitute_figures(path.read_text(encoding="utf-8"), root)
        chunks += chunk_markdown(text, page=page_path(relative), source=relative, max_chars=max_chars)
    return chunks


def rechunk(chunks: Sequence[Chunk], max_chars: int) -> list[Chunk]:
    """The same sections cut to another size: parts of one section are joined, then split again.

    Sections are never merged (a chunk keeps one address on the site), so a
    large ``max_chars`` gives one chunk per section. This is how Part 6
    measures chunk size against retrieval, from the corpus in the package.

    Example::

        >>> chunks = chunk_markdown("# A\\n" + "word " * 100 + "\\n\\n" + "more " * 100, page="p/", source="p.md")
        >>> len(chunks), len(rechunk(chunks, 400)), len(rechunk(chunks, 10_000))
        (1, 2, 1)
    """
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 100:
        raise ValueError(f"max_chars must be an int >= 100, got {max_chars!r}")
    sections: list[tuple[Chunk, list[str]]] = []
    for chunk in chunks:
        if sections and (sections[-1][0].page, sections[-1][0].anchor) == (chunk.page, chunk.anchor):
            sections[-1][1].append(chunk.text)
        else:
            sections.append((chunk, [chunk.text]))
    return [
        replace(first, text=part) for first, texts in sections for part in _split("\n\n".join(texts), max_chars)
    ]


#: Headings that every lesson has, and that say nothing about what a page is about.
COMMON_HEADINGS = ("In the package", "Exercises", "Sources")


def page_summaries(chunks: Iterable[Chunk]) -> dict[str, str]:
    r"""One short text per page: its title, its section headings, and its opening paragraph.

    Embedded as one vector per page, it says what the page as a whole is
    about, which a single section often does not (the hybrid search ranks
    pages by it, :mod:`.retrieve`).

    Example::

        >>> chunks = chunk_markdown("# Top-p\nKeeps the smallest set.\n## On the model\nx\n## Exercises\ny",
        ...                         page="p/", source="p.md")
        >>> page_summaries(chunks)["p/"]
        'Top-p\nOn the model\nKeeps the smallest set.'
    """
    pages: dict[str, list[Chunk]] = {}
    for chunk in chunks:
        pages.setdefault(chunk.page, []).append(chunk)
    summaries = {}
    for page, members in pages.items():
        title = members[0].title
        headings = list(dict.fromkeys(
            c.heading for c in members if c.heading != title and c.heading not in COMMON_HEADINGS
        ))
        opening = next((c.text for c in members if c.heading == title and not c.text.startswith("---")), "")
        summaries[page] = f"{title}\n{'; '.join(headings)}\n{opening}"
    return summaries


def corpus_hash(chunks: Iterable[Chunk], terms: Iterable[Term] = ()) -> str:
    """A fingerprint of the chunks and the glossary's terms: it changes when any page of the course changes."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(json.dumps(asdict(chunk), sort_keys=True).encode())
    for term in terms:  # none: the same fingerprint as before the glossary existed
        digest.update(json.dumps(asdict(term), sort_keys=True).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class Term:
    """A glossary entry: a term, its explanation in everyday words, and the pages that teach it."""

    term: str
    text: str
    pages: tuple[str, ...]

    def for_embedding(self) -> str:
        return f"{self.term}: {self.text}"


_ENTRY = re.compile(r"^- \*\*(?P<term>.+?)\*\*: (?P<body>.*?)(?=^- |^#|\Z)", re.S | re.M)
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


def parse_glossary(markdown: str, *, source: str = GLOSSARY) -> list[Term]:
    r"""The entries of a glossary page: lines ``- **Term**: explanation [Page](page.ipynb)``.

    Links are relative to ``docs/``, as on the page; each becomes the
    page's path on the site. An entry without a link is an error: it would
    point the search nowhere.

    Example::

        >>> parse_glossary("# G\n- **Top-p**: a cut-off on odd words.\n  [Top-k and top-p](part-1/top-k-top-p.ipynb)\n")
        [Term(term='Top-p', text='a cut-off on odd words.', pages=('part-1/top-k-top-p/',))]
    """
    terms = []
    for match in _ENTRY.finditer(markdown):
        body = " ".join(match["body"].split())
        links = [target.split("#")[0] for _, target in _LINK.findall(body)]
        if not links:
            raise ValueError(f"{source}: the entry {match['term']!r} links to no page")
        pages = tuple(dict.fromkeys(page_path(f"docs/{target}") for target in links))
        text = _LINK.sub("", body).strip().rstrip(",").strip()
        terms.append(Term(match["term"], text, pages))
    return terms


def load_glossary(root: str | Path | None = None) -> list[Term]:
    """The glossary's terms: from ``root`` (a checkout of the course) or, with ``root=None``,
    from the copy in the package (``llmsforme/data/ask_glossary.jsonl``, written by
    ``scripts/ask_corpus.py``).

    Example::

        >>> terms = load_glossary()
        >>> next(term.pages for term in terms if term.term == "Temperature")
        ('part-1/temperature/',)
    """
    if root is None:
        shipped = Path(__file__).resolve().parents[2] / "data" / "ask_glossary.jsonl"
        rows = [json.loads(line) for line in shipped.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [Term(row["term"], row["text"], tuple(row["pages"])) for row in rows]
    return parse_glossary((Path(root) / GLOSSARY).read_text(encoding="utf-8"))
