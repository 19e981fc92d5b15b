import numpy as np
import pytest

from pipeline.metrics import ccc
from pipeline.stats import bootstrap_videos, paired_t


def test_paired_t_hand_worked():
    # differences 0.02, 0.04, 0.03: mean 0.03, s = 0.01, se = 0.01 / sqrt(3) = 0.0057735,
    # t(0.975, 2) = 4.302653, half-width = 0.024841 -> [0.005159, 0.054841]
    iv = paired_t([0.02, 0.04, 0.03])
    assert iv.mean == pytest.approx(0.03)
    assert iv.low == pytest.approx(0.005159, abs=1e-6)
    assert iv.high == pytest.approx(0.054841, abs=1e-6)
    assert iv.excludes_zero and iv.n == 3
    assert not paired_t([0.02, -0.03, 0.01]).excludes_zero
    with pytest.raises(ValueError, match="at least 2"):
        paired_t([0.1])


def _videos(n=8, frames=50, seed=0):
    rng = np.random.default_rng(seed)
    labels = {}
    for i in range(n):
        y = np.clip(np.cumsum(rng.normal(0, 0.1, (frames, 2)), 0), -1, 1).astype(np.float32)
        labels[f"v{i}"] = (y, np.ones(frames, bool))
    return labels, rng


def test_bootstrap_identical_heads_give_zero():
    labels, rng = _videos()
    pred = {k: y + rng.normal(0, 0.2, y.shape) for k, (y, _) in labels.items()}
    iv = bootstrap_videos([pred], [pred], labels, n_boot=200)
    assert (iv.mean, iv.low, iv.high) == (0.0, 0.0, 0.0)


def test_bootstrap_detects_a_better_head_and_is_seeded():
    labels, rng = _videos()
    good = {k: y + rng.normal(0, 0.05, y.shape) for k, (y, _) in labels.items()}
    bad = {k: y + rng.normal(0, 0.5, y.shape) for k, (y, _) in labels.items()}
    iv = bootstrap_videos([good], [bad], labels, n_boot=300, seed=1)
    assert iv.low > 0 and iv.low <= iv.mean <= iv.high and iv.method == "bootstrap over videos"
    assert bootstrap_videos([good], [bad], labels, n_boot=300, seed=1) == iv
    assert bootstrap_videos([bad], [good], labels, n_boot=300, seed=1).high < 0
    with pytest.raises(ValueError, match="same number"):
        bootstrap_videos([good, good], [bad], labels)


def test_bootstrap_matches_frame_level_resampling():
    """The per-video-sums bootstrap equals concatenating the drawn videos' frames and scoring
    them, seed by seed, with the metric's own ccc (same draws), invalid frames excluded."""
    labels, rng = _videos(n=5, frames=30, seed=3)
    labels["v0"][1][:7] = False                      # -5 frames are not scored
    seeds_a = [{k: y + rng.normal(0, 0.2, y.shape) for k, (y, _) in labels.items()} for _ in range(2)]
    seeds_b = [{k: y + rng.normal(0, 0.4, y.shape) for k, (y, _) in labels.items()} for _ in range(2)]
    names = sorted(labels)

    def mean_ccc(pred, chosen):
        p = np.concatenate([pred[n][labels[n][1]] for n in chosen])
        y = np.concatenate([labels[n][0][labels[n][1]] for n in chosen])
        return (ccc(p[:, 0], y[:, 0]) + ccc(p[:, 1], y[:, 1])) / 2

    def stat(chosen):
        return np.mean([mean_ccc(a, chosen) - mean_ccc(b, chosen) for a, b in zip(seeds_a, seeds_b)])

    draws = np.random.default_rng(7).integers(len(names), size=(50, len(names)))
    naive = [stat([names[i] for i in d]) for d in draws]
    iv = bootstrap_videos(seeds_a, seeds_b, labels, n_boot=50, seed=7)
    assert iv.mean == pytest.approx(stat(names), abs=1e-12)
    assert iv.low == pytest.approx(np.quantile(naive, 0.025), abs=1e-12)
    assert iv.high == pytest.approx(np.quantile(naive, 0.975), abs=1e-12)
