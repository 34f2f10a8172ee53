"""A conversation is a list of messages: ``{"role": ..., "content": ...}`` dicts.

:func:`validate_messages` checks one against the rules of a chat template
before it is rendered, and says what is wrong and where.

Taught in: [Message roles](../part-1/message-roles.ipynb).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, TypedDict

from .registry import ChatTemplate, get_template

__all__ = ["Message", "Role", "validate_messages"]

Role = Literal["system", "user", "assistant", "tool"]


class Message(TypedDict):
    """One turn of a conversation. Plain dicts with these two keys work too.

    Taught in: [Message roles](../part-1/message-roles.ipynb).
    """

    role: Role
    content: str


def _accepted(spec: ChatTemplate) -> str:
    return ", ".join(repr(role) for role in spec.roles)


def _check_message(index: int, message: object, spec: ChatTemplate) -> str:
    """Check one message's shape; return its role."""
    if not isinstance(message, Mapping):
        raise TypeError(f"messages[{index}] must be a dict with 'role' and 'content', got {type(message).__name__}")
    if "role" not in message:
        raise ValueError(f"messages[{index}] has no 'role'; accepted roles for {spec.name!r}: {_accepted(spec)}")
    role = message["role"]
    if role not in spec.roles:
        raise ValueError(
            f"messages[{index}] has unknown role {role!r}; accepted roles for {spec.name!r}: {_accepted(spec)}"
        )
    if "content" not in message:
        raise ValueError(f"messages[{index}] ({role}) has no 'content': give it a string")
    content = message["content"]
    if not isinstance(content, str):
        raise TypeError(f"messages[{index}]['content'] must be a string, got {type(content).__name__}")
    try:
        content.encode("utf-8")
    except UnicodeEncodeError as error:  # a lone surrogate such as "\ud800": not text a tokenizer can read
        raise ValueError(
            f"messages[{index}]['content'] is not valid Unicode text: character {error.start} is "
            f"{content[error.start]!r}, half of a UTF-16 surrogate pair"
        ) from None
    return str(role)


def validate_messages(messages: Sequence[Mapping[str, object]], template: str | ChatTemplate = "chatml") -> None:
    """Check that ``messages`` is a conversation ``template`` can render.

    Raises ``TypeError`` for a value of the wrong type and ``ValueError`` for
    a conversation that breaks a rule: empty, an unknown role, a missing
    content, a system message that is not first, or, for templates that need
    it (gemma, llama2, mistral), turns that do not alternate user/assistant.

    Example:
        >>> validate_messages([{"role": "user", "content": "Hi"}])  # fine: returns None
        >>> validate_messages([{"role": "user", "content": "Hi"}, {"role": "system", "content": "Be brief"}])
        Traceback (most recent call last):
        ...
        ValueError: messages[1] is a system message, but a system message may only come first (index 0)
        >>> validate_messages([{"role": "user", "content": "Hi"}, {"role": "user", "content": "Hi?"}], "gemma")
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: messages[1] has role 'user', but 'gemma' needs user and assistant turns to alternate, ...

    Taught in: [Message roles](../part-1/message-roles.ipynb).
    """
    spec = get_template(template)
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise TypeError(f"messages must be a list of {{'role', 'content'}} dicts, got {type(messages).__name__}")
    if not messages:
        raise ValueError("messages is empty: a conversation needs at least one message")
    roles = [_check_message(index, message, spec) for index, message in enumerate(messages)]
    for index, role in enumerate(roles[1:], start=1):
        if role == "system":
            raise ValueError(
                f"messages[{index}] is a system message, but a system message may only come first (index 0)"
            )
    if spec.alternation:
        turns = roles[1:] if roles[0] == "system" else roles
        first = 1 if roles[0] == "system" else 0
        if not turns:
            raise ValueError(
                f"{spec.name!r} writes the system message into the first user turn: add a user message after it"
            )
        for offset, role in enumerate(turns):
            expected = "user" if offset % 2 == 0 else "assistant"
            if role != expected:
                raise ValueError(
                    f"messages[{first + offset}] has role {role!r}, but {spec.name!r} needs user and assistant "
                    f"turns to alternate, starting with user: expected {expected!r}"
                )
