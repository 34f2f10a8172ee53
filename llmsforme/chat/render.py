"""Render a conversation to the exact prompt text a model family was trained on.

The templates are Jinja files in ``llmsforme/templates/``, run as transformers
runs them: in Jinja's immutable sandbox (a template is code, and may come from
a stranger), with ``trim_blocks`` and ``lstrip_blocks``.

Taught in: [Chat templates](../part-1/chat-templates.ipynb).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, nodes
from jinja2.ext import Extension
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .guard import OnSpecialTokens, check_on_special_tokens, raise_if_special_tokens
from .messages import validate_messages
from .registry import ChatTemplate, get_template
from .tools import uses_tools, with_tools

__all__ = ["render_chat"]

# Private-use characters that bracket what the assistant says when we ask the
# templates to mark it (for the training view); no text is expected to hold them.
ASSISTANT_START, ASSISTANT_END = "\ue000", "\ue001"


class AssistantSpans(Extension):
    """The ``{% generation %}...{% endgeneration %}`` tag of transformers.

    It marks the text an assistant says; when the template variable
    ``mark_assistant`` is true the text comes out between
    :data:`ASSISTANT_START` and :data:`ASSISTANT_END`, otherwise unchanged.
    """

    tags = {"generation"}

    def parse(self, parser: Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        call = self.call_method("_mark", [nodes.Name("mark_assistant", "load")])
        return nodes.CallBlock(call, [], [], body).set_lineno(lineno)

    def _mark(self, mark: bool, caller: Callable[[], str]) -> str:
        text = caller()
        return f"{ASSISTANT_START}{text}{ASSISTANT_END}" if mark else text


ENVIRONMENT = ImmutableSandboxedEnvironment(
    loader=FileSystemLoader(Path(__file__).resolve().parents[1] / "templates"),
    trim_blocks=True,
    lstrip_blocks=True,
    undefined=StrictUndefined,  # a misspelt variable in a template is an error, not ""
    extensions=[AssistantSpans],
)


def _check_flags(
    messages: Sequence[Mapping[str, Any]], add_generation_prompt: object, continue_final_message: object
) -> None:
    for name, value in (
        ("add_generation_prompt", add_generation_prompt),
        ("continue_final_message", continue_final_message),
    ):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r}")
    if add_generation_prompt and continue_final_message:
        # Same rule as transformers' apply_chat_template.
        raise ValueError(
            "continue_final_message and add_generation_prompt are not compatible: use continue_final_message "
            "to continue the final assistant message, add_generation_prompt to start a new one"
        )
    if continue_final_message and messages[-1]["role"] != "assistant":
        raise ValueError(
            f"continue_final_message needs the last message to be an assistant message, got {messages[-1]['role']!r}"
        )


def render_template(
    spec: ChatTemplate,
    messages: Sequence[Mapping[str, Any]],
    *,
    add_generation_prompt: bool = False,
    continue_final_message: bool = False,
    mark_assistant: bool = False,
) -> str:
    """Run the Jinja template of ``spec`` on already validated ``messages`` (no checks: see :func:`render_chat`).

    Example:
        >>> render_template(get_template("gemma"), [{"role": "user", "content": "Hi"}])
        '<bos><start_of_turn>user\\nHi<end_of_turn>\\n'

    Taught in: [Chat templates](../part-1/chat-templates.ipynb).
    """
    # The template sees plain copies: only strings, never the caller's objects.
    plain = [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]
    return ENVIRONMENT.get_template(spec.file).render(
        messages=plain,
        add_generation_prompt=add_generation_prompt,
        continue_final_message=continue_final_message,
        default_system_prompt=spec.default_system_prompt,
        mark_assistant=mark_assistant,
    )


def prepare(
    messages: Sequence[Mapping[str, Any]],
    template: str | ChatTemplate,
    add_generation_prompt: bool,
    continue_final_message: bool,
    on_special_tokens: object,
    special_tokens: Sequence[str] = (),
) -> ChatTemplate:
    """All the checks done before rendering (messages, flags, guard); returns the template's spec.

    Example:
        >>> prepare([{"role": "user", "content": "Hi"}], "llama3", True, False, "error").end_of_turn
        '<|eot_id|>'

    Taught in: [Chat templates](../part-1/chat-templates.ipynb).
    """
    spec = get_template(template)
    validate_messages(messages, spec)
    _check_flags(messages, add_generation_prompt, continue_final_message)
    if check_on_special_tokens(on_special_tokens) == "error":
        raise_if_special_tokens(messages, (*spec.special_tokens, *special_tokens), spec.name)
    return spec


def render_chat(
    messages: Sequence[Mapping[str, Any]],
    template: str | ChatTemplate = "chatml",
    *,
    add_generation_prompt: bool = False,
    continue_final_message: bool = False,
    on_special_tokens: OnSpecialTokens = "error",
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """The prompt text of ``messages`` in the format of ``template``.

    Args:
        messages: the conversation, a list of ``{"role", "content"}`` dicts.
        template: ``"chatml"`` (the course model), ``"phi3"``, ``"llama3"``,
            ``"gemma"``, ``"llama2"`` or ``"mistral"``.
        add_generation_prompt: end with the header of a new assistant turn,
            so that the model writes the reply.
        continue_final_message: leave the final assistant message open (no
            end-of-turn after it), so that the model continues it ("prefill").
        on_special_tokens: ``"error"`` (default) raises
            :class:`RoleInjectionError` if a message contains a special token
            of the template; ``"neutralise"`` lets it through. The text cannot
            show the difference: the token ids of
            :func:`~llmsforme.chat.encode_chat` can.
        tools: functions the model may call (OpenAI's shape), described in
            the system turn; ``tool`` messages and assistant ``tool_calls``
            are written in the format of :func:`~llmsforme.chat.with_tools`.

    Example:
        >>> print(render_chat([{"role": "system", "content": "Be brief."},
        ...                    {"role": "user", "content": "Hi!"}], add_generation_prompt=True))
        <|im_start|>system
        Be brief.<|im_end|>
        <|im_start|>user
        Hi!<|im_end|>
        <|im_start|>assistant
        <BLANKLINE>
        >>> print(render_chat([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Once"}],
        ...                   "llama3", continue_final_message=True))
        <|begin_of_text|><|start_header_id|>user<|end_header_id|>
        <BLANKLINE>
        Hi<|eot_id|><|start_header_id|>assistant<|end_header_id|>
        <BLANKLINE>
        Once

    Taught in: [Chat templates](../part-1/chat-templates.ipynb).
    """
    if uses_tools(messages, tools):
        messages = with_tools(messages, tools)
    spec = prepare(messages, template, add_generation_prompt, continue_final_message, on_special_tokens)
    return render_template(
        spec, messages, add_generation_prompt=add_generation_prompt, continue_final_message=continue_final_message
    )
