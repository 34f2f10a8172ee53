"""A vision-language model in miniature: the digits CLIP's eyes, a projector, and the course model.

LLaVA's recipe (Liu et al., 2023), made small enough to train on a CPU:

- **the vision encoder** is the digits CLIP's image encoder (:mod:`.clip`),
  frozen; as LLaVA reads CLIP's patch features before the final pooling,
  the projector reads the encoder's last feature map (64 channels on a
  4 x 4 grid, 1,024 numbers) rather than its final 64-number vector;
- **the projector**, the only part that trains, is a two-layer MLP (as in
  LLaVA-1.5) that turns those features into :data:`IMAGE_TOKENS` vectors
  of 576 numbers, the width of SmolLM2-135M-Instruct's token embeddings;
- **the language model**, the course model, frozen, reads them in place of
  :data:`IMAGE_TOKENS` placeholder tokens at the start of the user's turn,
  through ``inputs_embeds``, and answers in text.

:class:`ImagePromptedLM` puts an image in front of the package's decoding
strategies: it is a :class:`~llmsforme.lm.HFLanguageModel` whose first
forward pass reads the image's vectors, so greedy search, sampling and beam
search run on it unchanged.

Taught in: [How a language model reads an image](../part-5/vision-language.ipynb),
[Images through the API](../part-5/images-api.ipynb); the recipe beside LLaVA's,
SmolVLM's, Qwen-VL's and GPT-4o's in [What "multimodal" means](../part-5/multimodal.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..lm import HFLanguageModel
from .clip import DigitsCLIP

__all__ = [
    "IMAGE_FORMATS",
    "IMAGE_PLACEHOLDER",
    "IMAGE_TOKENS",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_SIDE",
    "MIN_IMAGE_SIDE",
    "DigitsVLM",
    "ImageError",
    "ImagePromptedLM",
    "VisionProjector",
    "image_features",
    "load_digits_vlm",
    "read_image",
]

#: How many vectors an image becomes in the language model's input.
IMAGE_TOKENS = 4
#: The token whose embedding each image vector replaces (one the chat never writes).
IMAGE_PLACEHOLDER = "<empty_output>"
MANIFEST, WEIGHTS = "manifest.json", "projector.safetensors"
IMAGE_FORMATS = ("PNG", "JPEG")
"""The image files :func:`read_image` decodes (Pillow's names)."""
MAX_IMAGE_BYTES = 500_000
"""The largest image file :func:`read_image` reads, in bytes."""
MAX_IMAGE_SIDE = 1024
"""The longest side :func:`read_image` accepts, in pixels: a digit needs 16, and a
huge image that compresses to a small file (a "decompression bomb") is refused
before it is decoded."""
MIN_IMAGE_SIDE = 8
"""The shortest side :func:`read_image` accepts: scikit-learn's digits are 8 x 8."""


class ImageError(ValueError):
    """An image that :func:`read_image` cannot use; ``reason`` says why, for the server's error codes.

    ``reason`` is ``"not_an_image"``, ``"unsupported_format"``,
    ``"too_large"`` or ``"too_small"``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def read_image(data: bytes) -> torch.Tensor:
    """An image file's bytes -> the ``(1, 1, 16, 16)`` tensor in [0, 1] that the model reads.

    PNG or JPEG, grey or in colour (averaged to grey, as Pillow's ``"L"``
    mode weighs the channels), any size from 8 x 8 to 1024 x 1024; it is
    resized bilinearly to 16 x 16, as the training digits were (smoothing
    first when it shrinks, so that thin strokes survive). The model expects
    what it was trained on: a light digit on a dark background.

    Raises :class:`ImageError` naming the problem.

    Example::

        >>> import io
        >>> from PIL import Image
        >>> png = io.BytesIO()
        >>> Image.new("L", (8, 8), 255).save(png, format="PNG")
        >>> image = read_image(png.getvalue())
        >>> tuple(image.shape), float(image.min()), float(image.max())
        ((1, 1, 16, 16), 1.0, 1.0)
        >>> read_image(b"GIF89a...")
        Traceback (most recent call last):
        ...
        llmsforme.multimodal.vision_language.ImageError: the image is not a PNG or JPEG file that can be decoded
    """
    import io

    import numpy as np
    from PIL import Image, UnidentifiedImageError

    if not isinstance(data, (bytes, bytearray)):
        raise TypeError(f"data must be the bytes of an image file, got {type(data).__name__}")
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageError("too_large", f"the image file is {len(data):,} bytes; the most is {MAX_IMAGE_BYTES:,}")
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
    except (UnidentifiedImageError, OSError, ValueError):
        raise ImageError("not_an_image", "the image is not a PNG or JPEG file that can be decoded") from None
    with image:
        if image.format not in IMAGE_FORMATS:
            raise ImageError(
                "unsupported_format",
                f"the image is {image.format}; this model reads {' or '.join(IMAGE_FORMATS)}",
            )
        width, height = image.size
        if max(width, height) > MAX_IMAGE_SIDE:
            raise ImageError("too_large", f"the image is {width} x {height} pixels; the most is "
                                          f"{MAX_IMAGE_SIDE} x {MAX_IMAGE_SIDE}")
        if min(width, height) < MIN_IMAGE_SIDE:
            raise ImageError("too_small", f"the image is {width} x {height} pixels; the least is "
                                          f"{MIN_IMAGE_SIDE} x {MIN_IMAGE_SIDE}")
        try:
            if image.mode.startswith("I"):  # 16- or 32-bit grey: scale to 8 bits by its own range
                pixels = np.asarray(image, dtype=np.float64)
                pixels = pixels / max(float(pixels.max()), 1.0) * 255
            else:
                pixels = np.asarray(image.convert("L"), dtype=np.float64)
        except (OSError, ValueError, SyntaxError):  # a truncated or corrupt file fails here, not at open
            raise ImageError("not_an_image", "the image file is damaged: it cannot be decoded") from None
    tensor = torch.tensor(pixels, dtype=torch.float32)[None, None] / 255
    tensor = torch.nn.functional.interpolate(tensor, size=(16, 16), mode="bilinear", align_corners=False,
                                             antialias=min(width, height) > 16)
    return tensor.clamp(0, 1)


def image_features(clip: DigitsCLIP, images: torch.Tensor) -> torch.Tensor:
    """The CLIP image encoder's last feature map, flattened: ``(n, 1, 16, 16)`` -> ``(n, 1024)``.

    Example::

        >>> tuple(image_features(DigitsCLIP(), torch.zeros(2, 1, 16, 16)).shape)
        (2, 1024)
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != (1, 16, 16):
        raise ValueError(f"images must be a tensor (n, 1, 16, 16) in [0, 1], got {getattr(images, 'shape', images)!r}")
    return clip.image_encoder.layers[:7](images)  # convolutions and pooling, then Flatten


class VisionProjector(nn.Module):
    """Image features -> ``tokens`` vectors as wide as the language model's embeddings (LLaVA-1.5's MLP).

    Example::

        >>> tuple(VisionProjector()(torch.zeros(3, 1024)).shape)
        (3, 4, 576)
    """

    def __init__(self, features: int = 1024, hidden: int = 256, tokens: int = IMAGE_TOKENS, width: int = 576) -> None:
        super().__init__()
        for name, value in (("features", features), ("hidden", hidden), ("tokens", tokens), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        self.tokens, self.width = tokens, width
        self.layers = nn.Sequential(nn.Linear(features, hidden), nn.GELU(), nn.Linear(hidden, tokens * width))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features).view(-1, self.tokens, self.width)


@dataclass
class DigitsVLM:
    """The frozen CLIP and language model, the trained projector, and the prompt format that joins them."""

    lm: Any
    tokenizer: Any
    clip: DigitsCLIP
    projector: VisionProjector
    manifest: dict = field(default_factory=dict, repr=False)

    @property
    def placeholder_id(self) -> int:
        return int(self.tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER))

    def prompt_ids(self, question: str, answer: str | None = None) -> list[int]:
        """The chat prompt of one question about one image: the placeholders open the user's turn.

        With ``answer``, the whole exchange (for training); without, the
        prompt ends with the assistant's header, ready for the reply.
        """
        if not isinstance(question, str) or not question.strip():
            raise ValueError("question must be a non-empty string")
        messages = [{"role": "user", "content": question}]
        if answer is not None:
            messages.append({"role": "assistant", "content": answer})
        return self.chat_ids(messages, 0, add_generation_prompt=answer is None)

    def chat_ids(self, messages: Any, image_message: int, *, add_generation_prompt: bool = True) -> list[int]:
        """A conversation about one image, which opens the user message ``messages[image_message]``.

        The messages are checked by the chat layer's guard (a special token
        inside one is refused, as for text) and rendered in ChatML, the
        format the projector was trained with (default system turn included).
        """
        from ..chat import encode_chat, render_chat

        if isinstance(image_message, bool) or not isinstance(image_message, int) or not (
            0 <= image_message < len(messages)
        ):
            raise ValueError(f"image_message must be the index of a message, 0 to {len(messages) - 1}, "
                             f"got {image_message!r}")
        if messages[image_message].get("role") != "user":
            raise ValueError(f"the image must be in a user message; messages[{image_message}] is "
                             f"{messages[image_message].get('role')!r}")
        encode_chat(self.tokenizer, messages, "chatml", add_generation_prompt=add_generation_prompt)  # the guard
        marker = "\x00image\x00"  # the split point
        if any("\x00" in str(message.get("content") or "") for message in messages):
            raise ValueError("a message contains the character NUL, which a chat message cannot hold")
        marked = [dict(message) for message in messages]
        marked[image_message]["content"] = marker + (marked[image_message].get("content") or "")
        text = render_chat(marked, "chatml", add_generation_prompt=add_generation_prompt)
        before, after = text.split(marker)
        encode = lambda part: list(self.tokenizer(part, add_special_tokens=False).input_ids)  # noqa: E731
        return encode(before) + [self.placeholder_id] * self.projector.tokens + encode(after)

    def image_vectors(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``(n, 1, 16, 16)`` -> the vectors the language model reads, ``(n, IMAGE_TOKENS, 576)``."""
        return self.projector(image_features(self.clip, images))

    def embed(self, input_ids: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """The token embeddings of ``input_ids``, with each row's placeholders replaced by its image's vectors."""
        embeddings = self.lm.get_input_embeddings()(input_ids)
        slots = input_ids == self.placeholder_id
        counts = slots.sum(dim=1)
        if not bool((counts == self.projector.tokens).all()):
            raise ValueError(
                f"each prompt must hold {self.projector.tokens} image placeholders ({IMAGE_PLACEHOLDER}), "
                f"got {counts.tolist()}: build it with prompt_ids()"
            )
        vectors = vectors.to(embeddings.dtype).expand(len(input_ids), -1, -1)
        return embeddings.masked_scatter(slots[..., None], vectors.reshape(-1, vectors.shape[-1]))

    def answer(self, images: torch.Tensor, question: str, *, max_new_tokens: int = 8) -> list[str]:
        """Greedy answers to one question about each image, with transformers' ``generate``."""
        ids = torch.tensor([self.prompt_ids(question)] * len(images))
        with torch.no_grad():
            embeddings = self.embed(ids, self.image_vectors(images))
            out = self.lm.generate(inputs_embeds=embeddings, attention_mask=torch.ones_like(ids),
                                   max_new_tokens=max_new_tokens, do_sample=False,
                                   pad_token_id=self.tokenizer.eos_token_id)
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in out]

    def language_model(self, image: torch.Tensor) -> ImagePromptedLM:
        """The course model, behind the package's protocol, looking at ``image`` (``(1, 1, 16, 16)``)."""
        with torch.no_grad():
            return ImagePromptedLM(self, self.image_vectors(image))


class ImagePromptedLM(HFLanguageModel):
    """A language model whose prompts carry an image: the first forward pass reads its vectors.

    The strategies of :mod:`llmsforme.decoding` call :meth:`start` with the
    prompt's ids (from :meth:`DigitsVLM.prompt_ids`, placeholders included)
    and :meth:`advance` with each new token, as for any model; only
    :meth:`start` differs, by passing ``inputs_embeds``.
    """

    def __init__(self, vlm: DigitsVLM, vectors: torch.Tensor) -> None:
        super().__init__(vlm.lm, vlm.tokenizer)
        if vectors.dim() != 3 or vectors.shape[0] != 1:
            raise ValueError(f"vectors must be one image's, (1, tokens, width), got {tuple(vectors.shape)}")
        self.vlm, self.vectors = vlm, vectors

    def start(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, Any]:
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        positions = torch.arange(input_ids.shape[1]).expand(input_ids.shape[0], -1)
        with torch.no_grad():
            output = self.model(inputs_embeds=self.vlm.embed(input_ids, self.vectors), position_ids=positions,
                                use_cache=True, logits_to_keep=1, **{self._cache_argument: cache})
        return output.logits[:, -1].to(copy=True, dtype=torch.float32), cache


def shipped_folder() -> Path:
    """The folder of the projector's weights inside the package (``scripts/train_digits_vlm.py``)."""
    return Path(str(files("llmsforme").joinpath("data", "digits-vlm")))


def load_digits_vlm(folder: str | os.PathLike[str] | None = None, *, model: Any = None,
                    tokenizer: Any = None) -> DigitsVLM:
    """The trained projector, checked against its manifest, with the shipped CLIP and the course model.

    ``model`` and ``tokenizer`` reuse a course model already loaded (the
    server shares one copy of the weights between its text and vision
    models); by default :func:`~llmsforme.model_source.load_model` loads it.
    """
    from safetensors.torch import load_file

    from ..diffusion.weights import WeightsProblem, read_manifest
    from ..model_source import load_model
    from .clip import load_digits_clip

    folder = shipped_folder() if folder is None else Path(folder).expanduser()
    manifest = read_manifest(folder, "digits vision-language", "scripts/train_digits_vlm.py")
    try:
        shape = {key: int(manifest["projector"][key]) for key in ("features", "hidden", "tokens", "width")}
    except (KeyError, TypeError, ValueError) as error:
        raise WeightsProblem(f"{folder / MANIFEST} is not a vision-language manifest ({error})") from error
    projector = VisionProjector(**shape)
    projector.load_state_dict(load_file(folder / WEIGHTS))
    projector.eval().requires_grad_(False)
    if model is None or tokenizer is None:
        model, tokenizer = load_model(progress=False)
    return DigitsVLM(model, tokenizer, load_digits_clip(), projector, manifest)

