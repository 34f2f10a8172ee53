"""Block-wise quantization in GGUF's byte layout: Q8_0, Q4_0 and Q4_1, written out.

A weight matrix is cut into blocks of 32 consecutive weights (along its
rows). Each block stores small integers and one or two 16-bit floats that
turn them back into weights:

========  ===========================================  ===================  ===============
kind      per block of 32 weights                      bytes per block      bits per weight
========  ===========================================  ===================  ===============
``Q8_0``  scale ``d``; 32 signed 8-bit ``q``           2 + 32 = 34          8.5
``Q4_0``  scale ``d``; 32 4-bit ``q``, offset by 8     2 + 16 = 18          4.5
``Q4_1``  scale ``d``, minimum ``m``; 32 4-bit ``q``   2 + 2 + 16 = 20      5.0
========  ===========================================  ===================  ===============

A weight comes back as ``d * q`` (Q8_0), ``d * (q - 8)`` (Q4_0) or
``d * q + m`` (Q4_1). Two 4-bit values share a byte: the block's first 16
weights in the low halves, the last 16 in the high halves.

:func:`quantize` does, operation for operation, what the numpy quantizer of
the ``gguf`` package does from version 0.18.0 on (the course pins 0.19.0),
in float32 throughout, so it writes the same bytes as
``gguf.quants.quantize``:

* ``Q8_0``: ``d = max|x| / 127``, ``id = 1 / d`` (0 where ``d`` is 0), and
  ``round(x * id)`` with halves rounded away from zero;
* ``Q4_0``: ``d = x_max / -8``, where ``x_max`` is the weight of largest
  magnitude, sign kept; ``q = trunc(x * id + 8.5)``, clamped to 0..15;
* ``Q4_1``: ``d = (max - min) / 15``, ``m = min``;
  ``q = trunc((x - min) * id + 0.5)``, clamped to 0..15;

and ``d`` and ``m`` are stored as float16, rounded to nearest. Each float32
product and sum is rounded before the next operation (no fused
multiply-add). ``gguf`` 0.10 to 0.17.1 computed Q4_0's ``x * id + 8.5`` in
float64 instead, to copy ggml's C code when it was compiled with fused
multiply-add; llama.cpp dropped that in August 2025, as its C code no
longer fuses (https://github.com/ggml-org/llama.cpp/pull/15111). Against
those versions a Q4_0 value can differ by one where ``x * id + 8.5`` falls
within a float32 rounding of an integer: ``x = -0.08269935`` with
``id = -54.413963`` gives 12 in float64 and 13 in float32. It is rare (1 of
12.8 million seeded normal weights, measured against gguf 0.17.1). Q8_0
and Q4_1 are float32 in every version, and the package requires
``gguf>=0.18``.

:func:`dequantize` returns exactly what ``gguf.quants.dequantize`` returns.
``tests/test_quantization.py`` checks both functions on the course model's
own weights (which already sit on a Q4_1 grid), on 6.3 million seeded
random weights that sit on no grid, and on the value above.

Example:
    >>> import torch
    >>> w = torch.linspace(-1, 1, 32)
    >>> raw = quantize(w, "Q4_1")
    >>> len(raw)                     # one block of 20 bytes
    20
    >>> back = dequantize(raw, "Q4_1", (32,))
    >>> step = (1 - -1) / 15          # the block's range in 15 steps
    >>> float((back - w).abs().max()) <= step / 2 + 1e-3   # + float16 rounding of d and m
    True

Taught in: [Quantization](../part-2/quantization.ipynb).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["BLOCK", "KINDS", "bits_per_weight", "block_bytes", "quantize", "dequantize"]

#: Weights per block, for every kind here.
BLOCK = 32
#: The kinds this module writes and reads, with their bytes per block.
KINDS = {"Q8_0": 34, "Q4_0": 18, "Q4_1": 20}


def _check_kind(kind: object) -> str:
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    return kind


def block_bytes(kind: str) -> int:
    """Bytes of one block of :data:`BLOCK` weights (e.g. 20 for ``"Q4_1"``)."""
    return KINDS[_check_kind(kind)]


def bits_per_weight(kind: str) -> float:
    """Storage cost per weight, scales included: ``8 * block_bytes / 32``.

    Example:
        >>> [bits_per_weight(k) for k in ("Q8_0", "Q4_0", "Q4_1")]
        [8.5, 4.5, 5.0]
    """
    return 8 * block_bytes(kind) / BLOCK


def _round_half_away(x: torch.Tensor) -> torch.Tensor:
    # ggml rounds halves away from zero (roundf), torch.round to even. This
    # is floor(a + 0.5) for a = |x|, written so that a + 0.5 is never formed.
    a = x.abs()
    floored = torch.floor(a)
    return torch.sign(x) * (floored + torch.floor(2 * (a - floored)))


def _inverse(d: torch.Tensor) -> torch.Tensor:
    """1 / d, and 0 where d is 0 (an all-zero block)."""
    return torch.where(d == 0, torch.zeros_like(d), 1 / torch.where(d == 0, torch.ones_like(d), d))


def _pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """(blocks, 32) values in 0..15 -> (blocks, 16) bytes: low half first 16, high half last 16."""
    q = q.to(torch.uint8)
    return q[:, : BLOCK // 2] | (q[:, BLOCK // 2 :] << 4)


def _unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    return torch.cat([packed & 0x0F, packed >> 4], dim=1)


def _f16_bytes(x: torch.Tensor) -> torch.Tensor:
    """(blocks, 1) float32 -> (blocks, 2) little-endian bytes of its float16."""
    return x.to(torch.float16).view(torch.uint8).reshape(-1, 2)


def _blocks(weights: torch.Tensor) -> torch.Tensor:
    if not isinstance(weights, torch.Tensor):
        raise TypeError(f"weights must be a torch.Tensor, got {type(weights).__name__}")
    if not weights.is_floating_point():
        raise TypeError(f"weights must be a floating-point tensor, got {weights.dtype}")
    if weights.dim() == 0 or weights.shape[-1] % BLOCK:
        raise ValueError(
            f"the last dimension of weights must be a multiple of {BLOCK} (blocks run along rows), "
            f"got shape {tuple(weights.shape)}"
        )
    if not torch.isfinite(weights).all():
        raise ValueError("weights must be finite: no inf or nan")
    return weights.detach().to(device="cpu", dtype=torch.float32).reshape(-1, BLOCK)


def quantize(weights: torch.Tensor, kind: str) -> bytes:
    """Quantize ``weights`` to ``kind`` and return the raw GGUF bytes, block after block.

    Args:
        weights: a float tensor whose last dimension is a multiple of 32.
        kind: ``"Q8_0"``, ``"Q4_0"`` or ``"Q4_1"``.

    Example:
        >>> raw = quantize(torch.ones(2, 32), "Q8_0")
        >>> len(raw), raw[:2].hex()       # two blocks; d = 1/127 as float16
        (68, '0820')

    Taught in: [Quantization](../part-2/quantization.ipynb).
    """
    kind = _check_kind(kind)
    x = _blocks(weights)
    if kind == "Q8_0":
        d = x.abs().amax(dim=1, keepdim=True) / 127
        q = _round_half_away(x * _inverse(d)).to(torch.int8).view(torch.uint8)
        parts = [_f16_bytes(d), q]
    elif kind == "Q4_0":
        # The largest weight in magnitude, with its sign, maps to -8.
        largest = torch.gather(x, 1, x.abs().argmax(dim=1, keepdim=True))
        d = largest / -8
        q = torch.trunc(x * _inverse(d) + 8.5).clamp(0, 15)
        parts = [_f16_bytes(d), _pack_nibbles(q)]
    else:  # Q4_1: the block's range in 15 steps, from its minimum
        low, high = x.amin(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)
        d = (high - low) / 15
        q = torch.trunc((x - low) * _inverse(d) + 0.5).clamp(0, 15)
        parts = [_f16_bytes(d), _f16_bytes(low), _pack_nibbles(q)]
    return torch.cat(parts, dim=1).contiguous().numpy().tobytes()


def dequantize(raw: bytes, kind: str, shape: Sequence[int]) -> torch.Tensor:
    """The float32 weights of ``shape`` stored in ``raw`` (GGUF bytes of ``kind``).

    Args:
        raw: the bytes of :func:`quantize`, or of a tensor read from a GGUF file.
        kind: ``"Q8_0"``, ``"Q4_0"`` or ``"Q4_1"``.
        shape: the weights' shape; its last dimension is a multiple of 32.

    Example:
        >>> dequantize(quantize(torch.full((32,), 0.5), "Q4_0"), "Q4_0", (32,))[:3]
        tensor([0.5000, 0.5000, 0.5000])

    Taught in: [Quantization](../part-2/quantization.ipynb).
    """
    kind = _check_kind(kind)
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise TypeError(f"raw must be bytes, got {type(raw).__name__}")
    try:
        shape = tuple(int(n) for n in shape)
    except TypeError:
        raise TypeError(f"shape must be a sequence of ints, got {shape!r}") from None
    if not shape or any(n <= 0 for n in shape) or shape[-1] % BLOCK:
        raise ValueError(f"shape must have positive sizes and a last size that is a multiple of {BLOCK}, got {shape}")
    count = 1
    for n in shape:
        count *= n
    expected = count // BLOCK * KINDS[kind]
    if len(raw) != expected:
        raise ValueError(f"{kind} weights of shape {shape} take {expected} bytes, got {len(raw)}")
    blocks = torch.frombuffer(bytearray(raw), dtype=torch.uint8).reshape(-1, KINDS[kind])

    def f16(column: int) -> torch.Tensor:
        return blocks[:, column : column + 2].contiguous().view(torch.float16).to(torch.float32)

    if kind == "Q8_0":
        weights = f16(0) * blocks[:, 2:].contiguous().view(torch.int8).to(torch.float32)
    elif kind == "Q4_0":
        weights = f16(0) * (_unpack_nibbles(blocks[:, 2:]).to(torch.int8) - 8).to(torch.float32)
    else:
        weights = f16(0) * _unpack_nibbles(blocks[:, 4:]).to(torch.float32) + f16(2)
    return weights.reshape(shape)
