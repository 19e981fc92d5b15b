"""Paired comparisons of two heads, for `jmt compare`: per-seed differences with a Student t
interval (over seeds), and a bootstrap over videos of the metric difference on one split (any
task's metric, or the sum of several: `Part`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats



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


@dataclass(frozen=True)
class Part:
    """One task's share of a paired bootstrap: the task, each seed's outputs of the two heads
    (name -> (n, width)) and the labels of its videos (name -> (labels (n, k), valid (n,)))."""

    task: object            # a pipeline.tasks.Task: `sums` and `from_sums`
    preds_a: Sequence[dict[str, np.ndarray]]
    preds_b: Sequence[dict[str, np.ndarray]]
    labels: dict[str, tuple[np.ndarray, np.ndarray]]


def _video_sums(task, preds: dict[str, np.ndarray], labels: dict[str, tuple[np.ndarray, np.ndarray]],
                names: list[str]) -> np.ndarray:
    """The task's metric statistics per video over its valid frames: (videos, *S); zeros for a
    video the task does not score (it then adds nothing to a draw)."""
    rows = []
    for n in names:
        if n in labels:
            y, valid = labels[n]
            rows.append(task.sums(preds[n][valid], y[valid]))
        else:
            rows.append(None)
    shape = next(r.shape for r in rows if r is not None)
    return np.stack([r if r is not None else np.zeros(shape) for r in rows])


def bootstrap_videos(parts: Sequence[Part], *, n_boot: int = 2000, confidence: float = 0.95,
                     seed: int = 0) -> Interval:
    """Percentile bootstrap of the metric difference A - B, resampling videos with replacement.

    Each part is one task (one part: its metric, e.g. va's CCC mean; several: the sum of their
    metrics, the multi-task measure). preds_a[i] and preds_b[i] are one seed's outputs of the two
    heads. Each resample draws videos from all the parts' videos, scores every seed of both heads
    on the same draw (each task over the drawn videos it labels, their valid frames concatenated
    as the official metric does) and keeps the mean over seeds of the differences: paired by video
    and by seed. The estimate is that statistic on the videos as they are. A draw whose metric is
    undefined (constant labels, no video of a task) is skipped. Exact and fast: per-video sums
    (`Task.sums`), not frames."""
    if not parts or any(len(p.preds_a) != len(p.preds_b) or not p.preds_a for p in parts):
        raise ValueError("need the same number (>= 1) of seeds for both heads")
    names = sorted({n for p in parts for n in p.labels})
    # per part: (seeds, videos, *S)
    sums = [(p.task, np.stack([_video_sums(p.task, x, p.labels, names) for x in p.preds_a]),
             np.stack([_video_sums(p.task, x, p.labels, names) for x in p.preds_b])) for p in parts]

    def diff(counts: np.ndarray) -> np.ndarray:
        """counts (draws, videos) -> mean over seeds of metric(A) - metric(B), (draws,)."""
        def metric(task, s: np.ndarray) -> np.ndarray:  # s (seeds, videos, *S) -> (draws, seeds)
            flat = s.reshape(*s.shape[:2], -1)
            drawn = np.einsum("dv,svm->dsm", counts, flat).reshape(len(counts), *s.shape[:1], *s.shape[2:])
            return task.from_sums(drawn)
        a = sum(metric(task, sa) for task, sa, _ in sums)
        b = sum(metric(task, sb) for task, _, sb in sums)
        return (a - b).mean(-1)

    observed = float(diff(np.ones((1, len(names))))[0])
    rng = np.random.default_rng(seed)
    draws = rng.integers(len(names), size=(n_boot, len(names)))
    counts = np.zeros((n_boot, len(names)))
    np.add.at(counts, (np.arange(n_boot)[:, None], draws), 1)
    diffs = diff(counts)
    diffs = diffs[np.isfinite(diffs)]
    if not len(diffs):
        raise ValueError(f"no bootstrap resample of the {len(names)} videos has a defined metric")
    low, high = np.quantile(diffs, [(1 - confidence) / 2, (1 + confidence) / 2])
    return Interval(observed, float(low), float(high), len(names), "bootstrap over videos")
