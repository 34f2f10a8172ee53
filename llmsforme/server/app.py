"""The web application: FastAPI routes for OpenAI's API, keys, limits and errors.

:func:`create_app` wires the :class:`~llmsforme.server.engine.Engine` to
``GET /v1/models`` and ``POST /v1/chat/completions`` (plain, or streamed
as server-sent events). Around the routes it checks the API key, applies
the optional rate limit, refuses bodies that are too large, and turns
every failure into OpenAI's error shape. It logs one line per request to
the ``llmsforme.server`` logger (the terminal, under ``llmsforme serve``),
with counts and times but never the messages.

Taught in: [Your first call](../part-3/first-call.ipynb),
[Errors, retries and limits](../part-3/errors.ipynb),
[Security for API apps](../part-3/security.ipynb).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from ..chat import RoleInjectionError
from . import ollama_api
from .engine import Delta, Engine, Finish
from .errors import SERVER_ERROR_MESSAGE, APIError
from .images import BadImage, image_from_base64, image_from_data_url
from .openai_api import (
    MODEL_ID,
    VISION_MODEL_ID,
    ToolCallStream,
    chat_messages,
    chunk,
    completion,
    image_parts,
    parse_request,
    response_schema,
    settings_for,
    tool_options,
)

__all__ = ["create_app", "RateLimit", "MAX_BODY_BYTES", "DEFAULT_MAX_TOKENS"]

log = logging.getLogger("llmsforme.server")

#: Largest request body accepted, in bytes (a prompt that long would not fit the model anyway).
MAX_BODY_BYTES = 1_000_000
_NO_EVENT = object()

#: Default for ``--max-tokens-limit``: the longest reply, and the default ``max_tokens``.
DEFAULT_MAX_TOKENS = 512


class RateLimit:
    """At most ``requests`` requests in any ``window`` seconds (a sliding window).

    Example:
        >>> limit = RateLimit(2, window=60)
        >>> [limit.wait(now=t) for t in (0, 1, 2)]  # the third waits for the first to expire
        [0.0, 0.0, 58.0]
    """

    def __init__(self, requests: int, window: float = 60.0) -> None:
        if isinstance(requests, bool) or not isinstance(requests, int) or requests < 1:
            raise ValueError(f"rate limit must be an int >= 1 request per window, got {requests!r}")
        if not (isinstance(window, (int, float)) and math.isfinite(window) and window > 0):
            raise ValueError(f"rate limit window must be a number of seconds > 0, got {window!r}")
        self.requests = requests
        self.window = float(window)
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def wait(self, now: float | None = None) -> float:
        """Seconds to wait before this request is allowed (0: allowed, and counted)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            while self._times and self._times[0] <= now - self.window:
                self._times.popleft()
            if len(self._times) < self.requests:
                self._times.append(now)
                return 0.0
            return self._times[0] + self.window - now

    def status(self, now: float | None = None) -> tuple[int, float]:
        """Requests still allowed now, and seconds until the oldest counted one expires.

        Example:
            >>> limit = RateLimit(2, window=60)
            >>> limit.wait(now=0), limit.status(now=10)
            (0.0, (1, 50.0))
        """
        now = time.monotonic() if now is None else now
        with self._lock:
            while self._times and self._times[0] <= now - self.window:
                self._times.popleft()
            reset = self._times[0] + self.window - now if self._times else 0.0
            return self.requests - len(self._times), reset


def _fingerprint() -> str:
    """Names the software that generated the reply: same fingerprint, same code and versions."""
    from importlib import metadata

    import torch
    import transformers

    try:
        version = metadata.version("llmsforme")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    stack = f"llmsforme {version}, torch {torch.__version__}, transformers {transformers.__version__}"
    return "fp_" + hashlib.sha256(stack.encode()).hexdigest()[:10]


def _error_response(error: APIError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def create_app(
    engine: Engine,
    *,
    api_key: str | None = None,
    max_tokens_limit: int = DEFAULT_MAX_TOKENS,
    rate_limit: RateLimit | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    model_format: str = "pytorch",
) -> FastAPI:
    """The FastAPI application of the course's server: OpenAI's API, and Ollama's.

    Args:
        engine: generates the replies (see :class:`~llmsforme.server.engine.Engine`).
        api_key: if given, every request must send ``Authorization: Bearer <api_key>``.
        max_tokens_limit: the largest ``max_tokens`` a request may ask, and
            the default when it asks none.
        rate_limit: answer 429, with ``Retry-After``, beyond this many requests.
        max_body_bytes: answer 413 to a larger request body.
        model_format: how the model is stored, for Ollama's ``/api/tags``
            (``"gguf"`` when llama.cpp runs it).

    Example:
        >>> from llmsforme import load_model
        >>> app = create_app(Engine(*load_model()))
        >>> sorted(route.path for route in app.routes if route.path.startswith("/v1"))
        ['/v1/chat/completions', '/v1/models', '/v1/models/{model_id}']
    """
    if api_key is not None and (not isinstance(api_key, str) or not api_key.strip()):
        raise ValueError("api_key must be a non-empty string, or None for no key")
    if isinstance(max_tokens_limit, bool) or not isinstance(max_tokens_limit, int) or max_tokens_limit < 1:
        raise ValueError(f"max_tokens_limit must be an int >= 1, got {max_tokens_limit!r}")
    if rate_limit is not None and not isinstance(rate_limit, RateLimit):
        raise TypeError(f"rate_limit must be a RateLimit or None, got {type(rate_limit).__name__}")

    app = FastAPI(title="llmsforme: an OpenAI-compatible server for the course model", docs_url=None, redoc_url=None)
    app.state.engine = engine
    fingerprint = _fingerprint()
    started = int(time.time())

    @app.exception_handler(APIError)
    async def api_error(request: Request, error: APIError) -> JSONResponse:
        return _error_response(error)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        message = {404: "No such route", 405: "Method not allowed on this route"}.get(error.status_code, error.detail)
        message = f"{message}: {request.method} {request.url.path}"
        if request.url.path.startswith("/api/"):  # Ollama's shape
            return JSONResponse({"error": message}, status_code=error.status_code)
        return _error_response(APIError(error.status_code, message))

    @app.exception_handler(Exception)
    async def server_error(request: Request, error: Exception) -> JSONResponse:
        log.exception("request failed: %s %s", request.method, request.url.path)
        if request.url.path.startswith("/api/"):  # Ollama's shape
            return JSONResponse({"error": SERVER_ERROR_MESSAGE}, status_code=500)
        return _error_response(APIError(500, SERVER_ERROR_MESSAGE, type="server_error"))

    def check_key(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise APIError(
                401,
                "No API key was sent. Send it as 'Authorization: Bearer <key>' "
                "(the openai client does this from api_key or OPENAI_API_KEY).",
                code="invalid_api_key",
            )
        if not hmac.compare_digest(given.strip().encode(), api_key.encode()):
            raise APIError(401, "The API key sent is not this server's key.", code="invalid_api_key")

    def rate_headers() -> dict[str, str]:
        """OpenAI's rate-limit headers: the limit, what is left, when a slot frees up."""
        if rate_limit is None:
            return {}
        remaining, reset = rate_limit.status()
        return {
            "x-ratelimit-limit-requests": str(rate_limit.requests),
            "x-ratelimit-remaining-requests": str(max(0, remaining)),
            "x-ratelimit-reset-requests": f"{reset:.3f}s",
        }

    def check_rate() -> None:
        if rate_limit is None:
            return
        wait = rate_limit.wait()
        if wait > 0:
            headers = {
                **rate_headers(),
                "retry-after": str(math.ceil(wait)),
                "retry-after-ms": str(math.ceil(wait * 1000)),
            }
            raise APIError(
                429,
                f"Rate limit reached: {rate_limit.requests} requests per {rate_limit.window:g} s. "
                f"Try again in {wait:.1f} s.",
                type="requests",
                code="rate_limit_exceeded",
                headers=headers,
            )

    # The vision model is the same weights reading images: listed only when the engine has it.
    served = (MODEL_ID, VISION_MODEL_ID) if engine.vision is not None else (MODEL_ID,)

    def model_card(model_id: str) -> dict[str, Any]:
        return {"id": model_id, "object": "model", "created": started, "owned_by": "llmsforme"}

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict[str, Any]:
        check_key(request)
        return {"object": "list", "data": [model_card(model_id) for model_id in served]}

    @app.get("/v1/models/{model_id}")
    async def retrieve_model(model_id: str, request: Request) -> dict[str, Any]:
        check_key(request)
        if model_id not in served:
            raise _unknown_model(model_id, served)
        return model_card(model_id)

    def image_request(
        model: str, messages: list[dict[str, Any]], images: list[tuple[int, int, Any]], decode: Any, where: str,
        tools: bool,
    ) -> tuple[Any, Any]:
        """The prompt and model of a request with images; ValueError naming the field (``where``) if it cannot be."""
        index, position, data = images[0]
        if model != VISION_MODEL_ID:
            other = f"send images to {VISION_MODEL_ID!r}" if engine.vision is not None else "this server has no vision model"
            raise _ImageProblem(where.format(index, position), "image_not_supported",
                                f"the model {model!r} reads text only: {other}")
        if len(images) > 1:
            index, position, _ = images[1]
            raise _ImageProblem(where.format(index, position), "too_many_images",
                                f"the vision model reads one image per request, got {len(images)}")
        if messages[index]["role"] != "user":
            raise _ImageProblem(where.format(index, position), "invalid_image",
                                f"an image can only be in a user message, not a {messages[index]['role']} one")
        if tools:
            raise _ImageProblem("tools", None, "the vision model does not take tools")
        try:
            image = decode(data)
        except BadImage as error:
            raise _ImageProblem(where.format(index, position), error.code, str(error).rstrip(".")) from None
        return engine.image_prompt(messages, index, image)

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        too_large = APIError(
            413, f"The request body is larger than {max_body_bytes} bytes.", code="request_too_large"
        )
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            raise too_large
        body = bytearray()
        async for piece in request.stream():
            body.extend(piece)
            if len(body) > max_body_bytes:
                raise too_large
        return bytes(body)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        began = time.perf_counter()
        check_key(request)
        check_rate()
        body = parse_request(await read_body(request))
        if body.model not in served:
            raise _unknown_model(body.model, served)
        messages = chat_messages(body.messages)
        tooling = tool_options(body)
        images = image_parts(body.messages)
        image_lm = None
        try:
            if images:
                prompt, image_lm = image_request(
                    body.model, messages, images, image_from_data_url, "messages[{}].content[{}]", tooling is not None
                )
            else:
                prompt = engine.prompt(messages, tooling[0] if tooling else None)
        except _ImageProblem as problem:
            raise APIError.bad_request(f"{problem.where}: {problem}.", param=problem.where, code=problem.code) from None
        except RoleInjectionError as error:
            # The package's advice (after ";") is for Python callers; an API caller can only edit the text.
            reason = str(error).split(";")[0]
            raise APIError.bad_request(f"{reason}: remove it from the message.", param="messages") from None
        except (ValueError, TypeError) as error:
            raise APIError.bad_request(str(error), param="messages") from None
        settings = settings_for(body, len(prompt.ids), max_tokens_limit, engine.context_window)
        schema = response_schema(body)
        if schema is not None:
            try:
                constraint = engine.json_constraint(schema)
            except ValueError as error:
                raise APIError.bad_request(f"Invalid schema for response_format: {error}.", param="response_format") from None
            settings = dataclasses.replace(settings, constraint=constraint)
        if tooling is not None:
            try:
                constraint = engine.tool_constraint(*tooling)
            except ValueError as error:
                raise APIError.bad_request(f"Invalid tools: {error}.", param="tools") from None
            settings = dataclasses.replace(settings, constraint=constraint)
        request_id = "chatcmpl-" + uuid.uuid4().hex
        created = int(time.time())
        cancelled = threading.Event()
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Delta | Finish | BaseException | None] = asyncio.Queue()

        def emit(event: Delta | Finish) -> None:
            loop.call_soon_threadsafe(events.put_nowait, event)

        future = engine.submit(prompt, settings, emit, cancelled=cancelled, request_id=request_id, lm=image_lm)

        def finished(done: Any) -> None:  # None marks the end; an exception, a failure
            failure = RuntimeError("the server is stopping") if done.cancelled() else done.exception()
            loop.call_soon_threadsafe(events.put_nowait, failure)

        future.add_done_callback(finished)

        def log_line(status: str, completion_tokens: int) -> None:
            log.info(
                "%s %s n=%d prompt_tokens=%d completion_tokens=%d %.2fs",
                request_id, status, settings.n, len(prompt.ids), completion_tokens, time.perf_counter() - began,
            )

        if not body.stream:
            collected: list[Delta | Finish] = []
            checked = loop.time()
            while True:
                try:
                    event = await asyncio.wait_for(events.get(), timeout=0.25)
                except TimeoutError:
                    event = _NO_EVENT
                # A client that gave up (a timeout, Ctrl+C) gets no reply:
                # stop generating for it.
                if loop.time() - checked >= 0.25:
                    checked = loop.time()
                    if await request.is_disconnected():
                        cancelled.set()
                        log_line("cancelled", sum(e.completion_tokens for e in collected if isinstance(e, Finish)))
                        return JSONResponse({}, status_code=499)
                if event is _NO_EVENT:
                    continue
                if isinstance(event, BaseException):
                    raise event
                if event is None:
                    break
                collected.append(event)
            result = completion(
                request_id, created, fingerprint, collected, settings.n, len(prompt.ids), settings.logprobs,
                tools=tooling is not None,
            )
            log_line("ok", result["usage"]["completion_tokens"])
            return JSONResponse(result, headers=rate_headers())

        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        def sse(data: dict[str, Any]) -> str:
            return "data: " + json.dumps(data, ensure_ascii=False) + "\n\n"

        async def stream() -> AsyncIterator[str]:
            ids = (request_id, created, fingerprint)
            total = 0
            status = "cancelled"
            try:
                started_choices: set[int] = set()
                tool_streams: dict[int, ToolCallStream] = {}
                while True:
                    event = await events.get()
                    if event is None:
                        break
                    if isinstance(event, BaseException):
                        log.error("request %s failed", request_id, exc_info=event)
                        status = "failed"
                        yield sse(APIError(500, SERVER_ERROR_MESSAGE, type="server_error").body())
                        return
                    if event.index not in started_choices:  # the first chunk of a choice names the role
                        started_choices.add(event.index)
                        first = {"role": "assistant", "content": "", "refusal": None}
                        yield sse(chunk(*ids, index=event.index, delta=first, include_usage=include_usage))
                    if isinstance(event, Delta) and tooling is not None:
                        # Text as content deltas; a call's name, then its arguments as they are written.
                        calls = tool_streams.setdefault(event.index, ToolCallStream())
                        for delta in calls.add(event.text):
                            yield sse(chunk(*ids, index=event.index, delta=delta, include_usage=include_usage))
                    elif isinstance(event, Delta):
                        yield sse(
                            chunk(
                                *ids,
                                index=event.index,
                                delta={"content": event.text},
                                logprobs=event.logprobs if settings.logprobs else None,
                                include_usage=include_usage,
                            )
                        )
                    else:
                        total += event.completion_tokens
                        reason = event.finish_reason
                        if event.index in tool_streams:
                            reason = tool_streams[event.index].finish_reason(reason)
                        yield sse(
                            chunk(
                                *ids,
                                index=event.index,
                                logprobs=event.logprobs if settings.logprobs else None,
                                finish_reason=reason,  # type: ignore[arg-type]
                                include_usage=include_usage,
                            )
                        )
                if include_usage:
                    yield sse(chunk(*ids, usage=(len(prompt.ids), total)))
                yield "data: [DONE]\n\n"
                status = "ok"
            finally:
                # Reached at the end, and also when the client goes away mid-stream:
                # the generation then stops at its next token.
                cancelled.set()
                log_line(status, total)

        headers = {"cache-control": "no-cache", "x-accel-buffering": "no", **rate_headers()}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


    # --- Ollama's API ---------------------------------------------------------------

    @app.exception_handler(ollama_api.OllamaError)
    async def ollama_error(request: Request, error: ollama_api.OllamaError) -> JSONResponse:
        return JSONResponse({"error": error.message}, status_code=error.status)

    def ollama_checks(request: Request) -> None:
        """The key and the rate limit, answered in Ollama's error shape."""
        try:
            check_key(request)
            check_rate()
        except APIError as error:
            raise ollama_api.OllamaError(error.status, error.message) from None

    @app.get("/api/tags")
    async def ollama_tags(request: Request) -> dict[str, Any]:
        ollama_checks(request)
        models = [
            {
                "name": model_id + ":latest",
                "model": model_id + ":latest",
                "modified_at": ollama_api.timestamp(),
                "details": {"format": model_format, "family": "llama", "parameter_size": "135M"},
            }
            for model_id in served
        ]
        return {"models": models}

    @app.get("/api/version")
    async def ollama_version() -> dict[str, str]:
        return {"version": f"llmsforme-{fingerprint}"}

    async def ollama_generate(
        request: Request, kind: str, model_name: str, prompt: Any, settings: Any, stream: bool, tools: bool = False,
        lm: Any = None,
    ) -> Any:
        began = time.perf_counter_ns()
        request_id = kind + "-" + uuid.uuid4().hex
        cancelled = threading.Event()
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Any] = asyncio.Queue()
        future = engine.submit(
            prompt,
            settings,
            lambda event: loop.call_soon_threadsafe(events.put_nowait, event),
            cancelled=cancelled,
            request_id=request_id,
            lm=lm,
        )

        def finished(done: Any) -> None:
            failure = RuntimeError("the server is stopping") if done.cancelled() else done.exception()
            loop.call_soon_threadsafe(events.put_nowait, failure)

        future.add_done_callback(finished)

        def piece(text: str) -> dict[str, Any]:
            body: dict[str, Any] = {"model": model_name, "created_at": ollama_api.timestamp()}
            if kind == "chat":
                body["message"] = {"role": "assistant", "content": text}
            else:
                body["response"] = text
            return body

        def last(finish: Finish, first_ns: int | None) -> dict[str, Any]:
            now = time.perf_counter_ns()
            first_ns = first_ns or now
            return {
                **piece(""),
                "done": True,
                "done_reason": finish.finish_reason,
                "total_duration": now - began,
                "load_duration": 0,  # the model stays loaded
                "prompt_eval_count": len(prompt.ids),
                "prompt_eval_duration": first_ns - began,
                "eval_count": finish.completion_tokens,
                "eval_duration": now - first_ns,
            }

        calls = ollama_api.ToolCallLines() if tools else None

        async def run() -> AsyncIterator[dict[str, Any]]:
            first_ns = None
            try:
                while True:
                    event = await events.get()
                    if event is None:
                        return
                    if isinstance(event, BaseException):
                        log.error("request %s failed", request_id, exc_info=event)
                        yield {"error": SERVER_ERROR_MESSAGE}
                        return
                    first_ns = first_ns or time.perf_counter_ns()
                    if isinstance(event, Delta) and calls is not None:  # text, or each call once whole
                        for message in calls.add(event.text):
                            yield {**piece(""), "message": {"role": "assistant", **message}, "done": False}
                    elif isinstance(event, Delta):
                        yield {**piece(event.text), "done": False}
                    else:
                        log.info(
                            "%s ok prompt_tokens=%d completion_tokens=%d %.2fs", request_id,
                            len(prompt.ids), event.completion_tokens, (time.perf_counter_ns() - began) / 1e9,
                        )
                        yield last(event, first_ns)
            finally:
                cancelled.set()  # a client gone mid-stream stops the generation

        if stream:
            return StreamingResponse(
                (ollama_api.line(part) async for part in run()), media_type="application/x-ndjson"
            )
        text, final, tool_calls = "", None, []
        async for part in run():
            if "error" in part:
                raise ollama_api.OllamaError(500, part["error"])
            if part["done"]:
                final = part
            else:
                text += part["message"]["content"] if kind == "chat" else part["response"]
                tool_calls += part.get("message", {}).get("tool_calls", [])
        assert final is not None
        if kind == "chat":
            final["message"]["content"] = text
            if tool_calls:
                final["message"]["tool_calls"] = tool_calls
        else:
            final["response"] = text
        return JSONResponse(final)

    def ollama_room(prompt: Any, body: Any) -> Any:
        settings = ollama_api.settings_for(body.options, max_tokens_limit, engine.context_window - len(prompt.ids))
        schema = ollama_api.format_schema(body.format)
        if schema is None:
            return settings
        try:
            constraint = engine.json_constraint(schema)
        except ValueError as error:
            raise ollama_api.OllamaError(400, f"invalid JSON schema in format: {error}") from None
        return dataclasses.replace(settings, constraint=constraint)

    def ollama_model(name: str) -> str:
        model_id = ollama_api.model_id(name, vision=engine.vision is not None)
        if model_id is None:
            raise ollama_api.OllamaError(404, f"model '{name}' not found, try pulling it first")
        return model_id

    def ollama_prompt(
        messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, model: str = MODEL_ID,
        images: list[tuple[int, int, Any]] | None = None, where: str = "messages[{}].images[{}]",
    ) -> tuple[Any, Any]:
        """The prompt, and the model that reads its image (``None``: the engine's)."""
        try:
            if images:
                return image_request(model, messages, images, image_from_base64, where, tools is not None)
            return engine.prompt(messages, tools), None
        except _ImageProblem as problem:
            raise ollama_api.OllamaError(400, f"{problem.where}: {problem}") from None
        except RoleInjectionError as error:
            reason = str(error).split(";")[0]
            raise ollama_api.OllamaError(400, f"{reason}: remove it") from None
        except (ValueError, TypeError) as error:
            raise ollama_api.OllamaError(400, str(error)) from None

    @app.post("/api/chat")
    async def ollama_chat(request: Request) -> Any:
        ollama_checks(request)
        body = ollama_api.parse(ollama_api.ChatRequest, await read_ollama_body(request))
        model = ollama_model(body.model)
        tools = ollama_api.chat_tools(body)
        images = ollama_api.message_images(body.messages)
        prompt, lm = ollama_prompt(ollama_api.chat_messages(body.messages), tools, model, images)
        settings = ollama_room(prompt, body)
        if tools is not None:  # Ollama has no tool_choice: text or one call, as the model chooses
            try:
                settings = dataclasses.replace(settings, constraint=engine.tool_constraint(tools, "auto", False))
            except ValueError as error:
                raise ollama_api.OllamaError(400, f"invalid tools: {error}") from None
        return await ollama_generate(
            request, "chat", body.model, prompt, settings, body.stream is not False, tools=tools is not None, lm=lm
        )

    @app.post("/api/generate")
    async def ollama_generate_route(request: Request) -> Any:
        ollama_checks(request)
        body = ollama_api.parse(ollama_api.GenerateRequest, await read_ollama_body(request))
        model = ollama_model(body.model)
        if not body.prompt:  # Ollama's way to load a model: nothing to generate
            return {"model": body.model, "created_at": ollama_api.timestamp(), "response": "", "done": True,
                    "done_reason": "load"}
        lm = None
        if body.raw:
            if body.system is not None:
                raise ollama_api.OllamaError(400, "'system' needs the chat template: leave out raw")
            if body.images:
                raise ollama_api.OllamaError(400, "images need the chat template: leave out raw")
            ids = engine.lm.encode(body.prompt)
            prompt = engine.prompt([{"role": "user", "content": ""}])
            prompt = type(prompt)(ids, prompt.end_of_turn, prompt.template)
        else:
            messages = [{"role": "system", "content": body.system}] if body.system is not None else []
            messages.append({"role": "user", "content": body.prompt})
            images = [(len(messages) - 1, position, image) for position, image in enumerate(body.images or [])]
            prompt, lm = ollama_prompt(messages, None, model, images, where="images[{1}]")
        settings = ollama_room(prompt, body)
        return await ollama_generate(
            request, "generate", body.model, prompt, settings, body.stream is not False, lm=lm
        )

    async def read_ollama_body(request: Request) -> bytes:
        try:
            return await read_body(request)
        except APIError as error:
            raise ollama_api.OllamaError(error.status, error.message) from None

    return app


class _ImageProblem(ValueError):
    """A request's image cannot be used: the field it is in, OpenAI's code, and why."""

    def __init__(self, where: str, code: str | None, message: str) -> None:
        super().__init__(message)
        self.where, self.code = where, code


def _unknown_model(name: str, served: tuple[str, ...] = (MODEL_ID,)) -> APIError:
    return APIError(
        404,
        f"The model {name!r} does not exist on this server: it serves {' and '.join(map(repr, served))}.",
        param="model",
        code="model_not_found",
    )
