"""Running the server: in the foreground (``llmsforme serve``) or in a background thread.

:func:`start_server` is what the notebooks and tests use: it starts
uvicorn in a thread of the current process, on a free port of 127.0.0.1,
waits until it answers, and returns a :class:`BackgroundServer` to stop
it. :func:`serve` is the command line's: it runs until Ctrl+C.

Taught in: [Your first call](../part-3/first-call.ipynb).
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from typing import Any

import uvicorn

from .app import DEFAULT_MAX_TOKENS, RateLimit, create_app
from .engine import DEFAULT_MAX_BATCH, Engine

__all__ = ["BackgroundServer", "start_server", "start_app", "serve", "serve_app", "LOOPBACK"]

#: Addresses only this machine can reach.
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket; port 0 lets the system pick a free one."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int in [0, 65535] (0: any free port), got {port!r}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    sock.listen(128)
    return sock


def _base_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}/v1"


class BackgroundServer:
    """The server running in a thread of this process. Use it as a context manager, or call :meth:`stop`.

    ``base_url`` is what OpenAI's client takes: ``OpenAI(base_url=server.base_url, api_key=...)``.
    """

    def __init__(self, app: Any, engine: Engine | None, sock: socket.socket) -> None:
        self.app = app
        self.engine = engine
        self.base_url = _base_url(sock)
        self.url = self.base_url.removesuffix("/v1") + "/"
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="llmsforme-server", daemon=True
        )
        self._sock = sock
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the server did not start (see the log above)")
            time.sleep(0.02)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop answering, finish the request in progress, and free the port."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._sock.close()
        if self.engine is not None:
            self.engine.close()

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<BackgroundServer {'running' if self.running else 'stopped'}>"


def _vision(model: Any, tokenizer: Any) -> Any:
    """The vision model on the same weights; ValueError if ``model`` cannot carry it."""
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel):
        raise ValueError(
            f"vision needs the course model in transformers (it reads images through inputs_embeds), "
            f"got {type(model).__name__}: serve it with vision=False"
        )
    width = model.get_input_embeddings().embedding_dim
    from ..multimodal.vision_language import load_digits_vlm

    vlm = load_digits_vlm(model=model, tokenizer=tokenizer)
    if width != vlm.projector.width:
        raise ValueError(f"vision needs the course model (embeddings of {vlm.projector.width}), got a model "
                         f"with embeddings of {width}: serve it with vision=False")
    return vlm


def _app(
    model: Any, tokenizer: Any, api_key: str | None, max_tokens_limit: int, rate_limit: Any, vision: bool = False,
    max_batch: int | None = DEFAULT_MAX_BATCH,
) -> tuple[Any, Engine]:
    if not isinstance(vision, bool):
        raise TypeError(f"vision must be True or False, got {vision!r}")
    if model is None or tokenizer is None:
        if model is not None or tokenizer is not None:
            raise ValueError("pass both model and tokenizer, or neither (for the course model)")
        from ..model_source import load_model

        model, tokenizer = load_model(progress=False)
    if isinstance(rate_limit, int) and not isinstance(rate_limit, bool):
        rate_limit = RateLimit(rate_limit)
    if max_batch is not None and (isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1):
        raise ValueError(f"max_batch must be an int >= 1, or None for one request at a time; got {max_batch!r}")
    engine = Engine(model, tokenizer, vision=_vision(model, tokenizer) if vision else None,
                    batching=max_batch is not None, max_batch=max_batch or 1)
    model_format = "gguf" if type(model).__module__.startswith("llama_cpp") else "pytorch"
    app = create_app(
        engine, api_key=api_key, max_tokens_limit=max_tokens_limit, rate_limit=rate_limit, model_format=model_format
    )
    return app, engine


def start_server(
    model: Any = None,
    tokenizer: Any = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    api_key: str | None = None,
    max_tokens_limit: int = DEFAULT_MAX_TOKENS,
    rate_limit: RateLimit | int | None = None,
    vision: bool = False,
    max_batch: int | None = DEFAULT_MAX_BATCH,
) -> BackgroundServer:
    """Start the OpenAI-compatible server in the background; return it once it answers.

    Args:
        model, tokenizer: what to serve (default: the course model, loaded offline).
        host: the address to listen on; the default only accepts this machine.
        port: 0 picks a free port (read it from ``base_url``).
        api_key, max_tokens_limit, rate_limit: see :func:`~llmsforme.server.create_app`;
            an int ``rate_limit`` means that many requests per minute.
        vision: also serve the course model reading images, as
            ``smollm2-135m-instruct-vision`` (:func:`~llmsforme.multimodal.load_digits_vlm`,
            on the same weights); it needs the model in transformers.
        max_batch: most requests that share one forward pass (continuous
            batching, :class:`~llmsforme.batching.ContinuousBatcher`); ``None``
            runs one request at a time. A llama.cpp model always runs one at a time.

    Example:
        >>> from openai import OpenAI
        >>> with start_server() as server:
        ...     client = OpenAI(base_url=server.base_url, api_key="not-needed")
        ...     [model.id for model in client.models.list()]
        ['smollm2-135m-instruct']
    """
    app, engine = _app(model, tokenizer, api_key, max_tokens_limit, rate_limit, vision, max_batch)
    return BackgroundServer(app, engine, _bind(host, port))


def serve(
    model: Any = None,
    tokenizer: Any = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    max_tokens_limit: int = DEFAULT_MAX_TOKENS,
    rate_limit: RateLimit | int | None = None,
    log_level: str = "info",
    vision: bool = False,
    max_batch: int | None = DEFAULT_MAX_BATCH,
) -> None:
    """Serve in the foreground until Ctrl+C (the ``llmsforme serve`` command, which turns ``vision`` on)."""
    sock = _bind(host, port)
    if host not in LOOPBACK and api_key is None:
        print(
            f"llmsforme: warning: listening on {host} without an API key (--api-key-env): "
            "anyone who can reach this machine can use the server.",
            file=sys.stderr,
        )
    # One line per request (counts and times, never the messages) on stderr.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("llmsforme.server")
    logger.addHandler(handler)
    logger.setLevel(log_level.upper())
    app, engine = _app(model, tokenizer, api_key, max_tokens_limit, rate_limit, vision, max_batch)
    names = "'smollm2-135m-instruct'" + (" and 'smollm2-135m-instruct-vision'" if vision else "")
    print(f"Serving the course model as {names} at {_base_url(sock)}", flush=True)
    print("OpenAI-compatible: OpenAI(base_url=<that URL>, api_key=...). Ctrl+C stops.", flush=True)
    try:
        uvicorn.Server(uvicorn.Config(app, log_level=log_level)).run(sockets=[sock])
    finally:
        sock.close()
        engine.close()


def start_app(app: Any, *, host: str = "127.0.0.1", port: int = 0) -> BackgroundServer:
    """Serve any ASGI ``app`` in the background (a test, a notebook); its address is ``url``.

    Example:
        >>> from fastapi import FastAPI
        >>> import httpx
        >>> hello = FastAPI()
        >>> _ = hello.get("/")(lambda: {"hello": "reader"})
        >>> with start_app(hello) as server:
        ...     httpx.get(server.url).json()
        {'hello': 'reader'}
    """
    return BackgroundServer(app, None, _bind(host, port))


def serve_app(app: Any, *, host: str = "127.0.0.1", port: int = 8000, name: str = "the app") -> None:
    """Serve any ASGI ``app`` in the foreground until Ctrl+C, printing its address first.

    Used by ``llmsforme ask --serve``; ``port=0`` picks a free port.
    """
    sock = _bind(host, port)
    if host not in LOOPBACK:
        print(f"llmsforme: warning: {name} listens on {host}: anyone who can reach this machine can use it.",
              file=sys.stderr)
    print(f"Serving {name} at {_base_url(sock).removesuffix('/v1')}/ (Ctrl+C stops)", flush=True)
    try:
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    finally:
        sock.close()
