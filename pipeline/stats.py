"""Paired comparisons of two heads, for `jmt compare`: per-seed differences with a Student t
interval (over seeds), and a bootstrap over videos of the CCC difference on one split."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from pipeline.metrics import ccc_from_sums, ccc_sums


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


def _video_sums(preds: dict[str, np.ndarray], labels: dict[str, tuple[np.ndarray, np.ndarray]],
                names: list[str]) -> np.ndarray:
    """CCC sums per video and axis over the valid frames: (videos, 2, 6)."""
    return np.stack([np.stack([ccc_sums(preds[n][labels[n][1], k], labels[n][0][labels[n][1], k])
                               for k in range(2)]) for n in names])


def bootstrap_videos(preds_a: Sequence[dict[str, np.ndarray]], preds_b: Sequence[dict[str, np.ndarray]],
                     labels: dict[str, tuple[np.ndarray, np.ndarray]], *, n_boot: int = 2000,
                     confidence: float = 0.95, seed: int = 0) -> Interval:
    """Percentile bootstrap of the mean-CCC difference A - B, resampling videos with replacement.

    preds_a[i] and preds_b[i] are one seed's predictions of the two heads (name -> (n, 2));
    labels: name -> (labels (n, 2), valid mask (n,)). Each resample draws videos, scores every
    seed of both heads on the same draw (CCC over the drawn videos' valid frames, concatenated
    as the official metric does) and keeps the mean over seeds of the differences: paired by
    video and by seed. The estimate is that statistic on the videos as they are. A draw whose
    CCC is undefined (constant labels) is skipped. Exact and fast: per-video sums, not frames."""
    if len(preds_a) != len(preds_b) or not preds_a:
        raise ValueError(f"need the same number (>= 1) of seeds for both heads, got {len(preds_a)} and {len(preds_b)}")
    names = sorted(labels)
    # (seeds, videos, axes, 6)
    sums_a = np.stack([_video_sums(p, labels, names) for p in preds_a])
    sums_b = np.stack([_video_sums(p, labels, names) for p in preds_b])

    def diff(counts: np.ndarray) -> np.ndarray:
        """counts (draws, videos) -> mean over seeds of mean-CCC(A) - mean-CCC(B), (draws,)."""
        a = ccc_from_sums(np.einsum("dv,svkj->dskj", counts, sums_a)).mean(-1)
        b = ccc_from_sums(np.einsum("dv,svkj->dskj", counts, sums_b)).mean(-1)
        return (a - b).mean(-1)

    observed = float(diff(np.ones((1, len(names))))[0])
    rng = np.random.default_rng(seed)
    draws = rng.integers(len(names), size=(n_boot, len(names)))
    counts = np.zeros((n_boot, len(names)))
    np.add.at(counts, (np.arange(n_boot)[:, None], draws), 1)
    diffs = diff(counts)
    diffs = diffs[np.isfinite(diffs)]
    if not len(diffs):
        raise ValueError(f"no bootstrap resample of the {len(names)} videos has a defined CCC")
    low, high = np.quantile(diffs, [(1 - confidence) / 2, (1 + confidence) / 2])
    return Interval(observed, float(low), float(high), len(names), "bootstrap over videos")
