"""Figures that a Markdown page reads from a stored data file instead of typing them.

A notebook page computes its numbers in its own cells. A Markdown page
cannot, so a number it repeats from a measurement (a benchmark's JSON file,
a results file) is written as a placeholder, which the site's hook
(``hooks/page_figures.py``) and the corpus of "Ask the course"
(:func:`llmsforme.apps.ask.corpus.load_corpus`) both replace with the value
read from the file. When the measurement is run again, the page follows.

The placeholder is a call, between double braces::

    {{ figure("examples/part-4/data/local_runtimes.json", "/llama_cpp_over_transformers") }}
    {{ figure("examples/part-4/data/local_runtimes.json",
              "/greedy/llama.cpp Q4_1 (the package's greedy)/tokens_per_second",
              over="/greedy/transformers fp32 (the package's greedy)/tokens_per_second",
              format=".1f") }}
    {{ figure("benchmarks/results/server.txt", pattern=r"^ +8 +[\\d.]+ +[\\d.]+% +([\\d.]+)$", format=".1f") }}

* the first argument is a file of the repository, relative to its root;
* in a JSON file, the second argument is a JSON Pointer (RFC 6901: keys
  separated by ``/``, with ``~1`` for a ``/`` inside a key and ``~0`` for
  ``~``), so keys may hold dots, commas and spaces;
* in any other (text) file, ``pattern=`` is a regular expression (with
  ``re.MULTILINE``) that must match exactly once and capture the number in
  its first group;
* ``over=`` divides by a second value of the same file (a JSON Pointer, or
  with ``pattern``, a second pattern), for ratios; ``minus=`` subtracts
  one instead, for differences (such as the memory a library adds);
* ``format=`` is a Python format spec (``".1f"``, ``","``, ``".0%"``); a
  plain value is written as stored without it, a ratio or a difference
  needs one.

Anything wrong (a missing file, key or match, a malformed placeholder)
raises :class:`FigureError`, which names the placeholder: the site's strict
build fails rather than print a wrong number.

This module imports nothing of the package, so that both the site's hook
and the applications can use it.
"""

from __future__ import annotations

import ast
import builtins
import json
import re
from pathlib import Path
from typing import Any

__all__ = ["FigureError", "figure_value", "substitute_figures"]

#: A placeholder: ``{{ figure(...) }}``, possibly over several lines.
PLACEHOLDER = re.compile(r"\{\{\s*(figure\s*\(.*?\))\s*\}\}", re.DOTALL)
#: What starts a placeholder; one that PLACEHOLDER cannot read is an error, not text.
_OPENING = re.compile(r"\{\{\s*figure\b")
_KEYWORDS = {"over", "minus", "format", "pattern"}


class FigureError(ValueError):
    """A placeholder that cannot be filled: its file, key or syntax is wrong."""


def _pointer(document: Any, pointer: str, where: str) -> Any:
    if not isinstance(pointer, str) or not pointer.startswith("/"):
        raise FigureError(f"{where}: a JSON Pointer starts with '/', got {pointer!r}")
    value = document
    walked = ""
    for raw in pointer[1:].split("/"):
        key = raw.replace("~1", "/").replace("~0", "~")
        walked += "/" + raw
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            keys = ", ".join(map(repr, value)) if isinstance(value, dict) else type(value).__name__
            raise FigureError(f"{where}: no {walked!r} in the file (the keys there: {keys})")
    return value


def _match(text: str, pattern: str, where: str) -> float:
    try:
        matches = list(re.finditer(pattern, text, re.MULTILINE))
    except re.error as error:
        raise FigureError(f"{where}: pattern {pattern!r} is not a regular expression: {error}") from None
    if len(matches) != 1:
        raise FigureError(f"{where}: pattern {pattern!r} must match once in the file, it matches {len(matches)} times")
    if not matches[0].groups():
        raise FigureError(f"{where}: pattern {pattern!r} needs a group around the number")
    try:
        return float(matches[0].group(1))
    except (TypeError, ValueError):
        raise FigureError(f"{where}: pattern {pattern!r} captured {matches[0].group(1)!r}, not a number") from None


def figure_value(
    root: str | Path,
    path: str,
    pointer: str | None = None,
    *,
    over: str | None = None,
    minus: str | None = None,
    pattern: str | None = None,
    format: str | None = None,  # the placeholder's own word (it hides the built-in here)
) -> str:
    """The text of one figure: the value at ``pointer`` (JSON) or ``pattern`` (text) in ``root/path``.

    Example::

        >>> import json, tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> _ = (root / "speed.json").write_text(json.dumps({"a.b": {"fast": 150.0, "slow": 25.0}}))
        >>> figure_value(root, "speed.json", "/a.b/fast")
        '150.0'
        >>> figure_value(root, "speed.json", "/a.b/fast", over="/a.b/slow", format=".1f")
        '6.0'
        >>> figure_value(root, "speed.json", "/a.b/fast", minus="/a.b/slow", format=".0f")
        '125'
    """
    where = f"figure({path!r})"
    if not isinstance(path, str) or not path:
        raise FigureError(f"{where}: the first argument must be a file path, relative to the repository")
    root = Path(root).resolve()
    file = (root / path).resolve()
    if root not in file.parents:
        raise FigureError(f"{where}: the file must be inside the repository {root}")
    if not file.is_file():
        raise FigureError(f"{where}: no file {file}")
    if over is not None and minus is not None:
        raise FigureError(f"{where}: over= (a ratio) and minus= (a difference) cannot be combined")
    other = over if over is not None else minus
    text = file.read_text(encoding="utf-8")
    if file.suffix == ".json":
        if pattern is not None or pointer is None:
            raise FigureError(f"{where}: a JSON file takes a JSON Pointer, such as '/key/subkey', and no pattern")
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise FigureError(f"{where}: not valid JSON: {error}") from None
        value = _pointer(document, pointer, where)
        second = _pointer(document, other, where) if other is not None else None
    else:
        if pattern is None or pointer is not None:
            raise FigureError(f"{where}: a text file takes pattern=, a regular expression with one group")
        value = _match(text, pattern, where)
        second = _match(text, other, where) if other is not None else None
    if second is not None:
        kind = "a ratio" if over is not None else "a difference"
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (value, second)):
            raise FigureError(f"{where}: {kind} needs two numbers, got {value!r} and {second!r}")
        if over is not None and second == 0:
            raise FigureError(f"{where}: the divisor {over!r} is 0")
        if format is None:
            raise FigureError(f"{where}: {kind} needs format=, such as '.1f'")
        value = value / second if over is not None else value - second
    if format is None:
        if isinstance(value, (dict, list)):
            raise FigureError(f"{where}: {pointer!r} is a {type(value).__name__}, not a single value")
        return str(value)
    try:
        return builtins.format(value, format)
    except (TypeError, ValueError) as error:
        raise FigureError(f"{where}: format {format!r} does not apply to {value!r}: {error}") from None


def _call(source: str) -> tuple[list[str], dict[str, str]]:
    """The arguments of ``figure(...)``: string literals only."""
    try:
        node = ast.parse(source.strip(), mode="eval").body
    except SyntaxError as error:
        raise FigureError(f"{{{{ {source} }}}}: not a call figure(...): {error.msg}") from None
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "figure"):
        raise FigureError(f"{{{{ {source} }}}}: not a call figure(...)")
    args, kwargs = [], {}
    for arg in node.args:
        if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
            raise FigureError(f"{{{{ {source} }}}}: the arguments must be strings")
        args.append(arg.value)
    for keyword in node.keywords:
        if keyword.arg not in _KEYWORDS:
            raise FigureError(f"{{{{ {source} }}}}: unknown argument {keyword.arg!r} (known: {sorted(_KEYWORDS)})")
        if not (isinstance(keyword.value, ast.Constant) and isinstance(keyword.value.value, str)):
            raise FigureError(f"{{{{ {source} }}}}: {keyword.arg}= must be a string")
        kwargs[keyword.arg] = keyword.value.value
    if not 1 <= len(args) <= 2:
        raise FigureError(f"{{{{ {source} }}}}: figure() takes a file and, for JSON, a pointer")
    return args, kwargs


def substitute_figures(markdown: str, root: str | Path) -> str:
    """``markdown`` with every ``{{ figure(...) }}`` replaced by its value, read under ``root``.

    Example::

        >>> import json, tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> _ = (root / "bench.json").write_text(json.dumps({"ratio": 6.3}))
        >>> substitute_figures('{{ figure("bench.json", "/ratio") }} times as fast', root)
        '6.3 times as fast'
    """
    if not isinstance(markdown, str):
        raise TypeError(f"markdown must be a str, got {type(markdown).__name__}")

    def replace(match: re.Match) -> str:
        args, kwargs = _call(match.group(1))
        try:
            return figure_value(root, *args, **kwargs)
        except FigureError as error:
            raise FigureError(f"{{{{ {' '.join(match.group(1).split())} }}}}: {error}") from None

    result = PLACEHOLDER.sub(replace, markdown)
    leftover = _OPENING.search(result)
    if leftover:
        line = result[: leftover.start()].count("\n") + 1
        raise FigureError(f"line {line}: a '{{{{ figure' placeholder that does not close with ') }}}}'")
    return result
