""""Ask the course": retrieval-augmented answers from the course's own pages (Part 6).

The corpus (:mod:`.corpus`) cuts the pages into chunks that know their
address on the site, and reads the glossary's terms; the index (:mod:`.index`) embeds them in DuckDB and
indexes their words in SQLite's FTS5; the retriever (:mod:`.retrieve`)
finds the chunks that answer a question.

Taught in: [Part 6](../part-6/index.md).
"""

from .corpus import Chunk, Term, chunk_markdown, corpus_hash, load_corpus, load_glossary, page_path, slugify
from .index import Index, IndexProblem, build_index, course_index, embedding_model, open_index
from .retrieve import METHODS, Hit, Retriever, keyword_query

__all__ = [
    "METHODS",
    "Chunk",
    "Hit",
    "Index",
    "IndexProblem",
    "Retriever",
    "Term",
    "build_index",
    "chunk_markdown",
    "corpus_hash",
    "course_index",
    "embedding_model",
    "keyword_query",
    "load_corpus",
    "load_glossary",
    "open_index",
    "page_path",
    "slugify",
]
