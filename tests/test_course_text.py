"""The text that Part 2 measures perplexity on ships with the package and is what the script writes."""

from __future__ import annotations

import importlib.util
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("course_text", ROOT / "scripts" / "course_text.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_text_is_what_the_script_writes():
    shipped = resources.files("llmsforme").joinpath("data/course_text.txt").read_text(encoding="utf-8")
    assert shipped == _script().course_text()


def test_text_is_long_enough_and_plain(course_model):
    _, tokenizer = course_model
    text = resources.files("llmsforme").joinpath("data/course_text.txt").read_text(encoding="utf-8")
    assert len(tokenizer(text, add_special_tokens=False).input_ids) >= 2000
    assert "](" not in text and "|" not in text and "**" not in text


def test_plain_text_removes_markdown():
    script = _script()
    page = "# Title\n\n| a | b |\n| --- | --- |\n\nSee [the paper][p] and [this](https://x.org), *now*.\n\n[p]: https://p.org\n"
    assert script.plain_text(page) == "Title\n\nSee the paper and this, now.\n"
