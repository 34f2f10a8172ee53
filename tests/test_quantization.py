"""llmsforme.quantization against the gguf package, on the course model's own weights.

* dequantize: bit for bit what gguf returns, on every Q4_1 tensor of the
  course model's GGUF file (the file ships Q4_1; Q8_0 and Q4_0 are checked
  on tensors gguf quantizes here).
* quantize: the same bytes as gguf.quants.quantize (gguf >= 0.18), for the
  three kinds, on real weights (already on a Q4_1 grid), on 6.3 million seeded
  random weights that sit on no grid (normal, lopsided and heavy-tailed), on a
  Q4_0 value that float32 and float64 round differently, and on awkward blocks
  (all zeros, a single outlier, ties for the largest magnitude, values
  half-way between two steps).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")  # a dependency of the package: never missing in practice
from gguf import GGMLQuantizationType as GGML  # noqa: E402
from gguf import GGUFReader  # noqa: E402

from llmsforme.model_source import find_course_gguf  # noqa: E402
from llmsforme.quantization import KINDS, bits_per_weight, block_bytes, dequantize, quantize  # noqa: E402


@pytest.fixture(scope="module")
def reader():
    return GGUFReader(find_course_gguf())


def _shape(tensor) -> tuple[int, ...]:
    return tuple(int(n) for n in reversed(tensor.shape))  # GGUF lists dimensions fastest first


def test_dequantize_equals_gguf_on_every_q4_1_tensor_of_the_course_model(reader):
    tensors = [t for t in reader.tensors if t.tensor_type == GGML.Q4_1]
    assert len(tensors) == 210  # 30 layers x 7 matrices
    for t in tensors:
        data = np.asarray(t.data)
        ours = dequantize(data.tobytes(), "Q4_1", _shape(t)).numpy()
        reference = gguf.quants.dequantize(data, GGML.Q4_1).reshape(_shape(t))
        assert np.array_equal(ours, reference), t.name


@pytest.fixture(scope="module")
def real_weights(reader):
    t = next(t for t in reader.tensors if t.name == "blk.0.attn_q.weight")
    return np.asarray(gguf.quants.dequantize(np.asarray(t.data), t.tensor_type), dtype=np.float32).reshape(_shape(t))


AWKWARD = {
    "zeros": np.zeros((2, 32), np.float32),
    "outlier": np.concatenate([np.full((1, 31), 0.01, np.float32), np.full((1, 1), 9.0, np.float32)], axis=1),
    "tied magnitudes": np.tile(np.array([-1.0, 1.0] * 16, np.float32), (2, 1)),
    "half steps": (np.arange(64, dtype=np.float32).reshape(2, 32) - 31.5) / 127 * 3,
    "negative block": -np.linspace(0.1, 2.0, 32, dtype=np.float32)[None],
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_quantize_writes_the_bytes_of_gguf(kind, real_weights):
    for name, weights in {"course model layer 0 queries": real_weights, **AWKWARD}.items():
        reference = gguf.quants.quantize(weights, GGML[kind]).tobytes()
        assert quantize(torch.from_numpy(weights.copy()), kind) == reference, (kind, name)


@pytest.fixture(scope="module")
def random_weights() -> dict[str, np.ndarray]:
    """Seeded weights that sit on no grid: 2,097,152 values (65,536 blocks) in each of three shapes."""
    rng = np.random.default_rng(0)
    shape = (2048, 1024)
    return {
        "normal": (rng.standard_normal(shape) * 0.02).astype(np.float32),
        # each block of 32 shifted by its own offset, so most blocks lean to one side
        "lopsided": (rng.standard_normal(shape) * 0.02 + rng.standard_normal((2048, 32, 1)).repeat(32, -1).reshape(shape) * 0.03).astype(np.float32),
        # Student's t with 2 degrees of freedom: rare weights many times the typical size
        "heavy-tailed": (rng.standard_t(2, shape) * 0.01).astype(np.float32),
    }


# x * id + 8.5 is 12.99999954... in float64 and rounds to 13.0 in float32: gguf
# 0.10 to 0.17.1 computed it in float64 and wrote 12; gguf >= 0.18 and this
# module compute in float32 and write 13 (the block's largest weight, 0.14702109,
# gives id = 1 / (0.14702109 / -8) = -54.413963 in float32).
NEAR_TIE = np.zeros((1, 32), np.float32)
NEAR_TIE[0, :2] = [0.14702109, -0.08269935]


def test_q4_0_rounds_a_near_tie_in_float32_as_gguf_0_18_does():
    raw = quantize(torch.from_numpy(NEAR_TIE.copy()), "Q4_0")
    assert np.float32(1) / (np.float32(0.14702109) / np.float32(-8)) == np.float32(-54.413963)
    assert (raw[2 + 1] & 0x0F) == 13  # the second weight's 4-bit value
    assert raw == gguf.quants.quantize(NEAR_TIE, GGML.Q4_0).tobytes()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_quantize_writes_the_bytes_of_gguf_on_random_weights(kind, random_weights):
    for name, weights in {**random_weights, "near tie": NEAR_TIE}.items():
        reference = gguf.quants.quantize(weights, GGML[kind]).tobytes()
        assert quantize(torch.from_numpy(weights), kind) == reference, (kind, name)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_dequantize_equals_gguf_on_what_gguf_quantized(kind, real_weights):
    data = gguf.quants.quantize(real_weights, GGML[kind])
    reference = gguf.quants.dequantize(data, GGML[kind]).reshape(real_weights.shape)
    ours = dequantize(data.tobytes(), kind, real_weights.shape).numpy()
    assert np.array_equal(ours, reference)


def test_sizes_and_errors_shrink_with_more_bits(real_weights):
    w = torch.from_numpy(real_weights.copy())
    # The course model's weights *are* Q4_1 values: re-quantizing them to Q4_1
    # gives them back exactly (each block's minimum and range are on the grid).
    assert torch.equal(dequantize(quantize(w, "Q4_1"), "Q4_1", w.shape), w)
    noisy = w + torch.randn(w.shape, generator=torch.Generator().manual_seed(0)) * float(w.std()) * 0.1
    errors = {}
    for kind in KINDS:
        raw = quantize(noisy, kind)
        assert len(raw) == w.numel() // 32 * block_bytes(kind)
        errors[kind] = float((dequantize(raw, kind, w.shape) - noisy).abs().mean())
    assert errors["Q8_0"] < errors["Q4_1"] < errors["Q4_0"], errors
    assert [bits_per_weight(k) for k in ("Q8_0", "Q4_0", "Q4_1")] == [8.5, 4.5, 5.0]


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: quantize(torch.zeros(32), "Q5_0"), ValueError, "kind must be one of"),
        (lambda: quantize(torch.zeros(30), "Q8_0"), ValueError, "multiple of 32"),
        (lambda: quantize(torch.zeros(()), "Q8_0"), ValueError, "multiple of 32"),
        (lambda: quantize(torch.zeros(32, dtype=torch.int64), "Q8_0"), TypeError, "floating-point"),
        (lambda: quantize([0.0] * 32, "Q8_0"), TypeError, "torch.Tensor"),
        (lambda: quantize(torch.full((32,), float("nan")), "Q4_1"), ValueError, "finite"),
        (lambda: dequantize(b"\0" * 19, "Q4_1", (32,)), ValueError, "take 20 bytes, got 19"),
        (lambda: dequantize(b"\0" * 20, "Q4_1", (16,)), ValueError, "multiple of 32"),
        (lambda: dequantize(b"\0" * 20, "Q4_1", ()), ValueError, "multiple of 32"),
        (lambda: dequantize(b"\0" * 20, "Q4_1", 32), TypeError, "sequence of ints"),
        (lambda: dequantize("x" * 20, "Q4_1", (32,)), TypeError, "raw must be bytes"),
        (lambda: dequantize(b"\0" * 20, None, (32,)), ValueError, "kind must be one of"),
    ],
)
def test_bad_input_is_refused_clearly(call, error, message):
    with pytest.raises(error, match=message):
        call()
