"""The course's digits diffusion model: its shipped weights, checked, and loaded offline.

``scripts/train_digits_diffusion.py`` trains a small class-conditional
``diffusers.UNet2DModel`` on scikit-learn's handwritten digits and writes
it into the package (``llmsforme/data/digits-diffusion/``) with a manifest:
how it was made, and the sha256 of every file, checked at each load like
the course model's cache.

Taught in: [Training the digits model](../part-5/training.ipynb).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch

from .schedule import cosine_schedule

__all__ = [
    "DigitsModel",
    "WeightsProblem",
    "file_sha256",
    "load_digits_model",
    "read_manifest",
    "shipped_folder",
    "write_weights_folder",
]

#: The manifest's name inside a weights folder.
MANIFEST = "manifest.json"


class WeightsProblem(ValueError):
    """A weights folder that is incomplete, corrupt or made for another format."""


@dataclass
class DigitsModel:
    """A trained digits model, ready for :func:`~llmsforme.diffusion.sample`.

    Attributes:
        unet: the ``diffusers.UNet2DModel`` that predicts noise, in eval mode.
        alphas_cumprod: ``abar_t`` for each training timestep.
        null_label: the class that means "no digit" (classifier-free guidance).
        image_size: images are ``image_size`` x ``image_size``, one channel.
        manifest: how the weights were made (script, seed, versions, checksums).
        prediction_type: what the network predicts: ``"epsilon"`` (the noise;
            the shipped model) or ``"v_prediction"``.
    """

    unet: Any
    alphas_cumprod: torch.Tensor
    null_label: int
    image_size: int
    manifest: dict = field(repr=False)
    prediction_type: str = "epsilon"

    @property
    def num_train_timesteps(self) -> int:
        return len(self.alphas_cumprod)


def shipped_folder() -> Path:
    """The folder of the weights that ship inside the package."""
    return Path(str(files("llmsforme").joinpath("data", "digits-diffusion")))


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(folder: Path, what: str, script: str) -> dict:
    """The manifest of a folder of trained weights, after checking every file it lists against its sha256.

    The course's trained models (the digits diffusion model, the digits
    CLIP, the text-to-image model) share this check; ``what`` names the
    kind of folder in errors, ``script`` the script that retrains it.

    Raises:
        FileNotFoundError: no manifest, or a file it lists is missing.
        WeightsProblem: the manifest is unreadable, or a checksum differs.
    """
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"no {MANIFEST} in {folder}: not a {what} folder")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        checksums = dict(manifest["sha256"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise WeightsProblem(f"{manifest_path} is not a {what} manifest ({error})") from error
    for name, expected in checksums.items():
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing (listed in {MANIFEST})")
        if file_sha256(path) != expected:
            raise WeightsProblem(
                f"{path} does not match its checksum in {MANIFEST}: the file is corrupt or was changed. "
                f"Reinstall the package, or retrain with {script}."
            )
    return manifest


def write_weights_folder(out: str | os.PathLike[str], save: Callable[[Path], None], manifest: dict) -> Path:
    """Write a folder of trained weights with its manifest, then swap it in for ``out``: never half a model.

    The training scripts' counterpart of :func:`read_manifest`. ``save(folder)``
    writes the weight files into a new folder beside ``out``; ``manifest``
    gains the sha256 of each (its ``"sha256"`` entry), is written as
    ``manifest.json``, and only then does the folder replace ``out``. If
    ``save`` fails, ``out`` is left as it was and no staging folder remains.

    Example::

        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "weights"
        >>> folder = write_weights_folder(out, lambda f: (f / "w.bin").write_bytes(b"1"), {"what": "a test"})
        >>> sorted(p.name for p in folder.iterdir()), read_manifest(folder, "test", "-")["what"]
        (['manifest.json', 'w.bin'], 'a test')
    """
    out = Path(out)
    if not callable(save):
        raise TypeError(f"save must be a function of the folder, got {type(save).__name__}")
    if not isinstance(manifest, dict):
        raise TypeError(f"manifest must be a dict, got {type(manifest).__name__}")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        save(staging)
        manifest["sha256"] = {path.name: file_sha256(path) for path in sorted(staging.iterdir())}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        staging.chmod(0o755)  # mkdtemp makes it private
        for path in staging.iterdir():
            path.chmod(0o644)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def load_digits_model(folder: str | os.PathLike[str] | None = None) -> DigitsModel:
    """Load the digits diffusion model, offline, after checking every file's sha256.

    Args:
        folder: ``None`` for the weights that ship with the package, or a
            folder written by ``scripts/train_digits_diffusion.py``.

    Raises:
        FileNotFoundError: the folder or a file of it is missing.
        WeightsProblem: a file's checksum differs from the manifest's (a
            corrupt or edited file), or the manifest is not one we can read.

    Example::

        >>> model = load_digits_model()
        >>> model.image_size, model.num_train_timesteps, model.null_label
        (16, 200, 10)
    """
    folder = shipped_folder() if folder is None else Path(folder).expanduser()
    if not isinstance(folder, Path):
        raise TypeError(f"folder must be a path or None, got {type(folder).__name__}")
    manifest = read_manifest(folder, "digits model", "scripts/train_digits_diffusion.py")
    manifest_path = folder / MANIFEST
    try:
        model = manifest["model"]
    except (KeyError, TypeError) as error:
        raise WeightsProblem(f"{manifest_path} is not a digits model manifest ({error})") from error
    from diffusers import UNet2DModel
    from diffusers.utils import logging as diffusers_logging

    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # a local folder: no hub chatter
    try:
        unet = UNet2DModel.from_pretrained(folder, local_files_only=True)
    finally:
        diffusers_logging.set_verbosity(verbosity)
    unet.eval().requires_grad_(False)
    if model.get("schedule") != "cosine":
        raise WeightsProblem(f"unknown noise schedule {model.get('schedule')!r} in {manifest_path}")
    prediction_type = model.get("prediction_type", "epsilon")  # older manifests: the noise
    if prediction_type not in ("epsilon", "v_prediction"):
        raise WeightsProblem(f"unknown prediction type {prediction_type!r} in {manifest_path}")
    return DigitsModel(
        unet=unet,
        alphas_cumprod=cosine_schedule(int(model["num_train_timesteps"])),
        null_label=int(model["null_label"]),
        image_size=int(unet.config.sample_size),
        manifest=manifest,
        prediction_type=prediction_type,
    )
