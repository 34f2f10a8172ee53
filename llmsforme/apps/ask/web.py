"""The web page of "Ask the course": one FastAPI route that streams the answer, and one HTML page.

``POST /api/ask`` takes ``{"question": "..."}`` and answers with JSON
lines: first the sources (``{"sources": [...]}``), then the answer's
pieces as they are generated (``{"text": "..."}``), then ``{"done":
true}``. A bad question gets a 400 with ``{"error": {"message": ...}}``;
any other failure a 500 that says only that the server failed (the
traceback goes to the log). Questions are not logged unless
``log_questions`` is set. ``GET /`` serves the page, whose script and
style are served by the app itself: no CDN, nothing loaded from elsewhere.

Taught in: [Shipping it](../part-6/shipping.ipynb); the plan in [From idea to MVP](../part-6/mvp.md).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from importlib.resources import files
from typing import Any

# At module level: FastAPI reads the routes' annotations (``Request``) from
# the module's globals, as strings under ``from __future__ import annotations``.
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from .answer import SITE, Answer, context_messages
from .retrieve import MAX_QUESTION_CHARS, Retriever

__all__ = ["create_ask_app"]

log = logging.getLogger("llmsforme.ask")
STATIC = {"ask.js": "text/javascript", "ask.css": "text/css"}
Generate = Callable[[list[dict[str, str]], list[Any], Callable[[str], None]], Answer]


def _static(name: str) -> str:
    return files("llmsforme.apps.ask").joinpath("static", name).read_text(encoding="utf-8")


def create_ask_app(
    retriever: Retriever,
    generate: Generate,
    *,
    k: int = 3,
    log_questions: bool = False,
    count_tokens: Callable[[str], int] | None = None,
    site: str = SITE,
) -> Any:
    """The FastAPI application: ``generate(messages, hits, on_text)`` writes the answer.

    Generations run one at a time (one model), in a worker thread, and
    stream their text to the client as it comes. ``count_tokens`` measures
    the context budget (default: about 4 characters a token); ``site`` is
    where the source links point (a local copy of the site, say).
    """
    if not isinstance(site, str) or not site.startswith(("http://", "https://")) or not site.endswith("/"):
        raise ValueError(f"site must be an http(s) URL ending in '/', got {site!r}")
    app = FastAPI(title="Ask the course", docs_url=None, redoc_url=None, openapi_url=None)
    one_at_a_time = threading.Lock()

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": {"message": message}}, status_code=status)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return _static("index.html")

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in STATIC:
            return error(404, "no such file")
        return Response(_static(name), media_type=STATIC[name])

    @app.post("/api/ask")
    async def ask(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return error(400, "the request body must be JSON: {\"question\": \"...\"}")
        question = body.get("question") if isinstance(body, dict) else None
        if not isinstance(question, str) or not question.strip():
            return error(400, "question: write a question first")
        if len(question) > MAX_QUESTION_CHARS:
            return error(400, f"question: {len(question):,} characters; the limit is {MAX_QUESTION_CHARS:,}")
        if log_questions:
            log.info("question: %s", question)
        try:
            hits = retriever.search(question, k=k)
        except Exception:  # noqa: BLE001 - the client gets no details, the log gets all
            log.exception("retrieval failed")
            return error(500, "the server failed while searching the course; try again later")
        messages, used = context_messages(question, hits, count_tokens=count_tokens)

        def lines() -> Iterator[bytes]:
            sources = [{"url": site + hit.chunk.url, "page": hit.chunk.url, "title": hit.chunk.title,
                        "heading": hit.chunk.heading} for hit in used]
            yield (json.dumps({"sources": sources}) + "\n").encode()
            pieces: queue.Queue[tuple[str, str]] = queue.Queue()

            def work() -> None:
                with one_at_a_time:
                    try:
                        generate(messages, used, lambda text: pieces.put(("text", text)))
                        pieces.put(("done", ""))
                    except Exception:  # noqa: BLE001
                        log.exception("generation failed")
                        pieces.put(("error", "the server failed while writing the answer"))

            threading.Thread(target=work, daemon=True).start()
            while True:
                kind, value = pieces.get()
                if kind == "text":
                    yield (json.dumps({"text": value}) + "\n").encode()
                elif kind == "done":
                    yield b'{"done": true}\n'
                    return
                else:
                    yield (json.dumps({"error": {"message": value}}) + "\n").encode()
                    return

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    return app
