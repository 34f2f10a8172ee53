"""The reverse process: from pure noise to an image, one denoising step at a time.

This loop is the lesson, written out like the decoding loops of Part 1.
Each step asks the network for the noise in the current image, estimates
the clean image from it, and moves part of the way there:

- **DDPM** (ancestral sampling, Ho et al., 2020) adds fresh noise at every
  step, so two runs from the same start differ unless seeded;
- **DDIM** (Song et al., 2021) takes deterministic steps, and stays good
  with far fewer of them.

The network predicts the noise (``"epsilon"``, the course's shipped model)
or ``v = sqrt(abar) * noise - sqrt(1 - abar) * x0`` (``"v_prediction"``,
which Lin et al., 2024, pair with a schedule that ends at zero signal);
each step turns either into a clean estimate.

Classifier-free guidance (Ho and Salimans, 2022) runs the network twice per
step, with the digit's label and with the "no label" class, and pushes the
prediction away from the unconditional one by ``guidance_scale``.

Each step equals diffusers' ``DDIMScheduler.step`` / ``DDPMScheduler.step``
(``tests/test_diffusion.py`` checks it).

Taught in: [Diffusion from scratch](../part-5/diffusion-from-scratch.ipynb)
and [Samplers](../part-5/samplers.ipynb).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .weights import DigitsModel

__all__ = [
    "DEFAULT_GUIDANCE",
    "PREDICTION_TYPES",
    "SAMPLERS",
    "Trace",
    "ddim_step",
    "ddpm_step",
    "denoise",
    "inference_timesteps",
    "predict_noise",
    "sample",
    "to_pixels",
]

SAMPLERS = ("ddim", "ddpm")
#: What the network may predict: the noise, or v (diffusers' ``prediction_type`` names).
PREDICTION_TYPES = ("epsilon", "v_prediction")
#: The guidance scale the course ships and tests (see the Part 5 pages).
DEFAULT_GUIDANCE = 3.0


def inference_timesteps(num_train_timesteps: int, steps: int) -> list[int]:
    """``steps`` timesteps, evenly spaced from the noisiest one down.

    The "trailing" spacing of Lin et al. (2024): the first step starts at the
    last training timestep, where the image is pure noise.

    Example::

        >>> inference_timesteps(200, 5)
        [199, 159, 119, 79, 39]
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= num_train_timesteps:
        raise ValueError(f"steps must be an int in [1, {num_train_timesteps}], got {steps!r}")
    return [round(num_train_timesteps - i * num_train_timesteps / steps) - 1 for i in range(steps)]


def _levels(alphas_cumprod: torch.Tensor, t: int, prev_t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``abar`` now and after the step (1.0 past the last step: a clean image)."""
    return alphas_cumprod[t], alphas_cumprod[prev_t] if prev_t >= 0 else torch.tensor(1.0)


def _check_prediction_type(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def _estimates(
    x: torch.Tensor, output: torch.Tensor, abar_t: torch.Tensor, prediction_type: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The clean image (kept in the image range) and the noise, from the network's output.

    With ``x_t = sqrt(abar) x0 + sqrt(1 - abar) eps``: from the noise,
    ``x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar)``, which divides by
    ``sqrt(abar)`` (about 2.5e-4 at the cosine schedule's last timestep);
    from ``v = sqrt(abar) eps - sqrt(1 - abar) x0``,
    ``x0 = sqrt(abar) x_t - sqrt(1 - abar) v`` and
    ``eps = sqrt(abar) v + sqrt(1 - abar) x_t``, with no division. As in
    diffusers, the noise is not recomputed after the clean image is clamped.
    """
    _check_prediction_type(prediction_type)
    if prediction_type == "epsilon":
        x0, eps = (x - (1 - abar_t) ** 0.5 * output) / abar_t**0.5, output
    else:
        x0 = abar_t**0.5 * x - (1 - abar_t) ** 0.5 * output
        eps = abar_t**0.5 * output + (1 - abar_t) ** 0.5 * x
    return x0.clamp(-1, 1), eps


def ddim_step(
    noise_pred: torch.Tensor,
    t: int,
    prev_t: int,
    x: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    *,
    prediction_type: str = "epsilon",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One deterministic DDIM step from timestep ``t`` to ``prev_t`` (-1: the end).

    Re-noise the clean estimate to the level of ``prev_t`` with the *same*
    predicted noise. ``noise_pred`` is the network's output: the noise, or
    ``v`` with ``prediction_type="v_prediction"``. Returns ``(x_prev, x0_estimate)``.

    Example::

        >>> abar = torch.tensor([0.9, 0.5])
        >>> x_prev, x0 = ddim_step(torch.zeros(1, 1, 1, 1), 1, 0, torch.full((1, 1, 1, 1), 0.5), abar)
        >>> round(float(x0), 4), round(float(x_prev), 4)
        (0.7071, 0.6708)
    """
    abar_t, abar_prev = _levels(alphas_cumprod, t, prev_t)
    x0, eps = _estimates(x, noise_pred, abar_t, prediction_type)
    return abar_prev**0.5 * x0 + (1 - abar_prev) ** 0.5 * eps, x0


def ddpm_step(
    noise_pred: torch.Tensor,
    t: int,
    prev_t: int,
    x: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    prediction_type: str = "epsilon",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One ancestral DDPM step: the mean of ``p(x_prev | x_t)``, plus fresh noise.

    The mean blends the clean estimate and the current image (equation 7 of
    Ho et al., 2020); the noise has the "fixed small" variance
    ``(1 - abar_prev) / (1 - abar_t) * beta_t``. ``noise_pred`` is the
    network's output (see :func:`ddim_step`). Returns ``(x_prev, x0_estimate)``.

    Example::

        >>> abar = torch.tensor([0.9, 0.5])
        >>> x_prev, _ = ddpm_step(torch.zeros(1, 1, 1, 1), 0, -1, torch.full((1, 1, 1, 1), 0.5), abar)
        >>> round(float(x_prev), 4)  # t = 0, the last step: the clean estimate, no noise
        0.527
    """
    abar_t, abar_prev = _levels(alphas_cumprod, t, prev_t)
    alpha_t = abar_t / abar_prev  # the signal this one step keeps
    beta_t = 1 - alpha_t
    x0, _ = _estimates(x, noise_pred, abar_t, prediction_type)
    mean = (abar_prev**0.5 * beta_t / (1 - abar_t)) * x0 + (alpha_t**0.5 * (1 - abar_prev) / (1 - abar_t)) * x
    if t > 0:
        variance = ((1 - abar_prev) / (1 - abar_t) * beta_t).clamp(min=1e-20)
        mean = mean + variance**0.5 * torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return mean, x0


def predict_noise(
    model: DigitsModel, x: torch.Tensor, t: int, labels: torch.Tensor, guidance_scale: float
) -> torch.Tensor:
    """The network's noise estimate (or v, for a v-prediction model), with classifier-free guidance.

    ``uncond + guidance_scale * (cond - uncond)``: 0 ignores the label, 1 uses
    it as trained, and more pushes harder towards what makes the label's
    images differ from any digit. At 0 or 1 one pass is enough.
    """
    unet = model.unet
    if guidance_scale == 1:
        return unet(x, t, class_labels=labels).sample
    nothing = torch.full_like(labels, model.null_label)
    if guidance_scale == 0:
        return unet(x, t, class_labels=nothing).sample
    both = unet(torch.cat([x, x]), t, class_labels=torch.cat([labels, nothing]))
    cond, uncond = both.sample.chunk(2)
    return uncond + guidance_scale * (cond - uncond)


def to_pixels(x: torch.Tensor) -> torch.Tensor:
    """From the model's range [-1, 1] to pixel values in [0, 1] (clipped)."""
    return (x.clamp(-1, 1) + 1) / 2


@dataclass
class Trace:
    """What the loop saw: the timesteps, and after each step the image and the clean estimate.

    ``images[0]`` is the starting noise and ``images[i + 1]`` the image after
    step ``i``; ``estimates[i]`` is the network's guess of the final image at
    step ``i``. All are pixel values in [0, 1], shaped like the samples.
    """

    timesteps: list[int]
    images: list[torch.Tensor] = field(default_factory=list)
    estimates: list[torch.Tensor] = field(default_factory=list)


def _check_digits(digits: Any) -> torch.Tensor:
    if isinstance(digits, (str, bytes)) or not isinstance(digits, Sequence) or len(digits) == 0:
        raise TypeError(f"digits must be a non-empty sequence of ints 0-9, got {digits!r}")
    for digit in digits:
        if isinstance(digit, bool) or not isinstance(digit, int) or not 0 <= digit <= 9:
            raise ValueError(f"digits must be ints in [0, 9], got {digit!r}")
    return torch.tensor(list(digits))


def sample(
    model: DigitsModel,
    digits: Sequence[int],
    *,
    sampler: str = "ddim",
    steps: int = 25,
    guidance_scale: float = DEFAULT_GUIDANCE,
    seed: int = 0,
    trace: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, Trace]:
    """Draw one image of each requested digit, from noise, with the digits model.

    Args:
        model: from :func:`~llmsforme.diffusion.load_digits_model`.
        digits: the "prompt": one int in 0-9 per image.
        sampler: ``"ddim"`` (deterministic steps) or ``"ddpm"`` (fresh noise
            at each step).
        steps: denoising steps, 1 to the model's training timesteps (200).
        guidance_scale: classifier-free guidance, >= 0 (0: ignore the label;
            1: no guidance).
        seed: seeds the starting noise and DDPM's noise: the same seed gives
            the same images.
        trace: also return a :class:`Trace` of every step.

    Returns:
        Images as a float tensor ``(len(digits), 1, 16, 16)`` in [0, 1]
        (``(images, trace)`` with ``trace=True``).

    Example::

        >>> from llmsforme.diffusion import load_digits_model
        >>> model = load_digits_model()
        >>> images = sample(model, [0, 7], steps=10, seed=1)
        >>> tuple(images.shape), bool(images.min() >= 0 and images.max() <= 1)
        ((2, 1, 16, 16), True)
    """
    labels = _check_digits(digits)
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)) or not guidance_scale >= 0:
        raise ValueError(f"guidance_scale must be a number >= 0, got {guidance_scale!r}")
    scale = float(guidance_scale)
    return denoise(
        lambda x, t: predict_noise(model, x, t, labels, scale),
        len(labels),
        image_size=model.image_size,
        alphas_cumprod=model.alphas_cumprod,
        prediction_type=getattr(model, "prediction_type", "epsilon"),
        sampler=sampler,
        steps=steps,
        seed=seed,
        trace=trace,
    )


def denoise(
    predict: Callable[[torch.Tensor, int], torch.Tensor],
    count: int,
    *,
    image_size: int,
    alphas_cumprod: torch.Tensor,
    prediction_type: str = "epsilon",
    sampler: str = "ddim",
    steps: int = 25,
    seed: int = 0,
    trace: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, Trace]:
    """The reverse loop itself, for any conditioning: ``predict(x, t)`` gives the network's output.

    :func:`sample` calls it with a digit label; the text-to-image model of
    :mod:`llmsforme.multimodal` with a prompt's vectors. The starting noise
    is ``(count, 1, image_size, image_size)``, drawn from ``seed``, and the
    steps and their noise are those of :func:`sample`.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    timesteps = inference_timesteps(len(alphas_cumprod), steps)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    _check_prediction_type(prediction_type)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((count, 1, image_size, image_size), generator=generator)
    record = Trace(timesteps, images=[to_pixels(x)]) if trace else None
    with torch.no_grad():
        for i, t in enumerate(timesteps):
            prev_t = timesteps[i + 1] if i + 1 < len(timesteps) else -1
            noise_pred = predict(x, t)
            if sampler == "ddim":
                x, x0 = ddim_step(noise_pred, t, prev_t, x, alphas_cumprod, prediction_type=prediction_type)
            else:
                x, x0 = ddpm_step(noise_pred, t, prev_t, x, alphas_cumprod, generator, prediction_type=prediction_type)
            if record is not None:
                record.images.append(to_pixels(x))
                record.estimates.append(to_pixels(x0))
    images = to_pixels(x)
    return (images, record) if record is not None else images
