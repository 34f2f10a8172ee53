"""The GitHub workflows a maintainer pushes with the repository, and the version they publish.

- ``ci.yml`` runs the README's test command (through ``.ci/run``) on pushes and pull requests;
- ``pages.yml`` builds the site with the README's build command on a version tag and deploys it;
- the tag, ``pyproject.toml`` and the notebooks' Colab setup cells name the same version.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"


def workflow(name: str) -> dict:
    document = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    assert isinstance(document, dict), f"{name} is not a YAML mapping"
    document["on"] = document.get("on", document.pop(True, None))  # YAML 1.1 reads a bare `on` as true
    return document


def commands(document: dict) -> list[str]:
    return [step["run"] for job in document["jobs"].values() for step in job.get("steps", []) if "run" in step]


def version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]


@pytest.mark.parametrize("name", ["ci.yml", "pages.yml"])
def test_the_workflows_parse(name):
    document = workflow(name)
    assert document["jobs"] and document["on"], name


def test_ci_runs_the_readme_test_command_on_pushes_and_pull_requests():
    document = workflow("ci.yml")
    assert {"push", "pull_request"} <= set(document["on"])
    assert any(command.strip() == "bash .ci/run" for command in commands(document))
    assert "make test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in (ROOT / "README.md").read_text(encoding="utf-8")
    job = document["jobs"]["test"]
    assert job["timeout-minutes"] <= 90


def test_pages_builds_with_the_readme_command_on_a_version_tag_and_deploys():
    document = workflow("pages.yml")
    patterns = document["on"]["push"]["tags"]
    assert any(fnmatch.fnmatch(f"v{version()}", pattern) for pattern in patterns)
    assert not any(fnmatch.fnmatch("main", pattern) for pattern in patterns)
    run = commands(document)
    assert "make build" in run and "make build" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert any("pyproject.toml" in command and "GITHUB_REF_NAME" in command for command in run)  # tag = version
    uses = [step.get("uses", "") for job in document["jobs"].values() for step in job.get("steps", [])]
    assert any(u.startswith("actions/upload-pages-artifact") for u in uses)
    assert any(u.startswith("actions/deploy-pages") for u in uses)


def test_the_setup_cells_install_the_tag_of_this_version():
    tag = f"v{version()}"
    notebooks = sorted((ROOT / "examples").rglob("*.ipynb"))
    assert notebooks
    for path in notebooks:
        found = re.findall(r"llmsforme/llmsforme@(v[\w.]+)", path.read_text(encoding="utf-8"))
        assert found and set(found) == {tag}, f"{path.relative_to(ROOT)}: {found} (pyproject.toml says {tag})"
