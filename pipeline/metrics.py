"""The official metric, written once: concordance correlation coefficient (CCC).

    CCC = 2 cov(x, y) / (var(x) + var(y) + (mean(x) - mean(y))^2)

with *population* moments (divide by n), computed on all valid frames of a split concatenated
across videos (the ABAW way). torchmetrics uses 1/(n-1) moments instead: on its own doc example
it gives 0.9777 where this gives 0.9768. The loss in stage 2 is 1 - CCC per axis, over the
flattened batch, with the same function.
"""

from __future__ import annotations

import numpy as np
import torch

Array = np.ndarray | torch.Tensor


def ccc(pred: Array, target: Array) -> float:
    """CCC of two 1-D sequences (numpy arrays or tensors), population moments, as a float.
    Undefined (raises) when both are constant with equal means."""
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


def ccc_torch(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Differentiable CCC over all elements of x and y (population moments); `eps` keeps the
    loss finite on a constant batch."""
    mx, my = x.mean(), y.mean()
    vx, vy = ((x - mx) ** 2).mean(), ((y - my) ** 2).mean()
    cov = ((x - mx) * (y - my)).mean()
    return 2 * cov / (vx + vy + (mx - my) ** 2 + eps)


def ccc_sums(pred: Array, target: Array) -> np.ndarray:
    """The sufficient statistics (n, sx, sy, sxx, syy, sxy) of CCC, float64: sums of these
    over parts of a split give the split's CCC exactly (`ccc_from_sums`)."""
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
