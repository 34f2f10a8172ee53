"""The forward process: how much of the clean image is left at each timestep.

Training a diffusion model blends a clean image ``x0`` with Gaussian noise
``eps`` at a random timestep ``t``::

    x_t = sqrt(abar_t) * x0 + sqrt(1 - abar_t) * eps

``abar_t`` (``alphas_cumprod[t]``, diffusers' name) falls from about 1 at
``t = 0`` (almost clean) to about 0 at the last timestep (pure noise). The
network learns to predict ``eps`` from ``x_t`` and ``t``; sampling runs the
process backwards (:mod:`llmsforme.diffusion.sampling`).

Taught in: [Diffusion from scratch](../part-5/diffusion-from-scratch.ipynb).
"""

from __future__ import annotations

import math

import torch

__all__ = ["add_noise", "cosine_schedule", "linear_schedule"]


def _check_steps(num_train_timesteps: int) -> None:
    if isinstance(num_train_timesteps, bool) or not isinstance(num_train_timesteps, int) or num_train_timesteps < 2:
        raise ValueError(f"num_train_timesteps must be an int >= 2, got {num_train_timesteps!r}")


def cosine_schedule(num_train_timesteps: int, *, max_beta: float = 0.999) -> torch.Tensor:
    """``abar_t`` for each timestep, from the cosine schedule of Nichol and Dhariwal (2021).

    ``abar`` follows ``cos((s + 0.008) / 1.008 * pi / 2) ** 2`` for ``s = t / T``,
    so the image fades slowly at first and last, and reaches almost pure noise
    at the end. Each step's noise ``beta_t = 1 - abar_(t+1) / abar_t`` is capped
    at ``max_beta``. The same numbers as diffusers'
    ``DDPMScheduler(beta_schedule="squaredcos_cap_v2").alphas_cumprod``.

    Example::

        >>> abar = cosine_schedule(200)
        >>> abar.shape, round(float(abar[0]), 4), float(abar[-1]) < 1e-4
        (torch.Size([200]), 0.9997, True)
    """
    _check_steps(num_train_timesteps)
    if not 0 < max_beta < 1:
        raise ValueError(f"max_beta must be in (0, 1), got {max_beta!r}")

    def abar(s: float) -> float:
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    n = num_train_timesteps
    betas = [min(1 - abar((t + 1) / n) / abar(t / n), max_beta) for t in range(n)]
    return torch.cumprod(1 - torch.tensor(betas, dtype=torch.float32), dim=0)


def linear_schedule(num_train_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """``abar_t`` for the linear schedule of the original DDPM paper (Ho et al., 2020).

    With DDPM's 1,000 steps it ends near pure noise; with fewer steps the
    same betas leave part of the image at the end (see the Part 5 pages).

    Example::

        >>> round(float(linear_schedule(1000)[-1]), 5), round(float(linear_schedule(200)[-1]), 2)
        (4e-05, 0.13)
    """
    _check_steps(num_train_timesteps)
    if not 0 < beta_start < beta_end < 1:
        raise ValueError(f"need 0 < beta_start < beta_end < 1, got {beta_start!r} and {beta_end!r}")
    betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)
    return torch.cumprod(1 - betas, dim=0)


def add_noise(
    clean: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor
) -> torch.Tensor:
    """Jump straight to timestep ``t``: ``sqrt(abar_t) * clean + sqrt(1 - abar_t) * noise``.

    ``clean`` and ``noise`` are ``(batch, channels, height, width)``;
    ``timesteps`` holds one int per image. Equal to diffusers'
    ``DDPMScheduler.add_noise``.

    Example::

        >>> abar = cosine_schedule(200)
        >>> x0, eps = torch.ones(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
        >>> [round(v, 4) for v in add_noise(x0, eps, torch.tensor([0, 199]), abar)[:, 0, 0, 0].tolist()]
        [0.9999, 0.0002]
    """
    if clean.shape != noise.shape or clean.dim() != 4:
        raise ValueError(f"clean and noise must have the same 4-D shape, got {tuple(clean.shape)} and {tuple(noise.shape)}")
    timesteps = torch.as_tensor(timesteps)
    if timesteps.shape != (clean.shape[0],):
        raise ValueError(f"timesteps must hold one timestep per image ({clean.shape[0]}), got shape {tuple(timesteps.shape)}")
    if timesteps.min() < 0 or timesteps.max() >= len(alphas_cumprod):
        raise ValueError(f"timesteps must be in [0, {len(alphas_cumprod) - 1}]")
    abar = alphas_cumprod[timesteps].view(-1, 1, 1, 1)  # one level per image
    return abar**0.5 * clean + (1 - abar) ** 0.5 * noise
