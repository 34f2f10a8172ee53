"""The Python examples of the Markdown pages run, as the notebooks do.

Notebook pages are executed by ``test_notebooks.py``; a prose page's
```` ```python ```` block is executed here. A block that cannot run on a
laptop (a GPU, a download) must say so on its first line, with
``# Illustration: not run``, and is then only checked to be valid Python.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)
ILLUSTRATION = "# Illustration: not run"
EXAMPLES = [
    (page, number, code)
    for page in sorted((ROOT / "docs").rglob("*.md"))
    if not page.relative_to(ROOT / "docs").as_posix().startswith("api/")
    for number, code in enumerate(BLOCK.findall(page.read_text(encoding="utf-8")), start=1)
]


def test_the_pages_have_examples():
    pages = {page.relative_to(ROOT / "docs").as_posix() for page, _, _ in EXAMPLES}
    assert {"part-5/index.md", "part-6/index.md"} <= pages


@pytest.mark.parametrize(
    ("page", "number", "code"), EXAMPLES, ids=[f"{p.relative_to(ROOT / 'docs')}#{n}" for p, n, _ in EXAMPLES]
)
def test_a_page_example_runs(page, number, code):
    compiled = compile(code, f"{page.name} block {number}", "exec")  # a syntax error fails here
    if code.startswith(ILLUSTRATION):
        return
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compiled, {"__name__": "__page_example__"})  # noqa: S102 - the course's own examples
    if "print(" in code:
        assert printed.getvalue().strip(), "the example prints nothing"
