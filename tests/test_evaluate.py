"""llmsforme.evaluate.perplexity against transformers' own loss, on the course model."""

from __future__ import annotations

import math

import pytest
import torch

from llmsforme.evaluate import perplexity

TEXT = ("The rain in Spain falls mainly in the plain. In Hartford, Hereford and Hampshire, "
        "hurricanes hardly ever happen. By George, she's got it!")


def reference(model, ids: torch.Tensor, window: int, stride: int) -> float:
    """The sliding-window loop of Hugging Face's perplexity guide, with model(..., labels=...).loss."""
    nll, count, previous_end = 0.0, 0, 0
    for begin in range(0, ids.shape[1], stride):
        end = min(begin + window, ids.shape[1])
        chunk = ids[:, begin:end]
        labels = chunk.clone()
        labels[:, : chunk.shape[1] - (end - previous_end)] = -100
        with torch.no_grad():
            loss = model(chunk, labels=labels).loss
        n = int((labels[:, 1:] != -100).sum())
        nll += float(loss) * n
        count += n
        previous_end = end
        if end == ids.shape[1]:
            break
    return math.exp(nll / count)


def test_one_window_equals_the_models_own_loss(course_model):
    model, tokenizer = course_model
    ids = tokenizer(TEXT, return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad():
        expected = math.exp(float(model(ids, labels=ids).loss))
    assert perplexity(model, tokenizer, TEXT, window=512, stride=256) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(("window", "stride"), [(16, 8), (12, 1), (20, 19)])
def test_sliding_windows_equal_the_reference_loop(course_model, window, stride):
    model, tokenizer = course_model
    ids = tokenizer(TEXT, return_tensors="pt", add_special_tokens=False).input_ids
    assert ids.shape[1] > window  # several windows
    ours = perplexity(model, tokenizer, TEXT, window=window, stride=stride)
    assert ours == pytest.approx(reference(model, ids, window, stride), rel=1e-5)


def test_more_context_means_lower_perplexity(course_model):
    model, tokenizer = course_model
    short = perplexity(model, tokenizer, TEXT, window=4, stride=3)
    long = perplexity(model, tokenizer, TEXT, window=64, stride=32)
    assert long < short


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"text": "Hi"}, ValueError, "at least 2 tokens"),
        ({"text": 3}, TypeError, "text must be a string"),
        ({"window": 0}, ValueError, "window must be an int >= 1"),
        ({"window": 1}, ValueError, "at least 2 tokens, got 1"),
        ({"window": 8, "stride": 8}, ValueError, r"stride must be from 1 to window - 1 \(7\)"),
        ({"stride": 1.5}, ValueError, "stride must be an int"),
        ({"window": 9000, "stride": 10}, ValueError, "at most the model's context, 8192"),
    ],
)
def test_bad_arguments(course_model, kwargs, error, message):
    model, tokenizer = course_model
    arguments = {"text": TEXT, **kwargs}
    with pytest.raises(error, match=message):
        perplexity(model, tokenizer, **arguments)
