"""The training view of a conversation: which tokens a fine-tuning loss is computed on.

Supervised fine-tuning shows the model whole conversations but only scores
what the assistant says: its content tokens and the end-of-turn token that
closes them (so that the model learns to stop). The role headers, the system
and user turns are context, not targets.

Taught in: [Chat templates](../part-1/chat-templates.ipynb).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from jinja2 import Environment

from .registry import ChatTemplate
from .render import ASSISTANT_END, ASSISTANT_START, prepare, render_template
from .tokens import tokenizer_special_tokens

__all__ = ["training_example", "training_rows", "training_html"]


def _strip_marks(marked: str) -> tuple[str, list[tuple[int, int]]]:
    """Remove the assistant marks; return the text and the (start, end) spans they enclosed."""
    text: list[str] = []
    spans: list[tuple[int, int]] = []
    length = 0
    start = 0
    for char in marked:
        if char == ASSISTANT_START:
            start = length
        elif char == ASSISTANT_END:
            spans.append((start, length))
        else:
            text.append(char)
            length += 1
    return "".join(text), spans


def training_example(
    tokenizer: Any, messages: Sequence[Mapping[str, Any]], template: str | ChatTemplate = "chatml"
) -> tuple[list[int], list[int]]:
    """Token ids of a whole conversation, and the 0/1 mask of the tokens a loss is computed on.

    The mask is 1 on each assistant message's content and its end-of-turn
    token, 0 elsewhere (headers, system, user, tool turns). A token that
    straddles a boundary counts as the assistant's.

    Example:
        >>> from llmsforme import load_model
        >>> model, tokenizer = load_model()
        >>> ids, mask = training_example(tokenizer, [{"role": "user", "content": "Hi"},
        ...                                          {"role": "assistant", "content": "Hello!"}])
        >>> tokenizer.decode([i for i, m in zip(ids, mask) if m])
        'Hello!<|im_end|>'

    Taught in: [Chat templates](../part-1/chat-templates.ipynb).
    """
    spec = prepare(messages, template, False, False, "error", tokenizer_special_tokens(tokenizer))
    for index, message in enumerate(messages):
        if ASSISTANT_START in message["content"] or ASSISTANT_END in message["content"]:
            raise ValueError(f"messages[{index}] contains U+E000 or U+E001, which mark the assistant's text")
    text, spans = _strip_marks(render_template(spec, messages, mark_assistant=True))
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [
        int(any(start < span_end and end > span_start for span_start, span_end in spans))
        for start, end in encoding["offset_mapping"]
    ]
    return list(encoding["input_ids"]), mask


def training_rows(
    tokenizer: Any, messages: Sequence[Mapping[str, Any]], template: str | ChatTemplate = "chatml"
) -> list[dict[str, Any]]:
    """:func:`training_example` as table rows: ``position``, ``token_id``, ``token``, ``trained``.

    Example:
        >>> from llmsforme import load_model
        >>> model, tokenizer = load_model()
        >>> training_rows(tokenizer, [{"role": "user", "content": "Hi"},
        ...                           {"role": "assistant", "content": "Hello!"}])[-3]
        {'position': 32, 'token_id': 17, 'token': '!', 'trained': True}

    Taught in: [Chat templates](../part-1/chat-templates.ipynb).
    """
    ids, mask = training_example(tokenizer, messages, template)
    return [
        {"position": position, "token_id": token_id, "token": tokenizer.decode([token_id]), "trained": bool(trained)}
        for position, (token_id, trained) in enumerate(zip(ids, mask, strict=True))
    ]


# Inline styles only; translucent colours and inherited text colour read on a
# light page and on a dark one. Jinja escapes the token texts (autoescape).
_TABLE = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True).from_string(
    """\
{% set cell = "padding:2px 8px;border-bottom:1px solid rgba(128,128,128,0.3)" %}
<table style="border-collapse:collapse;font-size:0.9em;color:inherit">
<thead><tr>
{% for name in ("#", "id", "token", "loss") %}<th style="{{ cell }};text-align:left">{{ name }}</th>{% endfor %}
</tr></thead>
<tbody>
{% for row in rows %}
<tr style="{{ trained_style if row.trained else context_style }}">\
<td style="{{ cell }}">{{ row.position }}</td>\
<td style="{{ cell }}">{{ row.token_id }}</td>\
<td style="{{ cell }}"><code>{{ row.visible }}</code></td>\
<td style="{{ cell }}">{{ "yes" if row.trained }}</td></tr>
{% endfor %}
</tbody>
</table>"""
)
TRAINED_STYLE = "background:rgba(46,160,67,0.25);border-left:3px solid rgba(46,160,67,0.9)"
CONTEXT_STYLE = "opacity:0.75"


def _visible(token: str) -> str:
    """Token text with its whitespace made visible."""
    return token.replace("\n", "\\n").replace("\t", "\\t").replace(" ", "\u00b7")


def training_html(
    tokenizer: Any, messages: Sequence[Mapping[str, Any]], template: str | ChatTemplate = "chatml"
) -> str:
    """An HTML table of the conversation's tokens, the trained ones in green.

    Self-contained (inline styles, no scripts, no external resources), with
    translucent colours that read on a light or a dark theme. Spaces show as
    ``·`` and newlines as ``\\n``.

    Example:
        >>> from llmsforme import load_model
        >>> model, tokenizer = load_model()
        >>> html = training_html(tokenizer, [{"role": "user", "content": "Hi"},
        ...                                  {"role": "assistant", "content": "Hello!"}])
        >>> html.startswith("<table")  # in a notebook: IPython.display.HTML(html)
        True

    Taught in: [Chat templates](../part-1/chat-templates.ipynb).
    """
    rows = [{**row, "visible": _visible(row["token"])} for row in training_rows(tokenizer, messages, template)]
    return _TABLE.render(rows=rows, trained_style=TRAINED_STYLE, context_style=CONTEXT_STYLE)
