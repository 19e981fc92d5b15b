"""The official metrics, each written once.

Concordance correlation coefficient (valence-arousal):

    CCC = 2 cov(x, y) / (var(x) + var(y) + (mean(x) - mean(y))^2)

with *population* moments (divide by n), computed on all valid frames of a split concatenated
across videos (the ABAW way). torchmetrics uses 1/(n-1) moments instead: on its own doc example
it gives 0.9777 where this gives 0.9768. The loss in stage 2 is 1 - CCC per axis, over the
flattened batch, with the same function.

F1 (expression, action units), from counts so that parts of a split (videos) add up exactly:

    F1 = 2 TP / (2 TP + FP + FN)        (0 when a class is neither labelled nor predicted)

Expression: macro F1 = the mean of the per-class F1 over the 8 classes, one-vs-rest, from the
confusion matrix; action units: the mean of the 12 binary F1s (threshold 0.5). These equal
scikit-learn's `f1_score(..., average="macro", labels=range(8), zero_division=0)` and the mean
of its per-AU binary `f1_score` (tests/test_metrics.py checks both).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Union

import numpy as np

if TYPE_CHECKING:  # torch is imported where a CCC is computed: the F1 metrics need only numpy
    import torch

Array = Union[np.ndarray, "torch.Tensor"]


def ccc(pred: Array, target: Array) -> float:
    """CCC of two 1-D sequences (numpy arrays or tensors), population moments, as a float.
    Undefined (raises) when both are constant with equal means."""
    import torch

    x = torch.as_tensor(pred, dtype=torch.float64).flatten()
    y = torch.as_tensor(target, dtype=torch.float64).flatten()
    if x.shape != y.shape:
        raise ValueError(f"ccc needs equal lengths, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.numel() < 2:
        raise ValueError(f"ccc needs at least 2 values, got {x.numel()}")
    value = ccc_torch(x, y, eps=0.0)
    if not torch.isfinite(value):
        raise ValueError("ccc is undefined: both sequences are constant with equal means")
    return float(value)


def ccc_torch(x: "torch.Tensor", y: "torch.Tensor", eps: float = 1e-8) -> "torch.Tensor":
    """Differentiable CCC over all elements of x and y (population moments); `eps` keeps the
    loss finite on a constant batch."""
    mx, my = x.mean(), y.mean()
    vx, vy = ((x - mx) ** 2).mean(), ((y - my) ** 2).mean()
    cov = ((x - mx) * (y - my)).mean()
    return 2 * cov / (vx + vy + (mx - my) ** 2 + eps)


def ccc_sums(pred: Array, target: Array) -> np.ndarray:
    """The sufficient statistics (n, sx, sy, sxx, syy, sxy) of CCC, float64: sums of these
    over parts of a split give the split's CCC exactly (`ccc_from_sums`)."""
    import torch

    x = torch.as_tensor(pred, dtype=torch.float64).flatten()
    y = torch.as_tensor(target, dtype=torch.float64).flatten()
    return np.array([x.numel(), float(x.sum()), float(y.sum()), float((x * x).sum()),
                     float((y * y).sum()), float((x * y).sum())])


def ccc_from_sums(sums: np.ndarray) -> np.ndarray:
    """CCC from summed statistics (..., 6) -> (...); NaN where undefined (n < 2 or both constant)."""
    n, sx, sy, sxx, syy, sxy = np.moveaxis(np.asarray(sums, np.float64), -1, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, my = sx / n, sy / n
        vx, vy = sxx / n - mx * mx, syy / n - my * my
        cov = sxy / n - mx * my
        out = 2 * cov / (vx + vy + (mx - my) ** 2)
    return np.where(n >= 2, out, np.nan)


class CCCAccumulator:
    """Running sums for CCC over many batches (exact, float64), so a whole split's frames can
    be scored without keeping them all: update(pred, target) per batch, then compute()."""

    def __init__(self) -> None:
        self.sums = np.zeros(6)

    def update(self, pred: Array, target: Array) -> None:
        self.sums += ccc_sums(pred, target)

    def compute(self) -> float:
        if self.sums[0] < 2:
            raise ValueError(f"CCC needs at least 2 valid frames, got {int(self.sums[0])}")
        return float(ccc_from_sums(self.sums))


def confusion(pred: np.ndarray, target: np.ndarray, classes: int) -> np.ndarray:
    """Counts of (true class, predicted class) over frames: int64 (classes, classes)."""
    pred, target = np.asarray(pred, np.int64).ravel(), np.asarray(target, np.int64).ravel()
    if pred.shape != target.shape:
        raise ValueError(f"confusion needs equal lengths, got {pred.shape} and {target.shape}")
    if len(pred) and (min(pred.min(), target.min()) < 0 or max(pred.max(), target.max()) >= classes):
        raise ValueError(f"class indices must lie in 0..{classes - 1}")
    return np.bincount(target * classes + pred, minlength=classes * classes).reshape(classes, classes)


def f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Per-class F1 = 2 TP / (2 TP + FP + FN), elementwise (any leading shape); 0 where the class
    is neither labelled nor predicted (2 TP + FP + FN = 0)."""
    tp, fp, fn = (np.asarray(a, np.float64) for a in (tp, fp, fn))
    den = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), 0.0)


def macro_f1_from_confusion(matrix: np.ndarray) -> np.ndarray:
    """Macro F1 over the classes of confusion matrices (..., C, C) [true, predicted] -> (...)."""
    m = np.asarray(matrix, np.float64)
    tp = np.diagonal(m, axis1=-2, axis2=-1)
    fp, fn = m.sum(-2) - tp, m.sum(-1) - tp       # column sums: predicted; row sums: true
    return f1_from_counts(tp, fp, fn).mean(-1)


def binary_counts(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per label (column) of 0/1 predictions and targets (n, k): int64 (k, 4) = TP, FP, FN, TN."""
    p, t = np.asarray(pred, bool), np.asarray(target, bool)
    if p.shape != t.shape or p.ndim != 2:
        raise ValueError(f"binary_counts needs two equal (n, k) arrays, got {p.shape} and {t.shape}")
    return np.stack([(p & t).sum(0), (p & ~t).sum(0), (~p & t).sum(0), (~p & ~t).sum(0)], axis=1).astype(np.int64)
