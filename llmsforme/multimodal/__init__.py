"""Images and text together: a CLIP trained on handwritten digits (Part 5).

Downloading a real CLIP, text-to-image or vision-language model is not
possible offline on a CPU, so the course trains each one small, with the
real recipe: :mod:`.clip` puts digits and their captions in one space;
:mod:`.prompt_to_image` draws a digit from a prompt, as Stable Diffusion does.

Taught in: [Part 5](../part-5/index.md).
"""

from .clip import (
    DIGIT_WORDS,
    HELD_OUT_TEMPLATES,
    TRAINING_TEMPLATES,
    DigitsCLIP,
    ImageEncoder,
    caption,
    class_vectors,
    clip_loss,
    held_out_digits,
    load_digits_clip,
    split_digits,
    zero_shot,
)
from .prompt_to_image import TextToImage, generate, load_text_to_image, text_to_image
from .vision_language import DigitsVLM, ImageError, ImagePromptedLM, VisionProjector, load_digits_vlm, read_image

__all__ = [
    "DIGIT_WORDS",
    "HELD_OUT_TEMPLATES",
    "TRAINING_TEMPLATES",
    "DigitsCLIP",
    "DigitsVLM",
    "ImageError",
    "ImageEncoder",
    "ImagePromptedLM",
    "TextToImage",
    "VisionProjector",
    "caption",
    "class_vectors",
    "clip_loss",
    "generate",
    "held_out_digits",
    "load_digits_clip",
    "load_digits_vlm",
    "load_text_to_image",
    "read_image",
    "split_digits",
    "text_to_image",
    "zero_shot",
]
