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


class CCCAccumulator:
    """Running sums for CCC over many batches (exact, float64), so a whole split's frames can
    be scored without keeping them all: update(pred, target) per batch, then compute()."""

    def __init__(self) -> None:
        self.n = 0
        self.sx = self.sy = self.sxx = self.syy = self.sxy = 0.0

    def update(self, pred: Array, target: Array) -> None:
        x = torch.as_tensor(pred, dtype=torch.float64).flatten()
        y = torch.as_tensor(target, dtype=torch.float64).flatten()
        self.n += x.numel()
        self.sx += float(x.sum())
        self.sy += float(y.sum())
        self.sxx += float((x * x).sum())
        self.syy += float((y * y).sum())
        self.sxy += float((x * y).sum())

    def compute(self) -> float:
        if self.n < 2:
            raise ValueError(f"CCC needs at least 2 valid frames, got {self.n}")
        mx, my = self.sx / self.n, self.sy / self.n
        vx, vy = self.sxx / self.n - mx * mx, self.syy / self.n - my * my
        cov = self.sxy / self.n - mx * my
        return 2 * cov / (vx + vy + (mx - my) ** 2)
