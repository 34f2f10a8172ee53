"""Tables of tokens for notebooks and pages: Markdown there, aligned text elsewhere.

:func:`token_table` shows rows of tokens (e.g. from
:func:`~llmsforme.decoding.next_token_table`) as a table that the site,
Jupyter and Colab all render, with the tokens a filter keeps in bold.

Taught in: [Top-k and top-p sampling](../part-1/top-k-top-p.ipynb),
[Temperature](../part-1/temperature.ipynb).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["TokenTable", "token_table"]

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~])")


class TokenTable:
    """A table shown as Markdown in notebooks and on the site, and as aligned text elsewhere.

    Cells are plain strings; Markdown characters in them are escaped, so any
    text (a generated sample, a token such as ``<|im_end|>``) shows as is.
    Columns listed in ``code`` are shown as code; rows listed in ``bold`` in
    bold (the kept tokens of :func:`token_table`).

    Example:
        >>> table = TokenTable(["setting", "text"], [["T=0.5", "a *pizza*"]])
        >>> table._repr_markdown_().splitlines()[-1]
        '| T=0.5 | a \\\\*pizza\\\\* |'

    Taught in: [Temperature and top-p together](../part-1/temperature-and-top-p.ipynb).
    """

    def __init__(
        self,
        header: Sequence[str],
        rows: Sequence[Sequence[str]],
        align: Sequence[str] | None = None,
        *,
        code: Iterable[int] = (),
        bold: Iterable[int] = (),
    ) -> None:
        self.header = [str(h) for h in header]
        self.rows = [[str(c) for c in row] for row in rows]
        self.align = list(align) if align is not None else ["left"] * len(self.header)
        self.code, self.bold = set(code), set(bold)
        if any(len(row) != len(self.header) for row in self.rows) or len(self.align) != len(self.header):
            raise ValueError("every row, and align, must have one entry per header column")

    def _cell(self, row: int, column: int, text: str) -> str:
        if column in self.code:
            ticks = "``" if "`" in text else "`"
            pad = " " if ticks == "``" else ""
            text = f"{ticks}{pad}{text}{pad}{ticks}".replace("|", "\\|")
        else:
            text = _MARKDOWN_SPECIAL.sub(r"\\\1", text)
        return f"**{text}**" if row in self.bold else text

    def _repr_markdown_(self) -> str:
        rule = ["---:" if a == "right" else "---" for a in self.align]
        lines = ["| " + " | ".join(_MARKDOWN_SPECIAL.sub(r"\\\1", h) for h in self.header) + " |",
                 "| " + " | ".join(rule) + " |"]
        for r, row in enumerate(self.rows):
            lines.append("| " + " | ".join(self._cell(r, c, text) for c, text in enumerate(row)) + " |")
        return "\n".join(lines)

    def __repr__(self) -> str:
        widths = [max([len(h)] + [len(r[i]) for r in self.rows]) for i, h in enumerate(self.header)]

        def line(cells: Sequence[str]) -> str:
            return "  ".join(
                c.rjust(w) if a == "right" else c.ljust(w) for c, w, a in zip(cells, widths, self.align)
            ).rstrip()

        return "\n".join([line(self.header), *(line(r) for r in self.rows)])


def token_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] = ("rank", "token", "probability", "cumulative"),
    *,
    kept: str | None = None,
    digits: int = 3,
) -> TokenTable:
    """Rows of tokens as a table; with ``kept``, rows whose ``row[kept]`` is true are marked.

    ``rows`` are dicts such as those of
    :func:`~llmsforme.decoding.next_token_table`; ``columns`` are their keys;
    floats are shown with ``digits`` decimals and tokens with ``␣`` for spaces.
    Kept rows are in bold, with "yes" in a last column.

    Example:
        >>> rows = [{"token": " plain", "probability": 0.5, "top_p": True},
        ...         {"token": " meadow", "probability": 0.15, "top_p": False}]
        >>> print(repr(token_table(rows, ["token", "probability"], kept="top_p")))
        token    probability  kept
        ␣plain         0.500   yes
        ␣meadow        0.150     -

    Taught in: [Top-k and top-p sampling](../part-1/top-k-top-p.ipynb).
    """
    from ..lm import visible_token

    header = [c.replace("_", "-") for c in columns]
    align = ["left" if c == "token" else "right" for c in columns]
    code = [i for i, c in enumerate(columns) if c == "token"]
    if kept is not None:
        header.append("kept")
        align.append("right")
    body, bold = [], []
    for index, row in enumerate(rows):
        cells = []
        for column in columns:
            value = row[column]
            if column == "token":
                cells.append(visible_token(str(value)))
            elif isinstance(value, float):
                cells.append(f"{value:.{digits}f}")
            else:
                cells.append(str(value))
        if kept is not None:
            is_kept = bool(row[kept])
            cells.append("yes" if is_kept else "-")
            if is_kept:
                bold.append(index)
        body.append(cells)
    return TokenTable(header, body, align, code=code, bold=bold)
