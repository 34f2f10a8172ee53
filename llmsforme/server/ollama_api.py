"""Ollama's REST API over the same engine: ``/api/chat``, ``/api/generate``, ``/api/tags``.

Ollama is a popular way to run models locally; its own API differs from
OpenAI's in its paths, its ``options`` object (Ollama's sampling settings)
and its streaming, one JSON object per line (NDJSON) instead of server-sent
events. The course's server speaks it too, so that the official ``ollama``
Python client works against the course model.

The defaults are Ollama's documented ones (``temperature`` 0.8, ``top_k``
40, ``top_p`` 0.9), and ``stream`` is true unless the request says false,
as in Ollama. Errors are ``{"error": "..."}`` with Ollama's status codes.

``/api/chat`` takes ``tools`` as Ollama does: the reply is constrained to
text or one tool call (the chat layer's tool format), returned as
``message.tool_calls`` with ``arguments`` as an object. Ollama has no
``tool_choice``: the model chooses. The calls sent back in the history
carry no ids, so a ``tool`` message answers the call named by its
``tool_name``, or else the first call not yet answered.

Taught in: [Part 4: LLM applications locally](../part-4/index.md).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..constrained import UnsupportedSchemaError, check_strict_schema
from .engine import Settings
from .openai_api import MODEL_ID, VISION_MODEL_ID

__all__ = [
    "OLLAMA_DEFAULTS",
    "OllamaError",
    "OllamaOptions",
    "ChatRequest",
    "GenerateRequest",
    "parse",
    "format_schema",
    "chat_tools",
    "ollama_tool_calls",
    "ToolCallLines",
    "settings_for",
    "model_name_ok",
    "model_id",
    "message_images",
    "timestamp",
]

#: Ollama's default sampling settings (its API documentation).
OLLAMA_DEFAULTS = {"temperature": 0.8, "top_k": 40, "top_p": 0.9}

#: Request fields of Ollama's API that the course's server refuses, and why.
UNSUPPORTED = {
    "tools": "tools are served by /api/chat",
    "images": "only the vision model reads images (and only a user message's)",
    "suffix": "fill-in-the-middle is not implemented",
    "template": "the server renders the model's own chat template",
    "context": "the deprecated 'context' of /api/generate is not kept: send a chat instead",
    "think": "the course model is not a reasoning model",
    "logprobs": "log-probabilities are served by the OpenAI API (/v1/chat/completions)",
    "top_logprobs": "log-probabilities are served by the OpenAI API (/v1/chat/completions)",
}


class OllamaError(Exception):
    """An error in Ollama's shape: an HTTP status and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class OllamaOptions(BaseModel):
    """The sampling options the server honours, with their ranges."""

    model_config = ConfigDict(extra="forbid", strict=True)

    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    num_predict: int | None = Field(default=None, ge=-2)
    stop: list[str] | None = None


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str
    stream: bool | None = None
    options: OllamaOptions | None = None
    keep_alive: float | str | None = None  # the model always stays loaded: no effect
    format: str | dict[str, Any] | None = None  # "json" or a JSON Schema: see format_schema


class ChatRequest(_Request):
    """The body of ``POST /api/chat``."""

    messages: list[dict[str, Any]] = Field(min_length=1)
    tools: list[dict[str, Any]] | None = None


class GenerateRequest(_Request):
    """The body of ``POST /api/generate``: a prompt, rendered as one user turn unless ``raw``."""

    prompt: str = ""
    system: str | None = None
    raw: bool | None = None
    images: list[Any] | None = None  # base64 image files, for the vision model


def parse(model: type[_Request], body: bytes) -> Any:
    """Parse a request body; raise :class:`OllamaError` (400) naming the bad field.

    Example:
        >>> parse(ChatRequest, b'{"model": "m", "messages": [{}], "options": {"top_k": -1}}')
        Traceback (most recent call last):
        ...
        llmsforme.server.ollama_api.OllamaError: invalid options.top_k: Input should be greater than or equal to 0
    """
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise OllamaError(400, "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise OllamaError(400, "the body must be a JSON object")
    # Ollama's client always sends some fields, empty ("tools": []): empty is fine.
    data = {key: value for key, value in data.items() if not ((key in UNSUPPORTED or key == "tools") and _empty(value))}
    try:
        return model.model_validate(data)
    except ValidationError as errors:
        error = errors.errors(include_url=False)[0]
        where = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            name = str(error["loc"][-1])
            if name in UNSUPPORTED and len(error["loc"]) == 1:
                raise OllamaError(400, f"'{name}' is not supported by this server: {UNSUPPORTED[name]}") from None
            raise OllamaError(400, f"unknown field '{where}'") from None
        if error["type"] == "missing":
            raise OllamaError(400, f"missing field '{where}'") from None
        raise OllamaError(400, f"invalid {where}: {error['msg']}") from None


def _empty(value: Any) -> bool:
    return value is None or value is False or value in ("", [], {})


def model_name_ok(name: str) -> bool:
    """Ollama names carry a tag: ``smollm2-135m-instruct`` and ``smollm2-135m-instruct:latest`` are one model."""
    return name in (MODEL_ID, MODEL_ID + ":latest")


def model_id(name: str, vision: bool) -> str | None:
    """The model an Ollama name means (``None``: none served); the vision model only if ``vision``.

    Example:
        >>> model_id("smollm2-135m-instruct-vision:latest", vision=True)
        'smollm2-135m-instruct-vision'
    """
    served = (MODEL_ID, VISION_MODEL_ID) if vision else (MODEL_ID,)
    bare = name.removesuffix(":latest")
    return bare if bare in served else None


def message_images(raw: list[Any]) -> list[tuple[int, int, Any]]:
    """Where the images of Ollama's messages are: ``(message, position, base64)`` for each.

    Example:
        >>> message_images([{"role": "user", "content": "Which digit?", "images": ["iVBORw0K..."]}])
        [(0, 0, 'iVBORw0K...')]
    """
    found = []
    for index, message in enumerate(raw):
        images = message.get("images") if isinstance(message, dict) else None
        if _empty(images):
            continue
        if not isinstance(images, list):
            raise OllamaError(400, f"messages[{index}].images must be a list of base64 strings")
        found += [(index, position, image) for position, image in enumerate(images)]
    return found


def chat_messages(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ollama's messages as the package's ``{"role", "content"}`` dicts, tool calls in OpenAI's shape.

    An assistant's ``tool_calls`` get ids (Ollama sends none); a ``tool``
    message answers the call its ``tool_name`` names, or else the first
    call not yet answered (``tool_call_id``); a ``tool`` message with no
    call before it stays a plain tool turn.

    Example:
        >>> chat_messages([{"role": "user", "content": "Time?"},
        ...                {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "now",
        ...                 "arguments": {}}}]}, {"role": "tool", "content": "12:00", "tool_name": "now"}])[2]
        {'role': 'tool', 'content': '12:00', 'tool_call_id': 'call_1_0'}
    """
    messages: list[dict[str, Any]] = []
    waiting: list[tuple[str, str]] = []  # (id, name) of the calls not yet answered, in order
    for index, message in enumerate(raw):
        if not isinstance(message, dict):
            raise OllamaError(400, f"messages[{index}] must be an object")
        role = message.get("role")
        allowed = {"role", "content"} | ({"tool_calls"} if role == "assistant" else set())
        allowed |= {"tool_name"} if role == "tool" else set()
        allowed |= {"images"} if role == "user" else set()  # read by message_images
        extra = {key for key, value in message.items() if not _empty(value)} - allowed
        if extra:
            name = min(extra)
            reason = UNSUPPORTED.get(name, "the chat template has no place for it")
            raise OllamaError(400, f"messages[{index}].{name} is not supported: {reason}")
        if not isinstance(message.get("content", ""), str):
            raise OllamaError(400, f"messages[{index}].content must be a string")
        converted: dict[str, Any] = {"role": role, "content": message.get("content", "")}
        if role == "assistant" and message.get("tool_calls"):
            converted["tool_calls"] = []
            for position, call in enumerate(message["tool_calls"]):
                function = call.get("function") if isinstance(call, dict) else None
                if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                    raise OllamaError(400, f"messages[{index}].tool_calls[{position}] needs a function with a name")
                call_id = f"call_{index}_{position}"
                waiting.append((call_id, function["name"]))
                converted["tool_calls"].append({"id": call_id, "type": "function", "function": {
                    "name": function["name"], "arguments": function.get("arguments") or {}}})
        if role == "tool" and waiting:
            name = message.get("tool_name")
            match = next((i for i, (_, called) in enumerate(waiting) if name in (None, "", called)), None)
            if match is None:
                raise OllamaError(400, f"messages[{index}] (tool) names {name!r}, which no earlier tool call has")
            converted["tool_call_id"] = waiting.pop(match)[0]
        messages.append(converted)
    return messages


def chat_tools(request: ChatRequest) -> list[dict[str, Any]] | None:
    """The request's ``tools`` (``None``: none), checked by the chat layer; :class:`OllamaError` (400) if bad.

    Example:
        >>> chat_tools(ChatRequest(model="m", messages=[{}], tools=[{"type": "function", "function": {}}]))
        Traceback (most recent call last):
        ...
        llmsforme.server.ollama_api.OllamaError: invalid tools: tools[0].function.name must be 1-64 letters, digits, '_' or '-', \
got None
    """
    if not request.tools:
        return None
    if request.format not in (None, ""):
        raise OllamaError(400, "format and tools together are not supported: the reply is text or a tool call")
    from ..chat import check_tools  # the chat layer defines the tool format

    try:
        check_tools(request.tools)
    except (ValueError, TypeError) as error:
        raise OllamaError(400, f"invalid tools: {error}") from None
    return request.tools


def ollama_tool_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ollama's ``tool_calls`` for the ``{"name", "arguments"}`` calls of a reply: arguments stay an object.

    Example:
        >>> ollama_tool_calls([{"name": "now", "arguments": {"zone": "UTC"}}])
        [{'function': {'name': 'now', 'arguments': {'zone': 'UTC'}}}]
    """
    return [{"function": {"name": call["name"], "arguments": call["arguments"]}} for call in calls]


class ToolCallLines:
    """Turns the streamed text of a reply into Ollama's stream messages: text as it comes, a call once whole.

    A reply in the tool format starts with ``<`` exactly when it is a call.

    Example:
        >>> lines = ToolCallLines()
        >>> [m for piece in ['<tool_call>{"name": "f", ', '"arguments": {}}</tool_call>'] for m in lines.add(piece)]
        [{'content': '', 'tool_calls': [{'function': {'name': 'f', 'arguments': {}}}]}]
        >>> ToolCallLines().add("Hello")
        [{'content': 'Hello'}]
    """

    def __init__(self) -> None:
        self._calls: bool | None = None
        self._buffer = ""

    def add(self, text: str) -> list[dict[str, Any]]:
        from ..chat import parse_tool_reply

        if self._calls is None:
            if not text:
                return []
            self._calls = text.startswith("<")
        if not self._calls:
            return [{"content": text}] if text else []
        self._buffer += text
        messages = []
        while "</tool_call>" in self._buffer:
            whole, _, self._buffer = self._buffer.partition("</tool_call>")
            _, calls = parse_tool_reply(whole.strip() + "</tool_call>")
            if calls:
                messages.append({"content": "", "tool_calls": ollama_tool_calls(calls)})
        return messages


def format_schema(format: str | dict[str, Any] | None) -> dict[str, Any] | None:
    """The JSON Schema of Ollama's ``format`` (``None``: plain text), or :class:`OllamaError` (400).

    ``"json"`` is any JSON object; a schema must keep to the keywords of
    OpenAI's strict mode (:func:`~llmsforme.constrained.check_strict_schema`,
    without strict mode's structure rules), which the server can enforce.

    Example:
        >>> format_schema("json")
        {'type': 'object'}
        >>> format_schema({"type": "object", "properties": {"a": {"type": "string", "format": "uri"}}})
        Traceback (most recent call last):
        ...
        llmsforme.server.ollama_api.OllamaError: invalid JSON schema in format: 'format' at #/properties/a is not \
supported (format 'uri' is not one of date-time, time, date, duration, email, hostname, ipv4, ipv6, uuid)
    """
    if format is None or format == "":
        return None
    if format == "json":
        return {"type": "object"}
    if isinstance(format, str):
        raise OllamaError(400, f"invalid format {format!r}: give \"json\" or a JSON Schema object")
    try:
        check_strict_schema(format, strict=False)
    except UnsupportedSchemaError as error:
        raise OllamaError(400, f"invalid JSON schema in format: {error}") from None
    return format


def settings_for(options: OllamaOptions | None, limit: int, room: int) -> Settings:
    """The engine's settings from Ollama's ``options`` and its defaults.

    ``num_predict`` -1 (Ollama's "no limit") and -2 ("fill the context")
    become the server's limit; the reply must fit in ``room`` tokens.
    """
    options = options or OllamaOptions()
    asked = options.num_predict
    if asked is not None and asked > limit:
        raise OllamaError(400, f"options.num_predict must be at most {limit} on this server, got {asked}")
    if room < 1:
        raise OllamaError(400, "the prompt fills the model's context window: shorten the messages")
    if asked == 0:
        raise OllamaError(400, "options.num_predict must be at least 1 (or -1 for the server's limit)")
    max_tokens = min(room, limit if asked is None or asked < 0 else asked)
    stop = tuple(options.stop or ())
    if any(not s for s in stop):
        raise OllamaError(400, "options.stop must hold non-empty strings")
    pick = {name: getattr(options, name) for name in OLLAMA_DEFAULTS}
    pick = {name: OLLAMA_DEFAULTS[name] if value is None else value for name, value in pick.items()}
    return Settings(
        max_tokens=max_tokens,
        temperature=pick["temperature"],
        top_p=pick["top_p"],
        top_k=pick["top_k"],
        seed=options.seed,
        stop=stop,
    )


def timestamp() -> str:
    """Now, as Ollama writes it: RFC 3339 in UTC."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def line(data: dict[str, Any]) -> str:
    """One line of an NDJSON stream."""
    return json.dumps(data, ensure_ascii=False) + "\n"
