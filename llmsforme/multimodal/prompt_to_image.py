"""Text to image in miniature: Stable Diffusion's recipe on 16 x 16 handwritten digits.

The parts are Stable Diffusion's, made small:

- **the prompt** is read by the digits CLIP's text side (:mod:`.clip`):
  all-MiniLM-L6-v2 gives one vector per token, and the CLIP's trained
  projection maps each into the shared space, 64 numbers a token, as
  Stable Diffusion 1.x reads the per-token outputs of CLIP's text encoder;
- **a diffusers ``UNet2DConditionModel``** predicts the noise, and reads the
  prompt's token vectors through **cross-attention** in its lower
  resolution blocks and its middle block: every pixel position asks which
  tokens matter to it;
- **classifier-free guidance**: the empty prompt ``""`` is the
  unconditional branch; in training, one caption in ten is replaced by it;
- **sampling** is the package's own reverse loop
  (:func:`llmsforme.diffusion.denoise`, DDIM or DDPM), the one the digits
  model uses: only the conditioning differs.

There is no autoencoder: Stable Diffusion denoises a latent 8 times smaller
on each side than its 512-pixel images, to save compute; these images have
256 pixels, already fewer than one of its latents' 4,096 positions.

Taught in: [From a prompt to an image](../part-5/text-to-image.ipynb) (each part mapped to
Stable Diffusion, Flux and ComfyUI, measured on prompts in new words); the
idea, in [From digits to Stable Diffusion and Flux](../part-5/stable-diffusion.ipynb).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..diffusion import cosine_schedule, denoise
from .clip import DigitsCLIP

__all__ = [
    "MAX_GUIDANCE_SCALE",
    "MAX_TOKENS",
    "TextToImage",
    "generate",
    "load_text_to_image",
    "prompt_vectors",
    "text_to_image",
    "unet_config",
]

#: Prompts are cut to this many tokens (with MiniLM's [CLS] and [SEP]): the captions are short.
MAX_TOKENS = 16
#: Past this, guided estimates leave the range the network was trained on: images saturate.
MAX_GUIDANCE_SCALE = 20.0
MANIFEST = "manifest.json"


def unet_config(dim: int = 64) -> dict[str, Any]:
    """The ``UNet2DConditionModel`` of the course: 16 x 16 x 1, cross-attention on ``dim``-number tokens."""
    return {
        "sample_size": 16,
        "in_channels": 1,
        "out_channels": 1,
        "layers_per_block": 1,
        "block_out_channels": (32, 64),
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "cross_attention_dim": dim,
        "attention_head_dim": 8,
    }


def prompt_vectors(clip: DigitsCLIP, prompts: Sequence[str], embedder: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompts as the UNet reads them: ``(tokens, mask)``, ``(n, MAX_TOKENS, dim)`` and ``(n, MAX_TOKENS)``.

    MiniLM's token vectors, each through the CLIP's projection and
    normalised; padding positions are zeros, and ``mask`` is 0 there so
    that cross-attention ignores them. ``""`` is the unconditional prompt
    ([CLS] and [SEP] only).
    """
    if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts must be a non-empty list of strings")
    outputs = embedder.encode(list(prompts), output_value="token_embeddings", convert_to_numpy=False)
    tokens = torch.zeros(len(prompts), MAX_TOKENS, clip.dim)
    mask = torch.zeros(len(prompts), MAX_TOKENS)
    with torch.no_grad():
        for i, vectors in enumerate(outputs):
            vectors = vectors[:MAX_TOKENS].float().cpu()
            tokens[i, : len(vectors)] = F.normalize(clip.text_projection(vectors), dim=-1)
            mask[i, : len(vectors)] = 1
    return tokens, mask


@dataclass
class TextToImage:
    """The trained UNet, its schedule, and the CLIP and embedder that read its prompts."""

    unet: Any
    clip: DigitsCLIP
    embedder: Any
    alphas_cumprod: torch.Tensor
    manifest: dict = field(default_factory=dict, repr=False)
    _empty: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, init=False, repr=False)

    @property
    def guidance_scale(self) -> float:
        """The guidance scale the training script chose for these weights (3 for an untrained model)."""
        return float(self.manifest.get("model", {}).get("guidance_scale", 3.0))

    def predict(self, x: torch.Tensor, t: int, tokens: torch.Tensor, mask: torch.Tensor,
                guidance_scale: float) -> torch.Tensor:
        """The noise estimate for prompts ``tokens``, guided away from the empty prompt's."""
        if guidance_scale == 1:
            return self.unet(x, t, encoder_hidden_states=tokens, encoder_attention_mask=mask).sample
        if self._empty is None:  # the empty prompt's vectors never change: encode them once, not every step
            self._empty = prompt_vectors(self.clip, [""], self.embedder)
        empty, empty_mask = self._empty
        empty, empty_mask = empty.expand_as(tokens), empty_mask.expand_as(mask)
        both = self.unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([tokens, empty]),
                         encoder_attention_mask=torch.cat([mask, empty_mask])).sample
        cond, uncond = both.chunk(2)
        return uncond + guidance_scale * (cond - uncond)


def generate(
    model: TextToImage,
    prompts: Sequence[str],
    *,
    guidance_scale: float | None = None,
    sampler: str = "ddim",
    steps: int = 25,
    seed: int = 0,
    trace: bool = False,
) -> Any:
    """One image per prompt, 16 x 16 in [0, 1], with the package's reverse loop.

    ``guidance_scale=None`` means the model's own (:attr:`TextToImage.guidance_scale`);
    ``""`` is the unconditional prompt.

    Example::

        >>> model = load_text_to_image()  # the shipped weights
        >>> images = generate(model, ["a handwritten seven", ""], guidance_scale=2.0, seed=1)
        >>> tuple(images.shape)
        (2, 1, 16, 16)
    """
    if guidance_scale is None:
        guidance_scale = model.guidance_scale
    _check_guidance(guidance_scale)
    tokens, mask = prompt_vectors(model.clip, prompts, model.embedder)
    scale = float(guidance_scale)
    return denoise(
        lambda x, t: model.predict(x, t, tokens, mask, scale),
        len(prompts),
        image_size=16,
        alphas_cumprod=model.alphas_cumprod,
        sampler=sampler,
        steps=steps,
        seed=seed,
        trace=trace,
    )


def _check_guidance(guidance_scale: object) -> None:
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)):
        raise TypeError(f"guidance_scale must be a number, got {type(guidance_scale).__name__}")
    if not 0 <= guidance_scale <= MAX_GUIDANCE_SCALE:
        raise ValueError(f"guidance_scale must be between 0 and {MAX_GUIDANCE_SCALE:g}, got {guidance_scale!r}")


def text_to_image(
    prompts: Sequence[str],
    *,
    steps: int = 25,
    guidance_scale: float | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Draw one digit per prompt with the shipped model: ``(n, 1, 16, 16)`` in [0, 1].

    The one call a page or a script needs: it loads the shipped model once
    (:func:`load_text_to_image`) and samples with DDIM. ``guidance_scale=None``
    means the scale the training script chose for it (the manifest's).
    Every prompt must say something: for the unconditional image, call
    :func:`generate` with ``""``.

    Example:

        >>> images = text_to_image(["a handwritten seven", "draw a 3"], seed=0)
        >>> tuple(images.shape), float(images.min()) >= 0, float(images.max()) <= 1
        ((2, 1, 16, 16), True, True)
        >>> bool((images == text_to_image(["a handwritten seven", "draw a 3"], seed=0)).all())
        True
    """
    if isinstance(prompts, str) or not isinstance(prompts, Sequence) or not prompts:
        raise TypeError("prompts must be a non-empty list of strings, one per image")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise TypeError(f"prompts[{i}] must be a string, got {type(prompt).__name__}")
        if not prompt.strip():
            raise ValueError(f"prompts[{i}] is empty: say which digit to draw (generate() takes '' to draw without one)")
    if guidance_scale is not None:
        _check_guidance(guidance_scale)
    return generate(_shipped_model(), list(prompts), guidance_scale=guidance_scale, steps=steps, seed=seed)


@functools.lru_cache(maxsize=1)
def _shipped_model() -> TextToImage:
    return load_text_to_image()


def shipped_folder() -> Path:
    """The folder of the text-to-image weights inside the package (``scripts/train_text_to_image.py``)."""
    return Path(str(files("llmsforme").joinpath("data", "digits-text-to-image")))


def load_text_to_image(folder: str | os.PathLike[str] | None = None, *, embedder: Any = None) -> TextToImage:
    """The trained text-to-image model, offline, its files checked against the manifest's sha256.

    It reads prompts with the shipped digits CLIP (:func:`~llmsforme.multimodal.load_digits_clip`)
    and all-MiniLM-L6-v2.
    """
    from diffusers import UNet2DConditionModel
    from diffusers.utils import logging as diffusers_logging

    from ..diffusion.weights import WeightsProblem, read_manifest
    from ..model_source import load_embedder
    from .clip import load_digits_clip

    folder = shipped_folder() if folder is None else Path(folder).expanduser()
    manifest = read_manifest(folder, "text-to-image", "scripts/train_text_to_image.py")
    try:
        timesteps = int(manifest["model"]["num_train_timesteps"])
        _check_guidance(manifest["model"]["guidance_scale"])
    except (KeyError, TypeError, ValueError) as error:
        raise WeightsProblem(f"{folder / MANIFEST} is not a text-to-image manifest ({error})") from error
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # a local folder: no hub chatter
    try:
        unet = UNet2DConditionModel.from_pretrained(folder, local_files_only=True)
    finally:
        diffusers_logging.set_verbosity(verbosity)
    unet.eval().requires_grad_(False)
    return TextToImage(unet, load_digits_clip(), embedder or load_embedder(), cosine_schedule(timesteps), manifest)
