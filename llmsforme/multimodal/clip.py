"""CLIP in miniature: handwritten digits and their captions in one space, trained contrastively on a CPU.

CLIP (Radford et al., 2021) trains an image encoder and a text encoder
together so that a picture and its caption land close to each other in a
shared space, and far from the other captions of the batch. Here:

- the **images** are scikit-learn's digits at 16 x 16, read by a small
  convolutional network (:class:`ImageEncoder`);
- the **texts** are captions such as "a handwritten seven" or "the digit
  7", read by all-MiniLM-L6-v2 (the course's sentence embedder, frozen)
  and mapped into the shared space by one trained linear layer. A text
  encoder trained from scratch on a few dozen caption templates would
  know only their words; MiniLM already places "draw a 7" near "the
  digit seven", which is what zero-shot prompts in new words need;
- the **loss** is CLIP's: cross-entropy over the cosine similarities,
  scaled by a learned temperature, in both directions (image to caption,
  caption to image), averaged (:func:`clip_loss`). The test suite checks it
  against transformers' ``CLIPModel`` loss.

A digit has many images, so a batch of CLIP pairs must not hold two of
the same digit: their captions would count as wrong answers for each
other. Training batches are groups of ten, one image of each digit
(``scripts/train_digits_clip.py``).

Taught in: [CLIP: images and text in one space](../part-5/clip.ipynb) (the loss by hand,
zero-shot classification, search both ways, the failures); the idea, in
[What "multimodal" means](../part-5/multimodal.md).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DIGIT_WORDS",
    "HELD_OUT_TEMPLATES",
    "TRAINING_TEMPLATES",
    "DigitsCLIP",
    "ImageEncoder",
    "caption",
    "class_vectors",
    "clip_loss",
    "held_out_digits",
    "load_digits_clip",
    "shipped_folder",
    "split_digits",
    "zero_shot",
]

MANIFEST, WEIGHTS = "manifest.json", "model.safetensors"

#: The share of scikit-learn's digits kept out of the CLIP's training, and the seed that picks them.
HELD_OUT_SHARE, SPLIT_SEED = 0.2, 0

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TRAINING_TEMPLATES = (
    "a handwritten {word}",
    "the digit {digit}",
    "{digit}",
    "a {word} written by hand",
    "the number {word}",
    "a picture of the digit {word}",
    "handwritten number {digit}",
    "an image of a {word}",
)
"""The captions of training (the CLIP's, then the text-to-image model's): ``{digit}`` is the numeral,
``{word}`` its English name; :func:`caption` fills them in."""
HELD_OUT_TEMPLATES = (
    "draw a {digit}",
    "{word}, handwritten",
    "show me a {word}",
    "a scanned {digit}",
    "someone wrote the numeral {digit}",
    "{word}",
)
"""Phrasings that training never saw: zero-shot prompts in a reader's own words."""


def caption(digit: int, template: str) -> str:
    """A template filled in for one digit.

    Example::

        >>> caption(7, "a handwritten {word}"), caption(3, "the digit {digit}")
        ('a handwritten seven', 'the digit 3')
    """
    if isinstance(digit, bool) or not isinstance(digit, int) or not 0 <= digit <= 9:
        raise ValueError(f"digit must be an int in [0, 9], got {digit!r}")
    if not isinstance(template, str) or ("{digit}" not in template and "{word}" not in template):
        raise ValueError(f"template must be a str with {{digit}} or {{word}} in it, got {template!r}")
    return template.format(digit=digit, word=DIGIT_WORDS[digit])


def split_digits(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the digits the CLIP trained on, and of those it never saw (stratified, seeded).

    Example::

        >>> from llmsforme.diffusion import load_digit_images
        >>> train, held_out = split_digits(load_digit_images(16)[1])
        >>> len(train), len(held_out)
        (1437, 360)
    """
    from sklearn.model_selection import train_test_split

    train, held_out = train_test_split(
        torch.arange(len(labels)).numpy(), test_size=HELD_OUT_SHARE, stratify=labels.numpy(), random_state=SPLIT_SEED
    )
    return torch.from_numpy(train), torch.from_numpy(held_out)


def held_out_digits(size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """The 360 digits the CLIP never trained on: ``(images, labels)``, images in [0, 1].

    Example::

        >>> images, labels = held_out_digits()
        >>> tuple(images.shape), labels[:5].tolist()
        ((360, 1, 16, 16), [7, 6, 3, 7, 7])
    """
    from ..diffusion import load_digit_images

    images, labels = load_digit_images(size)
    held_out = split_digits(labels)[1]
    return images[held_out], labels[held_out]


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric contrastive loss: image ``i`` goes with text ``i``, and with no other text of the batch.

    ``image_features`` and ``text_features`` are ``(..., n, d)`` and
    normalised; ``logit_scale`` is the log of the temperature's inverse
    (CLIP starts it at ``log(1 / 0.07)``). Leading dimensions are
    independent groups: each holds its own ``n`` pairs, and the loss is the
    mean over all of them.

    Example::

        >>> features = F.normalize(torch.eye(3), dim=-1)
        >>> round(float(clip_loss(features, features, torch.tensor(math.log(100.0)))), 6)
        0.0
    """
    if image_features.shape != text_features.shape or image_features.dim() < 2:
        raise ValueError(
            f"image_features and text_features must have one shape (..., n, d), got "
            f"{tuple(image_features.shape)} and {tuple(text_features.shape)}"
        )
    logits_per_image = logit_scale.exp() * image_features @ text_features.transpose(-1, -2)
    n = logits_per_image.shape[-1]
    labels = torch.arange(n, device=logits_per_image.device).expand(logits_per_image.shape[:-1])
    image_loss = F.cross_entropy(logits_per_image.reshape(-1, n), labels.reshape(-1))
    text_loss = F.cross_entropy(logits_per_image.transpose(-1, -2).reshape(-1, n), labels.reshape(-1))
    return (image_loss + text_loss) / 2


class ImageEncoder(nn.Module):
    """A small CNN: a 16 x 16 digit in [0, 1] -> a vector of ``dim`` numbers (not normalised)."""

    def __init__(self, dim: int = 64) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),   # 32 x 8 x 8
            nn.Conv2d(32, 64, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),  # 64 x 4 x 4
            nn.Flatten(), nn.Linear(64 * 16, 128), nn.GELU(), nn.Linear(128, dim),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)


class DigitsCLIP(nn.Module):
    """The image encoder, the text projection and the temperature: what training changes.

    Texts enter as all-MiniLM-L6-v2 vectors (384 numbers, from
    :meth:`embed_texts`); the embedder itself stays frozen and is not part
    of the saved weights.

    Example::

        >>> model = DigitsCLIP()
        >>> images = torch.zeros(2, 1, 16, 16)
        >>> tuple(model.encode_images(images).shape), round(model.logit_scale.exp().item(), 2)
        ((2, 64), 14.29)
    """

    TEXT_DIM = 384  #: all-MiniLM-L6-v2's vectors
    image_size = 16  #: the side of the images it reads, in pixels

    def __init__(self, dim: int = 64) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or not 2 <= dim <= 1024:
            raise ValueError(f"dim must be an int in [2, 1024], got {dim!r}")
        self.dim = dim
        self.image_encoder = ImageEncoder(dim)
        self.text_projection = nn.Linear(self.TEXT_DIM, dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.manifest: dict = {}  # how the weights were made (load_digits_clip fills it)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``(n, 1, 16, 16)`` in [0, 1] -> unit vectors ``(n, dim)``."""
        if images.dim() != 4 or tuple(images.shape[1:]) != (1, 16, 16):
            raise ValueError(f"images must be (n, 1, 16, 16), got {tuple(images.shape)}")
        return F.normalize(self.image_encoder(images), dim=-1)

    def encode_text_vectors(self, vectors: torch.Tensor) -> torch.Tensor:
        """MiniLM vectors ``(..., 384)`` -> unit vectors ``(..., dim)`` in the shared space."""
        if vectors.shape[-1] != self.TEXT_DIM:
            raise ValueError(f"vectors must end in {self.TEXT_DIM} numbers (MiniLM's), got {tuple(vectors.shape)}")
        return F.normalize(self.text_projection(vectors), dim=-1)

    @staticmethod
    def embed_texts(texts: Sequence[str], embedder: Any = None) -> torch.Tensor:
        """The frozen text side: MiniLM vectors ``(n, 384)`` of ``texts``."""
        if isinstance(texts, str) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise ValueError("texts must be a non-empty list of non-empty strings")
        if embedder is None:
            from ..model_source import load_embedder

            embedder = load_embedder()
        return torch.as_tensor(embedder.encode(list(texts), normalize_embeddings=True), dtype=torch.float32)

    def encode_texts(self, texts: Sequence[str], embedder: Any = None) -> torch.Tensor:
        """Captions -> unit vectors ``(n, dim)`` in the shared space: MiniLM, then the trained projection.

        Without ``embedder``, all-MiniLM-L6-v2 is loaded once and kept.

        Example::

            >>> model = load_digits_clip()
            >>> texts = model.encode_texts(["a handwritten seven", "draw a 7"])
            >>> tuple(texts.shape), round(float(texts[0] @ texts[1]), 1) > 0.5
            ((2, 64), True)
        """
        with torch.no_grad():
            return self.encode_text_vectors(self.embed_texts(texts, embedder or _shared_embedder()))

    def forward(self, images: torch.Tensor, text_vectors: torch.Tensor) -> torch.Tensor:
        """``logits_per_image``: the scaled cosine similarity of every image with every text."""
        return self.logit_scale.exp() * self.encode_images(images) @ self.encode_text_vectors(text_vectors).T


@functools.lru_cache(maxsize=1)
def _shared_embedder() -> Any:
    from ..model_source import load_embedder

    return load_embedder()


def shipped_folder() -> Path:
    """The folder of the digits CLIP's weights that ship inside the package."""
    return Path(str(files("llmsforme").joinpath("data", "digits-clip")))


def load_digits_clip(folder: str | os.PathLike[str] | None = None) -> DigitsCLIP:
    """The trained digits CLIP, offline, after checking every file's sha256 against its manifest.

    Args:
        folder: ``None`` for the weights that ship with the package, or a
            folder written by ``scripts/train_digits_clip.py``.

    Raises:
        FileNotFoundError: the folder or a file of it is missing.
        WeightsProblem: a checksum differs from the manifest's, or the
            manifest is not one this version reads.

    Example::

        >>> model = load_digits_clip()
        >>> model.dim, model.manifest["training"]["script"]
        (64, 'scripts/train_digits_clip.py')
    """
    from safetensors.torch import load_file

    from ..diffusion.weights import WeightsProblem, read_manifest

    folder = shipped_folder() if folder is None else Path(folder).expanduser()
    manifest = read_manifest(folder, "digits CLIP", "scripts/train_digits_clip.py")
    try:
        dim = int(manifest["model"]["dim"])
    except (KeyError, TypeError, ValueError) as error:
        raise WeightsProblem(f"{folder / MANIFEST} is not a digits CLIP manifest ({error})") from error
    model = DigitsCLIP(dim)
    model.load_state_dict(load_file(folder / WEIGHTS))
    model.manifest = manifest
    return model.eval().requires_grad_(False)


def class_vectors(model: DigitsCLIP, templates: Sequence[str] = TRAINING_TEMPLATES, embedder: Any = None) -> torch.Tensor:
    """One unit vector per digit: the mean of its captions' vectors over ``templates``, normalised
    (CLIP's prompt ensembling). Row ``d`` stands for digit ``d``."""
    if isinstance(templates, str) or not templates:
        raise ValueError("templates must be a non-empty list of templates")
    texts = [caption(digit, template) for digit in range(10) for template in templates]
    with torch.no_grad():
        vectors = model.encode_text_vectors(model.embed_texts(texts, embedder))
    return F.normalize(vectors.reshape(10, len(templates), -1).mean(dim=1), dim=-1)


def zero_shot(model: DigitsCLIP, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """The digit each image is closest to, among the ``classes`` of :func:`class_vectors`: no training on labels."""
    with torch.no_grad():
        return (model.encode_images(images) @ classes.T).argmax(dim=-1)
