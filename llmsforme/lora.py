"""LoRA, low-rank adaptation, written out: a frozen linear layer plus a small trainable detour.

A linear layer computes ``W x``. LoRA leaves ``W`` (``out x in``) frozen and
learns a low-rank change next to it::

    y = W x + (alpha / r) * B (A x)       A: in -> r,  B: r -> out

With ``r`` much smaller than ``in`` and ``out``, ``A`` and ``B`` hold
``r * (in + out)`` numbers instead of ``in * out``. ``B`` starts at zero, so
training starts from exactly the unchanged model. Once trained, the change
can be *merged*: ``W + (alpha / r) * B A`` is an ordinary weight matrix, and
the adapter costs nothing at inference.

The names follow peft (``lora_A``, ``lora_B``, ``r``, ``lora_alpha``), so a
trained peft adapter's tensors drop into :class:`LoRALinear`;
``tests/test_lora.py`` checks outputs, merges and parameter counts against
peft on the course model. :class:`LoRALinear` is peft's LoRA layer with
``lora_dropout=0.0`` (it has no dropout) and ``use_rslora=False`` (it
scales by ``alpha / r``, not by rank-stabilized LoRA's ``alpha / sqrt(r)``).

Example:
    >>> import torch
    >>> torch.manual_seed(0) and None
    >>> layer = LoRALinear(torch.nn.Linear(6, 4), r=2, alpha=4)
    >>> x = torch.randn(3, 6)
    >>> torch.equal(layer(x), layer.base(x))        # B = 0: unchanged at first
    True
    >>> trainable = sum(p.numel() for p in layer.parameters() if p.requires_grad)
    >>> trainable                                    # r * (in + out) = 2 * (6 + 4)
    20

Taught in: [LoRA](../part-2/lora.ipynb).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["LoRALinear", "add_lora", "merge_lora", "trainable_parameters"]


class LoRALinear(nn.Module):
    """``base(x) + (alpha / r) * lora_B(lora_A(x))``, with ``base`` frozen.

    Args:
        base: the ``nn.Linear`` to adapt; its weights are frozen, not copied.
        r: the rank, a positive int no larger than ``min(in, out)``.
        alpha: the scale numerator; the update is multiplied by ``alpha / r``.

    ``lora_A`` is initialised like peft's (Kaiming-uniform), ``lora_B`` to
    zero.

    Taught in: [LoRA](../part-2/lora.ipynb).
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"base must be a torch.nn.Linear, got {type(base).__name__}")
        if isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= min(base.in_features, base.out_features):
            raise ValueError(
                f"r must be an int from 1 to min(in, out) = {min(base.in_features, base.out_features)}, got {r!r}"
            )
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
        self.base = base
        for parameter in base.parameters():
            parameter.requires_grad_(False)
        self.r, self.alpha = r, float(alpha)
        self.scaling = self.alpha / r
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Linear(base.in_features, r, bias=False, **factory)
        self.lora_B = nn.Linear(r, base.out_features, bias=False, **factory)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def delta_weight(self) -> torch.Tensor:
        """The change to the base weights: ``(alpha / r) * B @ A``, of shape ``(out, in)``."""
        return self.scaling * (self.lora_B.weight @ self.lora_A.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scaling * self.lora_B(self.lora_A(x))

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` with the adapter folded into its weights (the base is untouched)."""
        base = self.base
        layer = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                          device=base.weight.device, dtype=base.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(base.weight + self.delta_weight())
            if base.bias is not None:
                layer.bias.copy_(base.bias)
        return layer

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha:g}"


def _check_targets(target_modules: object) -> tuple[str, ...]:
    if isinstance(target_modules, str) or not isinstance(target_modules, Iterable):
        raise TypeError(f"target_modules must be a list of module names such as ['q_proj', 'v_proj'], "
                        f"got {target_modules!r}")
    names = tuple(target_modules)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"target_modules must name at least one module, got {target_modules!r}")
    return names


def add_lora(model: nn.Module, r: int, alpha: float, target_modules: Iterable[str]) -> nn.Module:
    """Wrap every ``nn.Linear`` whose name ends with one of ``target_modules`` in a :class:`LoRALinear`.

    Everything else in ``model`` is frozen, so only the adapters train. The
    model is changed in place and returned. Like peft, a target matches the
    last part of a module's dotted name (``"q_proj"`` matches
    ``model.layers.0.self_attn.q_proj``).

    Raises:
        ValueError: if no module matches a target (a typo would otherwise
            train nothing).

    Taught in: [LoRA](../part-2/lora.ipynb).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    targets = _check_targets(target_modules)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    matches = [(name, module) for name, module in model.named_modules()
               if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in targets]
    missing = sorted(set(targets) - {name.rsplit(".", 1)[-1] for name, _ in matches})
    if missing:
        raise ValueError(f"no nn.Linear named {missing} in the model; target_modules was {list(targets)}")
    for name, module in matches:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(module, r, alpha))
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every :class:`LoRALinear` in ``model`` by its merged ``nn.Linear``, in place.

    Taught in: [LoRA](../part-2/lora.ipynb).
    """
    for name, module in list(model.named_modules()):
        if isinstance(module, LoRALinear):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.merged())
    return model


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts, each tensor counted once (tied weights too).

    Example:
        >>> trainable_parameters(LoRALinear(torch.nn.Linear(6, 4, bias=False), r=2, alpha=2))
        (20, 44)
    """
    seen: dict[int, torch.Tensor] = {}
    for parameter in model.parameters():
        seen.setdefault(id(parameter), parameter)
    trainable = sum(p.numel() for p in seen.values() if p.requires_grad)
    return trainable, sum(p.numel() for p in seen.values())
