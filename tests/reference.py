"""Independent numpy references for tests: written from the formulas in SPEC/docs, never by
calling the code under test."""

from __future__ import annotations

import numpy as np


def ccc_np(x, y) -> float:
    """CCC with population (1/n) moments, plain numpy, float64."""
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    cov = np.mean((x - x.mean()) * (y - y.mean()))
    return float(2 * cov / (x.var() + y.var() + (x.mean() - y.mean()) ** 2))


def split_ccc_np(preds: dict, labels: dict, masks: dict) -> dict[str, float]:
    """The official protocol by hand: keep the frames whose label is valid, concatenate every
    video of the split, then CCC per axis; and the mean of the two axes."""
    names = sorted(preds)
    p = np.concatenate([np.asarray(preds[n])[np.asarray(masks[n])] for n in names])
    y = np.concatenate([np.asarray(labels[n])[np.asarray(masks[n])] for n in names])
    v, a = ccc_np(p[:, 0], y[:, 0]), ccc_np(p[:, 1], y[:, 1])
    return {"ccc_valence": v, "ccc_arousal": a, "ccc_mean": (v + a) / 2, "frames": len(y)}
