"""The package's layers: data flows one way, so a module imports only the layers below it.

model sources -> language models -> processors -> strategies -> chat ->
server -> apps -> the edges (command line, plots, notebook tools). Side
modules (LoRA, fine-tuning, quantization, evaluation) stand alone on the
lower layers. Processors import nothing of the package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "llmsforme"

LAYERS = {
    "page_figures": 0,  # imports nothing of the package: the site's hook and the apps read pages with it
    "environment": 0,  # imports nothing of the package: the site's hook reads the lock with it
    "model_source": 1,
    "lm": 2,
    "processors": 3,
    "constrained": 3,  # a processor: imports the grammar library and torch, nothing of the package
    "decoding": 4,
    "batching": 4,  # continuous batching: the strategies' choices for many sequences in one forward pass
    "examples": 4,
    "chat": 5,
    # side modules: on the lower layers only
    "lora": 5.5,
    "finetune": 5.5,
    "quantization": 5.5,
    "evaluate": 5.5,
    "diffusion": 5.5,
    "multimodal": 5.6,  # CLIP, text to image, the VLM: the digits from diffusion, the course model via lm and chat
    "server": 6,
    "apps": 7,
    "display": 8,
    "cli": 8,
    "notebooks": 8,
    "notebook_kernels": 8,  # the test suite's fast kernels: a script that imports nothing of the package
}
EDGES = {"display", "cli", "notebooks", "notebook_kernels"}  # may import any layer, and each other


def _top(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _imported(path: Path) -> set[str]:
    """The top-level package modules that a file imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = path.relative_to(PACKAGE).with_suffix("").parts
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(here[: len(here) - node.level])
                module = (node.module or "").split(".") if node.module else []
                parts = base + module
                names = [".".join(["llmsforme", *parts])] if parts else [
                    f"llmsforme.{alias.name}" for alias in node.names
                ]
            else:
                names = [node.module or ""]
        else:
            continue
        for name in names:
            if name.startswith("llmsforme."):
                found.add(name.split(".")[1])
            elif name == "llmsforme":
                found.add("__init__")
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_module_imports_only_lower_layers(path: Path):
    top = _top(path)
    assert top in LAYERS, f"{top}: give this module a layer in tests/test_architecture.py"
    for other in _imported(path) - {top}:
        assert other != "__init__", f"{path.name} imports the package root: import the module it needs"
        assert other in LAYERS, other
        assert LAYERS[other] < LAYERS[top] or top in EDGES, (
            f"{top} (layer {LAYERS[top]}) imports {other} (layer {LAYERS[other]})"
        )


def test_processors_import_nothing_of_the_package():
    assert _imported(PACKAGE / "processors.py") == set()


def test_the_layer_check_catches_an_upward_import(tmp_path: Path, monkeypatch):
    fake = tmp_path / "llmsforme"
    (fake / "chat").mkdir(parents=True)
    (fake / "chat" / "loop.py").write_text("from ..server import start_server\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    with pytest.raises(AssertionError, match="chat .* imports server"):
        test_a_module_imports_only_lower_layers(fake / "chat" / "loop.py")
