"""OpenAI's Chat Completions API over the engine: requests in, responses and chunks out.

:class:`ChatCompletionRequest` says which parameters the server honours and
their ranges: OpenAI's, narrowed where a CPU needs it (``n`` at most
:data:`MAX_N`, ``max_tokens`` at most the server's limit, 512 by default)
or where the package does (``seed`` from 0 to 2**63 - 1). A parameter of OpenAI's API that the server does not
implement is refused by name, never ignored. :func:`settings_for` turns a
valid request into the engine's :class:`~llmsforme.server.engine.Settings`;
:func:`completion` and :func:`chunk` build the JSON that OpenAI's clients
parse.

Taught in: [Your first call](../part-3/first-call.ipynb),
[Parameters](../part-3/parameters.ipynb).
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..chat import parse_tool_reply
from ..constrained import UnsupportedSchemaError, check_strict_schema
from .engine import Delta, Finish, Settings, TokenLogprob
from .errors import APIError

__all__ = [
    "MODEL_ID",
    "VISION_MODEL_ID",
    "MAX_N",
    "UNSUPPORTED",
    "ChatCompletionRequest",
    "ResponseFormat",
    "ToolCallStream",
    "parse_request",
    "response_schema",
    "tool_options",
    "tool_calls_json",
    "chat_messages",
    "image_parts",
    "settings_for",
    "completion",
    "chunk",
    "logprobs_json",
]

#: The name clients use for the course model.
MODEL_ID = "smollm2-135m-instruct"
#: The name of the same model reading images (:mod:`llmsforme.multimodal.vision_language`).
VISION_MODEL_ID = MODEL_ID + "-vision"
#: Most replies per request (OpenAI allows 128; on a CPU each costs a full generation).
MAX_N = 8

#: Parameters of OpenAI's API that this server refuses, and why.
UNSUPPORTED = {
    "functions": "the course model was not trained to call functions",
    "function_call": "the course model was not trained to call functions",
    "logit_bias": "logit_bias is not implemented",
    "audio": "the course model reads and writes text only",
    "modalities": "the course model reads and writes text only",
    "prediction": "predicted outputs are not implemented",
    "reasoning_effort": "the course model is not a reasoning model",
    "verbosity": "the course model has no verbosity setting",
    "web_search_options": "the server has no web search",
    "service_tier": "the server has a single tier",
    "store": "the server stores no completions",
    "metadata": "the server stores no completions, so it keeps no metadata",
    "user": "the server keeps no per-user records",
    "safety_identifier": "the server keeps no per-user records",
    "prompt_cache_key": "the server has no prompt cache",
    "prompt_cache_retention": "the server has no prompt cache",
    "prompt_cache_options": "the server has no prompt cache",
    "moderation": "the server has no moderation endpoint",
}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    include_usage: bool | None = None


class JSONSchemaFormat(BaseModel):
    """``response_format.json_schema``: a named schema, strict or not."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """``response_format``: ``text``, ``json_object`` (any JSON object) or ``json_schema``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


class ChatCompletionRequest(BaseModel):
    """The body of ``POST /v1/chat/completions``: what the server honours, with its ranges."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str
    messages: list[dict[str, Any]] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    n: int | None = Field(default=None, ge=1, le=MAX_N)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    stop: str | list[str] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    response_format: ResponseFormat | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None


def _param(location: tuple[Any, ...]) -> str:
    """``("messages", 0, "role")`` -> ``"messages[0].role"``."""
    name = ""
    for part in location:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name


def parse_request(body: bytes) -> ChatCompletionRequest:
    """Parse and check a request body; raise :class:`APIError` (400) naming the bad parameter.

    Example:
        >>> parse_request(b'{"model": "m", "messages": [{}], "temperature": 3}')
        Traceback (most recent call last):
        ...
        llmsforme.server.errors.APIError: Invalid 'temperature': Input should be less than or equal to 2 (got 3).
    """
    try:
        return ChatCompletionRequest.model_validate_json(body)
    except ValidationError as errors:
        error = errors.errors(include_url=False)[0]
        location = tuple(error["loc"])
        if error["type"] == "json_invalid":
            raise APIError.bad_request(
                "The body is not valid JSON: send a JSON object with 'model' and 'messages'."
            ) from None
        if error["type"] == "model_type" and not location:
            raise APIError.bad_request("The body must be a JSON object with 'model' and 'messages'.") from None
        # A union (stop: str | list[str]) reports its members' errors: name the field.
        location = tuple(part for part in location if part not in ("str", "list[str]"))
        param = _param(location)
        if error["type"] == "extra_forbidden":
            name = str(location[-1])
            if len(location) == 1 and name in UNSUPPORTED:
                raise APIError.bad_request(
                    f"'{name}' is not supported by this server: {UNSUPPORTED[name]}.", param=name
                ) from None
            raise APIError.bad_request(f"Unknown parameter '{param}'.", param=param) from None
        if error["type"] == "missing":
            raise APIError.bad_request(f"Missing required parameter '{param}'.", param=param) from None
        got = json.dumps(error.get("input"))
        got = got if len(got) <= 60 else got[:57] + "..."
        raise APIError.bad_request(f"Invalid '{param}': {error['msg']} (got {got}).", param=param) from None


def _text_content(index: int, content: Any) -> str:
    """A message's content: a string, or OpenAI's list of parts (text, joined; images left to :func:`image_parts`)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for position, part in enumerate(content):
            where = f"messages[{index}].content[{position}]"
            if isinstance(part, dict) and part.get("type") == "image_url":
                _check_image_part(where, part)
                continue
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise APIError.bad_request(
                    f"{where} is a {kind!r} part: the server reads text and image_url parts.", param=where
                )
            if set(part) - {"type", "text"}:
                raise APIError.bad_request(
                    f"{where} has unknown keys: {sorted(set(part) - {'type', 'text'})}.", param=where
                )
            texts.append(part["text"])
        return "\n".join(texts)
    raise APIError.bad_request(
        f"messages[{index}].content must be a string or a list of text and image_url parts.",
        param=f"messages[{index}].content",
    )


def _check_image_part(where: str, part: dict[str, Any]) -> None:
    """OpenAI's ``{"type": "image_url", "image_url": {"url": ..., "detail": ...}}``, in shape only."""
    image = part.get("image_url")
    if set(part) - {"type", "image_url"} or not isinstance(image, dict) or set(image) - {"url", "detail"}:
        raise APIError.bad_request(
            f"{where} must be {{'type': 'image_url', 'image_url': {{'url': ..., 'detail': ...}}}}.", param=where
        )
    if not isinstance(image.get("url"), str):
        raise APIError.bad_request(f"{where}.image_url.url must be a string.", param=where)
    if image.get("detail", "auto") not in ("auto", "low", "high"):
        raise APIError.bad_request(f"{where}.image_url.detail must be 'auto', 'low' or 'high'.", param=where)


def image_parts(raw: list[dict[str, Any]]) -> list[tuple[int, int, str]]:
    """Where the images of OpenAI's messages are: ``(message, part, url)`` for each ``image_url`` part.

    ``detail`` changes nothing here: every image becomes the same 16 x 16 input.

    Example:
        >>> image_parts([{"role": "user", "content": [{"type": "text", "text": "Which digit?"},
        ...     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}])
        [(0, 1, 'data:image/png;base64,AAAA')]
    """
    found = []
    for index, message in enumerate(raw):
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            for position, part in enumerate(content):
                if isinstance(part, dict) and part.get("type") == "image_url":
                    _check_image_part(f"messages[{index}].content[{position}]", part)
                    found.append((index, position, part["image_url"]["url"]))
    return found


def chat_messages(raw: list[dict[str, Any]]) -> list[dict[str, str]]:
    """OpenAI's messages as the package's ``{"role", "content"}`` dicts.

    ``developer`` (OpenAI's newer name for instructions) becomes ``system``;
    text parts are joined with newlines; assistant ``tool_calls`` and
    ``tool`` messages (with their ``tool_call_id``) are kept for the chat
    layer's tool format; image parts are left out (see :func:`image_parts`). The package's :func:`~llmsforme.chat.validate_messages` checks
    the rest (roles, order).

    Example:
        >>> chat_messages([{"role": "developer", "content": [{"type": "text", "text": "Be brief."}]}])
        [{'role': 'system', 'content': 'Be brief.'}]
    """
    messages: list[dict[str, Any]] = []
    for index, message in enumerate(raw):
        role = message.get("role")
        allowed = {"role", "content"} | ({"tool_calls"} if role == "assistant" else set())
        allowed |= {"tool_call_id"} if role == "tool" else set()
        extra = set(message) - allowed
        if extra:
            name = sorted(extra)[0]
            raise APIError.bad_request(
                f"messages[{index}].{name} is not supported: the chat template has no place for it.",
                param=f"messages[{index}].{name}",
            )
        if role == "function":
            raise APIError.bad_request(
                f"messages[{index}] has role 'function', OpenAI's deprecated one: send 'tool' messages.",
                param=f"messages[{index}].role",
            )
        if role == "developer":
            role = "system"
        if role == "tool" and not isinstance(message.get("tool_call_id"), str):
            raise APIError.bad_request(
                f"messages[{index}] (tool) needs the tool_call_id of the call it answers.",
                param=f"messages[{index}].tool_call_id",
            )
        calls = message.get("tool_calls")
        if ("content" not in message or message["content"] is None) and not calls:
            raise APIError.bad_request(f"messages[{index}] has no content.", param=f"messages[{index}].content")
        converted = {**message, "role": role}
        converted["content"] = None if message.get("content") is None else _text_content(index, message["content"])
        messages.append(converted)
    return messages


def response_schema(request: ChatCompletionRequest) -> dict[str, Any] | None:
    """The JSON Schema the reply must follow (``None``: plain text); 400 if the server cannot promise it.

    ``json_object`` is any JSON object. A ``json_schema`` must keep to OpenAI
    strict mode's keywords (:func:`~llmsforme.constrained.check_strict_schema`)
    whether ``strict`` is set or not, since the server always enforces the
    schema; with ``strict: true`` it must also have strict mode's structure.

    Example:
        >>> request = parse_request(b'{"model": "m", "messages": [{}], "response_format": {"type": "json_schema",'
        ...     b' "json_schema": {"name": "a", "schema": {"type": "object", "not": {}}}}}')
        >>> response_schema(request)
        Traceback (most recent call last):
        ...
        llmsforme.server.errors.APIError: Invalid schema for response_format 'a': 'not' at # is not supported \
(OpenAI's strict mode does not accept it).
    """
    form = request.response_format
    if form is None or form.type == "text":
        if form is not None and form.json_schema is not None:
            raise APIError.bad_request("json_schema is only allowed with type 'json_schema'.", param="response_format")
        return None
    if form.type == "json_object":
        if form.json_schema is not None:
            raise APIError.bad_request("json_schema is only allowed with type 'json_schema'.", param="response_format")
        return {"type": "object"}
    if form.json_schema is None or form.json_schema.schema_ is None:
        raise APIError.bad_request(
            "response_format of type 'json_schema' needs json_schema.schema.", param="response_format.json_schema"
        )
    schema = form.json_schema.schema_
    try:
        check_strict_schema(schema, strict=bool(form.json_schema.strict))
    except UnsupportedSchemaError as error:
        raise APIError.bad_request(
            f"Invalid schema for response_format {form.json_schema.name!r}: {error}.", param="response_format"
        ) from None
    return schema


def tool_options(request: ChatCompletionRequest) -> tuple[list[dict[str, Any]], Any, bool] | None:
    """``(tools, tool_choice, parallel)`` of a request that offers tools (``None``: no tools); 400 on a bad one.

    ``parallel_tool_calls`` absent or false: at most one call per reply;
    true: several calls may follow each other.
    """
    if not request.tools:
        for name in ("tool_choice", "parallel_tool_calls"):
            if getattr(request, name) is not None:
                raise APIError.bad_request(f"{name} is only allowed when tools are given.", param=name)
        return None
    if request.response_format is not None and request.response_format.type != "text":
        raise APIError.bad_request(
            "response_format and tools together are not supported: the reply is text or a tool call.",
            param="response_format",
        )
    from ..chat import check_tools  # the chat layer defines the tool format

    try:
        check_tools(request.tools)
    except (ValueError, TypeError) as error:
        raise APIError.bad_request(f"Invalid tools: {error}.", param="tools") from None
    choice = "auto" if request.tool_choice is None else request.tool_choice
    names = [tool["function"]["name"] for tool in request.tools]
    if isinstance(choice, str) and choice not in ("auto", "none", "required"):
        raise APIError.bad_request(
            f"tool_choice must be 'auto', 'none', 'required' or a function, got {choice!r}.", param="tool_choice"
        )
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") if choice.get("type") == "function" else None
        if name not in names:
            raise APIError.bad_request(
                f"tool_choice names the function {name!r}, which is not one of the tools ({', '.join(names)}).",
                param="tool_choice",
            )
    return request.tools, choice, bool(request.parallel_tool_calls)


def tool_calls_json(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI's ``tool_calls`` for the ``{"name", "arguments"}`` calls of a reply (each with a new id)."""
    return [
        {
            "id": "call_" + uuid.uuid4().hex[:24],
            "type": "function",
            "function": {"name": call["name"], "arguments": json.dumps(call["arguments"], ensure_ascii=False)},
        }
        for call in calls
    ]


class ToolCallStream:
    """Turns the streamed text of a reply into OpenAI's deltas: ``content``, or ``tool_calls`` as they are written.

    A reply in the tool format starts with ``<`` exactly when it is a call
    (text cannot start with it), so the first character decides. A call's
    first delta carries its id and name, as soon as the name is whole; its
    arguments follow piece by piece, as the model writes them, like
    OpenAI's. The last characters are held back until the call's end
    marker arrives, since they may be the ``}`` that closes the call
    rather than its arguments.

    Example:
        >>> stream = ToolCallStream()
        >>> [d for piece in ['<tool_call>{"name": "f", ', '"arguments": {}}</tool_call>'] for d in stream.add(piece)]
        ... # doctest: +ELLIPSIS
        [{'tool_calls': [{'index': 0, 'id': 'call_...', 'type': 'function', 'function': {'name': 'f', \
'arguments': ''}}]}, {'tool_calls': [{'index': 0, 'function': {'arguments': '{}'}}]}]
        >>> stream.finish_reason("stop")
        'tool_calls'
    """

    _HEAD = re.compile(r'\s*<tool_call>\{"name": ("(?:[^"\\]|\\.)*"), "arguments": ')
    _TAIL = len("}</tool_call>")  # what may still close the call, held back

    def __init__(self) -> None:
        self.calls = 0
        self._mode: str | None = None
        self._buffer = ""
        self._sent: int | None = None  # characters of the current call's arguments sent (None: no call open)

    def add(self, text: str) -> list[dict[str, Any]]:
        if self._mode is None:
            if not text:
                return []
            self._mode = "calls" if text.startswith("<") else "text"
        if self._mode == "text":
            return [{"content": text}] if text else []
        self._buffer += text
        deltas: list[dict[str, Any]] = []
        while True:
            if self._sent is None:  # waiting for the next call's name
                head = self._HEAD.match(self._buffer)
                if head is None:
                    return deltas
                [call] = tool_calls_json([{"name": json.loads(head[1]), "arguments": {}}])
                call["function"]["arguments"] = ""
                deltas.append({"tool_calls": [{"index": self.calls, **call}]})
                self._buffer, self._sent = self._buffer[head.end():], 0
                continue
            end = self._buffer.find("</tool_call>")
            upto = len(self._buffer) - self._TAIL if end < 0 else end - 1  # end - 1: the call's own "}"
            if upto > self._sent:
                piece = self._buffer[self._sent: upto]
                deltas.append({"tool_calls": [{"index": self.calls, "function": {"arguments": piece}}]})
                self._sent = upto
            if end < 0:
                return deltas
            self._buffer, self._sent = self._buffer[end + len("</tool_call>"):], None
            self.calls += 1

    def finish_reason(self, reason: str) -> str:
        return "tool_calls" if self.calls and reason == "stop" else reason


def settings_for(request: ChatCompletionRequest, prompt_tokens: int, limit: int, context_window: int) -> Settings:
    """The engine's settings for a valid request, after the limits that depend on the prompt.

    ``limit`` is the server's largest ``max_tokens`` (and its default);
    the prompt and the reply together must fit in ``context_window`` tokens.
    """
    if request.max_tokens is not None and request.max_completion_tokens is not None:
        if request.max_tokens != request.max_completion_tokens:
            raise APIError.bad_request(
                "Give max_completion_tokens or max_tokens, not both: max_tokens is its older name.",
                param="max_tokens",
            )
    asked = request.max_completion_tokens or request.max_tokens
    param = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
    if asked is not None and asked > limit:
        raise APIError.bad_request(f"{param} must be at most {limit} on this server, got {asked}.", param=param)
    room = context_window - prompt_tokens
    if room < 1 or (asked is not None and asked > room):
        raise APIError.bad_request(
            f"This model's context window is {context_window} tokens. The messages take {prompt_tokens} tokens "
            f"and the reply needs {asked or 1} more. Shorten the messages or lower {param}.",
            param="messages",
            code="context_length_exceeded",
        )
    stop = request.stop if request.stop is not None else []
    stop = [stop] if isinstance(stop, str) else stop
    if len(stop) > 4 or any(not s for s in stop):
        raise APIError.bad_request("stop must be a non-empty string or a list of up to 4 of them.", param="stop")
    if request.top_logprobs is not None and not request.logprobs:
        raise APIError.bad_request("top_logprobs needs logprobs set to true.", param="top_logprobs")
    if request.stream_options is not None and not request.stream:
        raise APIError.bad_request("stream_options is only allowed with stream set to true.", param="stream_options")
    return Settings(
        max_tokens=asked or min(limit, room),
        temperature=1.0 if request.temperature is None else request.temperature,
        top_p=1.0 if request.top_p is None else request.top_p,
        n=request.n or 1,
        seed=request.seed,
        stop=tuple(stop),
        logprobs=bool(request.logprobs),
        top_logprobs=request.top_logprobs or 0,
        presence_penalty=request.presence_penalty or 0.0,
        frequency_penalty=request.frequency_penalty or 0.0,
    )


def logprobs_json(entries: list[TokenLogprob]) -> dict[str, Any]:
    """A choice's ``logprobs`` field."""
    return {
        "content": [
            {
                "token": entry.token,
                "logprob": entry.logprob,
                "bytes": entry.bytes,
                "top_logprobs": [{"token": t, "logprob": lp, "bytes": b} for t, lp, b in entry.top],
            }
            for entry in entries
        ],
        "refusal": None,
    }


def _header(kind: str, request_id: str, created: int, fingerprint: str) -> dict[str, Any]:
    return {"id": request_id, "object": kind, "created": created, "model": MODEL_ID, "system_fingerprint": fingerprint}


def completion(
    request_id: str,
    created: int,
    fingerprint: str,
    events: list[Delta | Finish],
    n: int,
    prompt_tokens: int,
    logprobs: bool,
    tools: bool = False,
) -> dict[str, Any]:
    """A whole ``chat.completion`` from the engine's events (with ``tools``, a reply that calls is ``tool_calls``)."""
    texts = [""] * n
    entries: list[list[TokenLogprob]] = [[] for _ in range(n)]
    finish: list[str] = ["length"] * n
    completion_tokens = 0
    for event in events:
        entries[event.index].extend(event.logprobs)
        if isinstance(event, Delta):
            texts[event.index] += event.text
        else:
            finish[event.index] = event.finish_reason
            completion_tokens += event.completion_tokens
    messages: list[dict[str, Any]] = []
    for i in range(n):
        message: dict[str, Any] = {"role": "assistant", "content": texts[i], "refusal": None}
        content, calls = parse_tool_reply(texts[i]) if tools else (texts[i], [])
        if calls and finish[i] == "stop":
            message = {**message, "content": content, "tool_calls": tool_calls_json(calls)}
            finish[i] = "tool_calls"
        messages.append(message)
    choices = [
        {
            "index": i,
            "message": messages[i],
            "logprobs": logprobs_json(entries[i]) if logprobs else None,
            "finish_reason": finish[i],
        }
        for i in range(n)
    ]
    return {
        **_header("chat.completion", request_id, created, fingerprint),
        "choices": choices,
        "usage": _usage(prompt_tokens, completion_tokens),
    }


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chunk(
    request_id: str,
    created: int,
    fingerprint: str,
    *,
    index: int = 0,
    delta: dict[str, Any] | None = None,
    logprobs: list[TokenLogprob] | None = None,
    finish_reason: Literal["stop", "length", "tool_calls"] | None = None,
    usage: tuple[int, int] | None = None,
    include_usage: bool = False,
) -> dict[str, Any]:
    """One ``chat.completion.chunk`` of a stream.

    With ``usage=(prompt_tokens, completion_tokens)`` it is the last chunk
    that ``stream_options.include_usage`` asks for: no choices, only the
    counts. The other chunks carry ``"usage": null`` when usage was asked.
    """
    body = _header("chat.completion.chunk", request_id, created, fingerprint)
    if usage is not None:
        return {**body, "choices": [], "usage": _usage(*usage)}
    body["choices"] = [
        {
            "index": index,
            "delta": delta or {},
            "logprobs": logprobs_json(logprobs) if logprobs is not None else None,
            "finish_reason": finish_reason,
        }
    ]
    if include_usage:
        body["usage"] = None
    return body
