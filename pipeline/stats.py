"""Paired comparisons of two heads, for `jmt compare`: per-seed differences with a Student t
interval (over seeds), a bootstrap over videos of the metric difference on one split (any task's
metric, or the sum of several: `Part`), each video's own metric, the standardised effect d_z with
its exact interval, the p-value of "the difference lies within +-margin" for either interval, and
Holm's step-down adjustment of a family of p-values."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize, stats


@dataclass(frozen=True)
class Interval:
    """A difference (candidate - reference) with its confidence interval; `draws`, for a
    bootstrap, its finite resampled statistics (not part of equality)."""

    mean: float
    low: float
    high: float
    n: int
    method: str
    draws: np.ndarray | None = field(default=None, compare=False, repr=False)

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


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment, in the order given: with p sorted ascending,
    p_holm_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)) (m = the family's size). Rejecting where
    p_holm < alpha keeps the chance of any false rejection in the family below alpha, whatever
    the dependence between the tests (Holm 1979)."""
    p = np.asarray(p_values, np.float64)
    order = np.argsort(p, kind="stable")
    m = len(p)
    stepped = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = stepped
    return [float(x) for x in out]


def p_beyond_margin_t(low: float, high: float, n: int, margin: float, confidence: float) -> float:
    """p-value of "the difference lies within +-margin" from a paired t interval [low, high] over
    n values at `confidence`: t = (|centre| - margin) / se, p = min(1, 2 sf_{n-1}(t)), se read
    off the interval's half-width (half / t_{(1+c)/2, n-1}). So p < 1 - confidence exactly when
    low > margin or high < -margin. A zero-width interval: 0 if it lies beyond the margin, else 1."""
    centre, half = (low + high) / 2, (high - low) / 2
    if half <= 0:
        return 0.0 if abs(centre) > margin else 1.0
    se = half / stats.t.ppf((1 + confidence) / 2, n - 1)
    return float(min(1.0, 2 * stats.t.sf((abs(centre) - margin) / se, n - 1)))


def _level_below(sorted_draws: np.ndarray, value: float) -> float:
    """The largest level a at which np.quantile(draws, a) (linear interpolation) is <= value: the
    quantile function inverted, so np.quantile(draws, a') > value exactly when a' > this."""
    x, n = sorted_draws, len(sorted_draws)
    if value < x[0]:
        return 0.0
    if value >= x[-1] or n == 1:
        return 1.0
    i = int(np.searchsorted(x, value, side="right")) - 1     # x[i] <= value < x[i + 1]
    return float((i + (value - x[i]) / (x[i + 1] - x[i])) / (n - 1))


def p_beyond_margin_draws(draws: np.ndarray, margin: float) -> float:
    """p-value of "the difference lies within +-margin" from a percentile bootstrap's draws: twice
    the smaller tail level at which a percentile bound reaches the margin (about
    2 min(frac(draws <= margin), frac(draws >= -margin)); exactly the inverse of np.quantile), so
    p < 1 - confidence exactly when the percentile interval at that confidence clears the margin."""
    x = np.sort(np.asarray(draws, np.float64))
    return float(min(1.0, 2 * _level_below(x, margin), 2 * _level_below(np.sort(-x), margin)))


def paired_effect(differences: Sequence[float], confidence: float = 0.95) -> Interval | None:
    """Cohen's d_z = mean(d) / sd(d) (sd with n - 1) of paired differences, with its exact
    interval from the noncentral t: t_obs = d_z sqrt(n) follows nct(n - 1, delta sqrt(n)); the
    bounds are the noncentralities with sf(t_obs; ncp_L) = (1 - c) / 2 and
    cdf(t_obs; ncp_U) = (1 - c) / 2, divided by sqrt(n). None with fewer than 2 differences or
    no spread (d_z undefined)."""
    d = np.asarray(differences, np.float64)
    n = len(d)
    if n < 2 or not d.std(ddof=1) > 0:
        return None
    dz = float(d.mean() / d.std(ddof=1))
    t_obs, tail = dz * np.sqrt(n), (1 - confidence) / 2
    low = _root(lambda ncp: stats.nct.sf(t_obs, n - 1, ncp) - tail, t_obs)       # increasing in ncp
    high = _root(lambda ncp: tail - stats.nct.cdf(t_obs, n - 1, ncp), t_obs)     # increasing in ncp
    return Interval(dz, low / np.sqrt(n), high / np.sqrt(n), n, "d_z, noncentral t")


def _root(f, start: float) -> float:
    """The root of an increasing f, bracketed by stepping out from `start` (a noncentrality can be
    far from t_obs with one degree of freedom)."""
    step = 1.0 + abs(start)
    low, high = start - step, start + step
    while f(low) > 0:
        low -= step
        step *= 2
    while f(high) < 0:
        high += step
        step *= 2
    return float(optimize.brentq(f, low, high, xtol=1e-12))


def video_metrics(task, preds: dict[str, np.ndarray], labels: dict[str, tuple[np.ndarray, np.ndarray]],
                  names: list[str]) -> np.ndarray:
    """Each video's own metric: the task's main metric on that video's valid frames, (videos,);
    NaN where undefined (a video the task does not label, constant labels and predictions)."""
    labelled = [n for n in names if n in labels]
    out = np.full(len(names), np.nan)
    if labelled:
        values = task.from_sums(_video_sums(task, preds, labels, labelled))
        out[[names.index(n) for n in labelled]] = values
    return out


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
    (`Task.sums`), not frames. The finite draws ride along as `draws` (for `p_beyond_margin_draws`)."""
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
    return Interval(observed, float(low), float(high), len(names), "bootstrap over videos", diffs)
