"""Paired comparisons of two heads, for `jmt compare` (issue 5): per-seed differences with a
Student t interval, and a bootstrap over videos of the CCC difference on one split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from pipeline.metrics import ccc


@dataclass(frozen=True)
class Interval:
    """A difference (candidate - reference) with its confidence interval."""

    mean: float
    low: float
    high: float
    n: int
    method: str

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def paired_t(differences: np.ndarray, confidence: float = 0.95) -> Interval:
    """t interval of the mean of paired differences (e.g. per-seed CCC of head A - head B).

    mean +- t_{(1+c)/2, n-1} * s / sqrt(n), s the sample standard deviation (n - 1)."""
    d = np.asarray(differences, np.float64)
    if len(d) < 2:
        raise ValueError(f"a paired t interval needs at least 2 differences, got {len(d)}")
    half = stats.t.ppf((1 + confidence) / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return Interval(float(d.mean()), float(d.mean() - half), float(d.mean() + half), len(d), "paired t over seeds")


def bootstrap_videos(pred_a: dict[str, np.ndarray], pred_b: dict[str, np.ndarray],
                     labels: dict[str, tuple[np.ndarray, np.ndarray]], *, n_boot: int = 2000,
                     confidence: float = 0.95, seed: int = 0) -> Interval:
    """Percentile bootstrap of mean-CCC(A) - mean-CCC(B), resampling videos with replacement
    (both heads on the same resampled videos: paired). pred_*: name -> (n, 2); labels: name ->
    (labels (n, 2), valid mask (n,))."""
    names = sorted(labels)
    rng = np.random.default_rng(seed)

    def mean_ccc(pred: dict[str, np.ndarray], chosen: list[str]) -> float:
        p = np.concatenate([pred[n][labels[n][1]] for n in chosen])
        y = np.concatenate([labels[n][0][labels[n][1]] for n in chosen])
        return (ccc(p[:, 0], y[:, 0]) + ccc(p[:, 1], y[:, 1])) / 2

    observed = mean_ccc(pred_a, names) - mean_ccc(pred_b, names)
    diffs = []
    for _ in range(n_boot):
        chosen = [names[i] for i in rng.integers(len(names), size=len(names))]
        try:
            diffs.append(mean_ccc(pred_a, chosen) - mean_ccc(pred_b, chosen))
        except ValueError:  # a resample with constant labels: CCC undefined, draw again
            continue
    low, high = np.quantile(diffs, [(1 - confidence) / 2, (1 + confidence) / 2])
    return Interval(float(observed), float(low), float(high), len(names), "bootstrap over videos")
