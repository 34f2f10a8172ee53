"""Diffusion, written to be read: a noise schedule, a reverse loop, and a digits model to run them.

Part 5 of the course trains a small class-conditional diffusion model on
scikit-learn's handwritten digits (``scripts/train_digits_diffusion.py``);
its weights ship with the package. A digit label plays the part of a text
prompt. Every step of the loop equals diffusers' schedulers.

Example::

    >>> from llmsforme.diffusion import load_digits_model, sample
    >>> images = sample(load_digits_model(), [4, 2], steps=10)
    >>> tuple(images.shape)
    (2, 1, 16, 16)

Taught in: [Part 5](../part-5/index.md).
"""

from .quality import DigitClassifier, Grade, digit_classifier, diversity, grade, load_digit_images
from .sampling import (
    DEFAULT_GUIDANCE,
    PREDICTION_TYPES,
    SAMPLERS,
    Trace,
    ddim_step,
    ddpm_step,
    denoise,
    inference_timesteps,
    predict_noise,
    sample,
    to_pixels,
)
from .schedule import add_noise, cosine_schedule, linear_schedule
from .weights import DigitsModel, WeightsProblem, file_sha256, load_digits_model, shipped_folder

__all__ = [
    "DEFAULT_GUIDANCE",
    "PREDICTION_TYPES",
    "SAMPLERS",
    "DigitClassifier",
    "DigitsModel",
    "Grade",
    "Trace",
    "WeightsProblem",
    "add_noise",
    "cosine_schedule",
    "ddim_step",
    "ddpm_step",
    "denoise",
    "digit_classifier",
    "diversity",
    "file_sha256",
    "grade",
    "inference_timesteps",
    "linear_schedule",
    "load_digit_images",
    "load_digits_model",
    "predict_noise",
    "sample",
    "shipped_folder",
    "to_pixels",
]
