"""The environment that produced a notebook's stored outputs, read from ``requirements.lock``.

Outputs are only meaningful with the versions that made them. Each notebook
page of the site ends with a line naming them (the site's hook
``hooks/notebook_pages.py``), and each notebook's setup cell compares the
reader's versions with them (:func:`llmsforme.notebooks.setup_cell_source`):

- Python, from the lock's header (``make lock`` records it);
- torch, transformers and llmsforme, which every notebook runs on;
- the libraries the notebook itself imports (peft, openai, diffusers...),
  found in its code cells and looked up in the lock;
- the date of its last execution, which ``python -m llmsforme.notebooks run``
  stores in the notebook's metadata (``metadata.llmsforme.executed``).

This module imports nothing of the package, so that the site's hook can
load it without torch (``make serve`` installs only the site's packages).

Taught in: [Running the examples](../index.md#running-the-examples).

Example::

    >>> lock = "# on Python 3.11.7; do not edit\\ntorch==2.13.0+cpu\\nscikit_learn==1.7.2\\n"
    >>> versions = locked_versions(lock)
    >>> versions["torch"], versions["scikit-learn"], lock_python(lock)
    ('2.13.0+cpu', '1.7.2', '3.11.7')
    >>> imported_distributions(["import sklearn.datasets", "from peft import LoraConfig", "import json"], versions)
    ['scikit-learn']
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "ALWAYS",
    "PART_LIBRARIES",
    "environment_summary",
    "execution_date",
    "imported_distributions",
    "lock_python",
    "locked_versions",
    "normalize",
]

#: Shown for every notebook: the package and what all of it runs on.
ALWAYS = ("torch", "transformers")
#: The libraries the package runs for a part's lessons, shown on its pages even where
#: the notebook does not import them itself (Part 5's pages sample through diffusers).
PART_LIBRARIES = {
    "part-2": ("peft", "datasets"),
    "part-3": ("openai",),
    "part-4": ("llama-cpp-python",),
    "part-5": ("diffusers", "scikit-learn"),
    "part-6": ("sentence-transformers", "duckdb"),
}

# Import names that differ from their distribution's name.
_DISTRIBUTION_OF = {
    "sklearn": "scikit-learn",
    "llama_cpp": "llama-cpp-python",
    "PIL": "pillow",
    "yaml": "pyyaml",
    "IPython": "ipython",
}
_IMPORT = re.compile(r"^\s*(?:import|from)\s+([A-Za-z_]\w*)", re.MULTILINE)


def normalize(name: str) -> str:
    """A distribution name as pip compares them (PEP 503): ``Jinja2`` and ``jinja2`` are one."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_versions(lock_text: str) -> dict[str, str]:
    """``{normalized name: version}`` of every ``name==version`` line of a lock file."""
    if not isinstance(lock_text, str):
        raise TypeError(f"lock_text must be the lock file's text (a str), got {type(lock_text).__name__}")
    found = re.findall(r"^([A-Za-z0-9][\w.-]*)==([^\s;#]+)", lock_text, flags=re.MULTILINE)
    return {normalize(name): version for name, version in found}


def lock_python(lock_text: str) -> str | None:
    """The Python version the lock was written on (its header says ``on Python X.Y.Z``), if it says."""
    match = re.search(r"^#.*\bon Python (\d+\.\d+(?:\.\d+)?)", lock_text, flags=re.MULTILINE)
    return match.group(1) if match else None


def imported_distributions(sources: Iterable[str], versions: Mapping[str, str]) -> list[str]:
    """The locked distributions that code cells import, in order of first import, without
    :data:`ALWAYS` and ``llmsforme`` (always shown). Standard-library modules are not in
    the lock, so they drop out."""
    found: list[str] = []
    for source in sources:
        for module in _IMPORT.findall(source):
            name = normalize(_DISTRIBUTION_OF.get(module, module))
            if name in versions and name not in found and name not in (*ALWAYS, "llmsforme"):
                found.append(name)
    return found


def execution_date(notebook: Mapping[str, Any]) -> str | None:
    """The date the notebook's outputs were stored (``YYYY-MM-DD``), if its metadata says."""
    date = notebook.get("metadata", {}).get("llmsforme", {}).get("executed")
    return date if isinstance(date, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", date) else None


def environment_summary(
    notebook: Mapping[str, Any], lock_text: str, package_version: str, *, part: str = ""
) -> list[tuple[str, str]]:
    """``[(name, version), ...]`` of what produced a notebook's outputs: Python, torch,
    transformers, llmsforme, the libraries of its ``part`` (``"part-5"``, see
    :data:`PART_LIBRARIES`), then the others its code imports."""
    versions = locked_versions(lock_text)
    sources = ["".join(cell.get("source", "")) for cell in notebook.get("cells", []) if cell.get("cell_type") == "code"]
    rows = [("Python", lock_python(lock_text) or "?")]
    rows += [(name, versions[name]) for name in ALWAYS if name in versions]
    rows.append(("llmsforme", package_version))
    libraries = [name for name in PART_LIBRARIES.get(part, ()) if name in versions]
    libraries += [name for name in imported_distributions(sources, versions) if name not in libraries]
    return rows + [(name, versions[name]) for name in libraries]
