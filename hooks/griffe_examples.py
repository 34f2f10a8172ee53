"""Griffe extension: make the package docstrings render well in the API reference.

1. Sphinx roles such as ``:func:`greedy``` or ``:class:`~llmsforme.lm.ToyModel```
   become links (mkdocs-autorefs "optional" references: a target that is not
   rendered anywhere shows as code, without a warning).
2. ``Example:`` is read as an Examples section (see below).

In the Google docstring style only ``Examples:`` starts an examples section;
``Example:`` (as the package writes it) would be an admonition whose ``>>>``
lines are read as Markdown, which garbles them and can even look like broken
cross-references. This extension rewrites, before parsing,

    Example:                      ->  Examples:
    Example (some words):         ->  Examples:
                                          Some words.

so the API reference shows every example as a Python console block.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_HEADER = re.compile(r"^(?P<indent>[ \t]*)Example(?: \((?P<note>.+)\))?:[ \t]*$", re.MULTILINE)


def rewrite(docstring: str) -> str:
    """``Example...:`` headers of ``docstring`` turned into ``Examples:`` sections."""

    def replace(match: re.Match[str]) -> str:
        indent, note = match["indent"], match["note"]
        if not note:
            return f"{indent}Examples:"
        note = note[0].upper() + note[1:]
        return f"{indent}Examples:\n{indent}    {note.rstrip('.')}."

    return _HEADER.sub(replace, docstring)


_ROLE = re.compile(
    r":(?:py:)?(?:func|class|meth|mod|data|attr|exc|obj|const):`(?P<tilde>~?)(?P<text>[^`]+)`"
)


def _exists(loader: Any, path: str) -> bool:
    try:
        loader.modules_collection.get_member(path)
    except Exception:  # noqa: BLE001 - any lookup failure means "not there"
        return False
    return True


def sphinx_roles(docstring: str, obj: griffe.Object, loader: Any = None) -> str:
    """Sphinx cross-reference roles of ``docstring`` as autorefs references."""

    def replace(match: re.Match[str]) -> str:
        text = match["text"].strip()
        title, target = text, text
        explicit = re.fullmatch(r"(?P<title>.+?)\s*<(?P<target>[^>]+)>", text)
        if explicit:
            title, target = explicit["title"], explicit["target"]
        target = target.lstrip(".")
        if match["tilde"] and not explicit:
            title = target.rsplit(".", 1)[-1]
        candidates = [target]
        if loader is not None and not target.startswith("llmsforme"):
            scopes = [obj.path, obj.parent.path if obj.parent else "", obj.module.path, "llmsforme"]
            candidates = [f"{scope}.{target}" for scope in scopes if scope] + [target]
        identifier = next((c for c in candidates if loader is not None and _exists(loader, c)), candidates[-1])
        return f'<autoref identifier="{identifier}" optional><code>{title}</code></autoref>'

    return _ROLE.sub(replace, docstring)


class DoctestExamples(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, loader: Any = None, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = sphinx_roles(rewrite(obj.docstring.value), obj, loader)
