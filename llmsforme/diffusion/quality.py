"""Grading generated digits: a classifier that can say "that is not a 7", and a diversity figure.

A generated digit is only good if a reader would recognise it as the digit
asked for. A support-vector classifier trained on scikit-learn's real
digits (with a held-out split, whose accuracy it reports) labels the
generated images; the **conditional accuracy** is the share labelled as
the digit requested. Guidance raises it, and lowers **diversity**, the mean
distance between images of the same digit: the trade-off the Part 5 pages
measure.

Taught in: [Conditioning and guidance](../part-5/guidance.ipynb).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from .sampling import sample

if TYPE_CHECKING:
    from .weights import DigitsModel

__all__ = ["DigitClassifier", "Grade", "digit_classifier", "diversity", "grade", "load_digit_images"]


def load_digit_images(size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 handwritten digits as ``(images, labels)``, images in [0, 1].

    The originals are 8 x 8 with values 0-16; they are resized bilinearly to
    ``size`` x ``size`` (16 for the course's model).

    Example::

        >>> images, labels = load_digit_images()
        >>> tuple(images.shape), labels[:5].tolist()
        ((1797, 1, 16, 16), [0, 1, 2, 3, 4])
    """
    from sklearn.datasets import load_digits

    if isinstance(size, bool) or not isinstance(size, int) or not 8 <= size <= 64:
        raise ValueError(f"size must be an int in [8, 64], got {size!r}")
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16
    if size != 8:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return images.clamp(0, 1), torch.tensor(digits.target)


def _features(images: torch.Tensor) -> Any:
    """Images in [0, 1] of any size that is a multiple of 8, as the 64 values 0-16 the classifier reads."""
    if images.dim() != 4 or images.shape[1] != 1 or images.shape[-1] % 8 or images.shape[-2] % 8:
        raise ValueError(f"images must be (n, 1, H, W) with H and W multiples of 8, got {tuple(images.shape)}")
    pooled = F.adaptive_avg_pool2d(images.float(), 8)  # back to the originals' 8 x 8
    return (pooled * 16).reshape(len(images), 64).numpy().astype("float64")


@dataclass
class DigitClassifier:
    """An SVC trained on real digits; ``accuracy`` is its score on held-out real digits."""

    model: Any
    accuracy: float

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """The digit each image shows, by the classifier's reading."""
        return torch.from_numpy(self.model.predict(_features(images)))


def digit_classifier(seed: int = 0) -> DigitClassifier:
    """Train the grader: an SVC (RBF kernel, ``gamma=0.001``, ``C=10``) on 75 % of the real digits.

    Its accuracy on the other 25 % (stratified, split with ``seed``) says how
    far its labels can be trusted.

    Example::

        >>> classifier = digit_classifier()
        >>> classifier.accuracy > 0.95
        True
    """
    from sklearn.model_selection import train_test_split
    from sklearn.svm import SVC

    images, labels = load_digit_images(size=8)
    features, targets = _features(images), labels.numpy()
    train_x, test_x, train_y, test_y = train_test_split(
        features, targets, test_size=0.25, random_state=seed, stratify=targets
    )
    svc = SVC(gamma=0.001, C=10).fit(train_x, train_y)
    return DigitClassifier(model=svc, accuracy=float(svc.score(test_x, test_y)))


def diversity(images: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean Euclidean distance between two images of the same label, averaged over labels.

    Pixels in [0, 1]; higher means more varied images of each digit.

    Example::

        >>> same = torch.zeros(4, 1, 16, 16)
        >>> diversity(same, torch.tensor([3, 3, 5, 5]))
        0.0
    """
    labels = torch.as_tensor(labels)
    if len(images) != len(labels):
        raise ValueError(f"need one label per image: {len(images)} images, {len(labels)} labels")
    distances = []
    for label in labels.unique():
        group = images[labels == label].flatten(1)
        if len(group) >= 2:
            distances.append(torch.pdist(group).mean())
    if not distances:
        raise ValueError("diversity needs at least two images of some label")
    return float(torch.stack(distances).mean())


@dataclass
class Grade:
    """Conditional accuracy (overall and per digit) and diversity of one batch of samples."""

    accuracy: float
    per_digit: dict[int, float]
    diversity: float
    images: torch.Tensor
    labels: torch.Tensor


def grade(
    model: DigitsModel, classifier: DigitClassifier, *, per_digit: int = 10, **sample_options: Any
) -> Grade:
    """Sample ``per_digit`` images of each digit 0-9 and grade them.

    ``sample_options`` go to :func:`~llmsforme.diffusion.sample` (sampler,
    steps, guidance_scale, seed).

    Example::

        >>> from llmsforme.diffusion import load_digits_model
        >>> result = grade(load_digits_model(), digit_classifier(), per_digit=2, steps=10)
        >>> sorted(result.per_digit) == list(range(10)), 0 <= result.accuracy <= 1
        (True, True)
    """
    if isinstance(per_digit, bool) or not isinstance(per_digit, int) or per_digit < 1:
        raise ValueError(f"per_digit must be an int >= 1, got {per_digit!r}")
    digits = [digit for digit in range(10) for _ in range(per_digit)]
    images = sample(model, digits, **sample_options)
    labels = torch.tensor(digits)
    correct = classifier.predict(images) == labels
    return Grade(
        accuracy=float(correct.float().mean()),
        per_digit={d: float(correct[labels == d].float().mean()) for d in range(10)},
        diversity=diversity(images, labels) if per_digit >= 2 else float("nan"),
        images=images,
        labels=labels,
    )
