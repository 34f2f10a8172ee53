"""Images in requests: OpenAI's ``data:`` URLs and Ollama's base64 strings, to the tensor the vision model reads.

The server never fetches a URL: an ``http(s)://`` image would make it a
proxy that any client could point at the machine's own network, so only
images sent inside the request are read. Decoding and resizing are
:func:`~llmsforme.multimodal.vision_language.read_image`'s; this module only
unwraps the transport and names each problem, which the two APIs turn into
their own error shapes.

Taught in: [Images through the API](../part-5/images-api.ipynb).
"""

from __future__ import annotations

import base64
import binascii
import re

import torch

from ..multimodal.vision_language import MAX_IMAGE_BYTES, ImageError, read_image

__all__ = ["BadImage", "image_from_data_url", "image_from_base64"]

# What a base64 text of MAX_IMAGE_BYTES takes, with room for line breaks.
_MAX_BASE64_CHARS = MAX_IMAGE_BYTES * 4 // 3 + 1024
_DATA_URL = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,",
                       re.ASCII)


class BadImage(ValueError):
    """An image a request cannot use. ``code`` is the OpenAI error code, ``reason`` the plain cause.

    Codes: ``invalid_image_url`` (not a base64 ``data:`` URL, or a web
    address the server will not fetch), ``invalid_image_format`` (a format
    other than PNG or JPEG), ``invalid_image`` (not an image, or too small)
    and ``image_too_large``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _read(data: bytes) -> torch.Tensor:
    try:
        return read_image(data)
    except ImageError as error:
        code = {"unsupported_format": "invalid_image_format", "too_large": "image_too_large"}.get(
            error.reason, "invalid_image"
        )
        raise BadImage(code, f"{error}.") from None


def _refuse_web_address(text: str, instead: str) -> None:
    if re.match(r"(?i)\s*(https?|ftp|file)://", text):
        raise BadImage(
            "invalid_image_url", f"The server does not fetch images from the web: send the image itself, {instead}."
        )


def _decode_base64(text: str) -> bytes:
    if len(text) > _MAX_BASE64_CHARS:
        raise BadImage("image_too_large", f"the image is larger than {MAX_IMAGE_BYTES:,} bytes.")
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BadImage("invalid_image", "the image is not valid base64.") from None


def image_from_data_url(url: object) -> torch.Tensor:
    """An OpenAI ``image_url``: a ``data:image/png;base64,...`` URL -> the model's input.

    Example:
        >>> image_from_data_url("https://example.com/seven.png")
        Traceback (most recent call last):
        ...
        llmsforme.server.images.BadImage: The server does not fetch images from the web: send the image \
itself, as a data URL (data:image/png;base64,...).
    """
    if not isinstance(url, str):
        raise BadImage("invalid_image_url", f"image_url.url must be a string, got {type(url).__name__}.")
    _refuse_web_address(url, "as a data URL (data:image/png;base64,...)")
    match = _DATA_URL.match(url)
    if match is None or not match["b64"]:
        raise BadImage("invalid_image_url", "image_url.url must be a base64 data URL: data:image/png;base64,...")
    media_type = (match["type"] or "").lower()
    if media_type and not media_type.startswith("image/"):
        raise BadImage("invalid_image_format", f"the data URL holds {media_type}, not an image.")
    return _read(_decode_base64(url[match.end():]))


def image_from_base64(text: object) -> torch.Tensor:
    """An Ollama ``images`` entry: the file's bytes in base64 (no ``data:`` prefix) -> the model's input.

    Example:
        >>> image_from_base64("bm90IGFuIGltYWdl")  # "not an image"
        Traceback (most recent call last):
        ...
        llmsforme.server.images.BadImage: the image is not a PNG or JPEG file that can be decoded.
    """
    if not isinstance(text, str):
        raise BadImage("invalid_image", f"an image must be a base64 string, got {type(text).__name__}.")
    if text.startswith("data:"):  # lenient: a data URL is unambiguous
        return image_from_data_url(text)
    _refuse_web_address(text, "in base64")
    return _read(_decode_base64(text))
