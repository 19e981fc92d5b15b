"""pipeline.stats: the paired t interval by hand; the bootstrap over videos (`Part`s: one task's
metric, or the sum of several tasks' metrics) against resampling the frames themselves; Holm's
adjustment by hand; the p-values of "within +-margin" against the intervals they stand for; d_z
by hand and its interval against scipy's noncentral t; each video's own metric against scoring
its frames."""

import numpy as np
import pytest
from scipy import stats

from pipeline.stats import (Part, bootstrap_videos, holm, p_beyond_margin_draws, p_beyond_margin_t, paired_effect,
                            paired_t, video_metrics)
from pipeline.tasks import TASKS

VA, EXPR, AU = (TASKS.get(n)() for n in ("va", "expr", "au"))


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


def _va(preds_a, preds_b, labels):
    return [Part(VA, preds_a, preds_b, labels)]


def test_bootstrap_identical_heads_give_zero():
    labels, rng = _videos()
    pred = {k: y + rng.normal(0, 0.2, y.shape) for k, (y, _) in labels.items()}
    iv = bootstrap_videos(_va([pred], [pred], labels), n_boot=200)
    assert (iv.mean, iv.low, iv.high) == (0.0, 0.0, 0.0)


def test_bootstrap_detects_a_better_head_and_is_seeded():
    labels, rng = _videos()
    good = {k: y + rng.normal(0, 0.05, y.shape) for k, (y, _) in labels.items()}
    bad = {k: y + rng.normal(0, 0.5, y.shape) for k, (y, _) in labels.items()}
    iv = bootstrap_videos(_va([good], [bad], labels), n_boot=300, seed=1)
    assert iv.low > 0 and iv.low <= iv.mean <= iv.high and iv.method == "bootstrap over videos" and iv.n == 8
    assert bootstrap_videos(_va([good], [bad], labels), n_boot=300, seed=1) == iv
    assert bootstrap_videos(_va([bad], [good], labels), n_boot=300, seed=1).high < 0
    with pytest.raises(ValueError, match="same number"):
        bootstrap_videos(_va([good, good], [bad], labels))
    with pytest.raises(ValueError, match="same number"):
        bootstrap_videos(_va([], [], labels))
    with pytest.raises(ValueError, match="same number"):
        bootstrap_videos([])


def _metric(task, pred, labels, chosen):
    """The task's main metric over the chosen videos' valid frames concatenated (NaN: none)."""
    chosen = [n for n in chosen if n in labels]
    if not chosen:
        return np.nan
    p = np.concatenate([pred[n][labels[n][1]] for n in chosen])
    y = np.concatenate([labels[n][0][labels[n][1]] for n in chosen])
    return task.score(p, y)[task.metric]


def _frame_level(parts, n_boot, seed):
    """The bootstrap done the slow way: the same draws of videos, every task scored on the frames
    of the drawn videos it labels, the tasks' metrics summed, mean over seeds of A - B."""
    names = sorted({n for p in parts for n in p.labels})

    def stat(chosen):
        seeds = len(parts[0].preds_a)
        return np.mean([sum(_metric(p.task, p.preds_a[s], p.labels, chosen) - _metric(p.task, p.preds_b[s], p.labels, chosen)
                            for p in parts) for s in range(seeds)])

    draws = np.random.default_rng(seed).integers(len(names), size=(n_boot, len(names)))
    naive = np.array([stat([names[i] for i in d]) for d in draws])
    return stat(names), naive[np.isfinite(naive)]


def test_one_task_matches_frame_level_resampling():
    """The per-video-sums bootstrap equals concatenating the drawn videos' frames and scoring
    them, seed by seed, with the task's own score (same draws), invalid frames excluded."""
    labels, rng = _videos(n=5, frames=30, seed=3)
    labels["v0"][1][:7] = False                      # -5 frames are not scored
    seeds_a = [{k: y + rng.normal(0, 0.2, y.shape) for k, (y, _) in labels.items()} for _ in range(2)]
    seeds_b = [{k: y + rng.normal(0, 0.4, y.shape) for k, (y, _) in labels.items()} for _ in range(2)]
    for k in seeds_a[0]:
        seeds_a[0][k][~labels[k][1]] = 40.0          # garbage where there is no label
    parts = _va(seeds_a, seeds_b, labels)
    estimate, naive = _frame_level(parts, 50, 7)
    iv = bootstrap_videos(parts, n_boot=50, seed=7)
    assert iv.mean == pytest.approx(estimate, abs=1e-12)
    assert iv.low == pytest.approx(np.quantile(naive, 0.025), abs=1e-12)
    assert iv.high == pytest.approx(np.quantile(naive, 0.975), abs=1e-12)


def _task_videos(task, names, frames, rng):
    labels, a, b = {}, {}, {}
    for n in names:
        if task is VA:
            y = rng.uniform(-1, 1, (frames, 2)).astype(np.float32)
            a[n], b[n] = y + rng.normal(0, 0.3, y.shape), y + rng.normal(0, 0.6, y.shape)
        elif task is EXPR:
            y = rng.integers(0, 8, (frames, 1)).astype(np.float32)
            a[n] = EXPR.activate(rng.normal(size=(frames, 8)) + 2 * np.eye(8)[y[:, 0].astype(int)])
            b[n] = EXPR.activate(rng.normal(size=(frames, 8)))
        else:
            y = (rng.random((frames, 12)) < 0.3).astype(np.float32)
            a[n], b[n] = AU.activate(3 * (y - 0.5) + rng.normal(size=y.shape)), AU.activate(rng.normal(size=y.shape))
        valid = np.ones(frames, bool)
        valid[:3] = False
        y[:3] = task.invalid
        labels[n] = (y, valid)
    return labels, a, b


def test_several_tasks_sum_their_metrics_each_over_the_videos_it_labels():
    """va labels v0-v3, expr v2-v5, au v5 and v6 only: a draw scores each task on the drawn
    videos it labels; draws holding no video of a task are undefined and skipped."""
    rng = np.random.default_rng(11)
    videos = {VA: ["v0", "v1", "v2", "v3"], EXPR: ["v2", "v3", "v4", "v5"], AU: ["v5", "v6"]}
    parts = []
    for task, names in videos.items():
        labels, a, b = _task_videos(task, names, 25, rng)
        parts.append(Part(task, [a], [b], labels))
    estimate, naive = _frame_level(parts, 120, 3)
    assert 0 < len(naive) < 120                       # some draws hold no au video: skipped
    iv = bootstrap_videos(parts, n_boot=120, seed=3)
    assert iv.n == 7
    assert iv.mean == pytest.approx(estimate, abs=1e-12)
    assert iv.low == pytest.approx(np.quantile(naive, 0.025), abs=1e-12)
    assert iv.high == pytest.approx(np.quantile(naive, 0.975), abs=1e-12)
    # the estimate is the sum of the tasks' own differences on all their videos
    one_by_one = sum(bootstrap_videos([p], n_boot=100).mean for p in parts)
    assert iv.mean == pytest.approx(one_by_one, abs=1e-12)


def test_no_defined_draw_is_an_error():
    labels = {"v0": (np.zeros((5, 2), np.float32), np.ones(5, bool))}   # constant labels, constant preds
    preds = {"v0": np.zeros((5, 2), np.float32)}
    with pytest.raises(ValueError, match="no bootstrap resample of the 1 videos has a defined metric"):
        bootstrap_videos(_va([preds], [preds], labels), n_boot=20)


def test_bootstrap_exposes_its_finite_draws():
    labels, rng = _videos()
    good = {k: y + rng.normal(0, 0.05, y.shape) for k, (y, _) in labels.items()}
    bad = {k: y + rng.normal(0, 0.5, y.shape) for k, (y, _) in labels.items()}
    iv = bootstrap_videos(_va([good], [bad], labels), n_boot=300, seed=1)
    assert iv.draws.shape == (300,) and np.isfinite(iv.draws).all()
    assert (iv.low, iv.high) == tuple(np.quantile(iv.draws, [0.025, 0.975]))


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04 -> running max 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-12)
    assert holm([0.2]) == [0.2] and holm([]) == []
    assert holm([0.5, 0.6, 0.01]) == pytest.approx([1.0, 1.0, 0.03])    # capped at 1


def test_p_of_a_t_interval_by_hand_and_exactly_the_margin_rule():
    # [0.005159, 0.054841] (test_paired_t_hand_worked), margin 0.01: t = 0.02 / (0.01 / sqrt 3) = 3.4641
    p = p_beyond_margin_t(0.005159, 0.054841, 3, 0.01, 0.95)
    assert p == pytest.approx(2 * stats.t.sf(3.4641016, 2), rel=1e-4)
    assert p_beyond_margin_t(0.02, 0.02, 3, 0.01, 0.95) == 0.0               # no spread, beyond the margin
    assert p_beyond_margin_t(0.0, 0.0, 3, 0.01, 0.95) == 1.0
    rng = np.random.default_rng(0)
    for _ in range(300):
        n, c = int(rng.integers(2, 9)), float(rng.choice([0.8, 0.9, 0.95, 0.99]))
        iv = paired_t(rng.normal(rng.normal(0, 0.03), 0.02, n), c)
        m = float(rng.uniform(0, 0.03))
        assert (p_beyond_margin_t(iv.low, iv.high, n, m, c) < 1 - c) == (iv.low > m or iv.high < -m)


def test_p_of_bootstrap_draws_is_exactly_the_percentile_rule():
    rng = np.random.default_rng(1)
    for _ in range(300):
        draws = rng.normal(rng.normal(0, 0.03), 0.02, int(rng.integers(5, 400)))
        if rng.random() < 0.3:
            draws = np.round(draws, 2)                                      # ties
        c, m = float(rng.choice([0.8, 0.9, 0.95, 0.99])), float(rng.uniform(0, 0.03))
        low, high = np.quantile(draws, [(1 - c) / 2, (1 + c) / 2])
        p = p_beyond_margin_draws(draws, m)
        assert (p < 1 - c) == (low > m or high < -m)
        # within one draw of the plain tail fractions
        plain = min(1, 2 * np.mean(draws <= m), 2 * np.mean(draws >= -m))
        assert abs(p - plain) <= 2 / (len(draws) - 1) + 1e-12
    assert p_beyond_margin_draws(np.full(10, 0.05), 0.01) == 0.0        # every draw beyond the margin
    assert p_beyond_margin_draws(np.full(10, 0.005), 0.01) == 1.0


def test_effect_size_by_hand_and_its_interval_against_the_noncentral_t():
    # differences 0.02, 0.04, 0.03: mean 0.03, sd 0.01 -> d_z = 3; t_obs = 3 sqrt(3)
    e = paired_effect([0.02, 0.04, 0.03], 0.95)
    assert e.mean == pytest.approx(3.0) and e.n == 3 and e.low < 3 < e.high
    t_obs = 3 * np.sqrt(3)
    assert stats.nct.sf(t_obs, 2, e.low * np.sqrt(3)) == pytest.approx(0.025, abs=1e-9)
    assert stats.nct.cdf(t_obs, 2, e.high * np.sqrt(3)) == pytest.approx(0.025, abs=1e-9)
    # two differences (one degree of freedom) and a negative effect: the same equations
    e = paired_effect([-0.05, -0.01], 0.9)
    t_obs = e.mean * np.sqrt(2)
    assert e.mean == pytest.approx(-0.03 / np.std([-0.05, -0.01], ddof=1))
    assert stats.nct.sf(t_obs, 1, e.low * np.sqrt(2)) == pytest.approx(0.05, abs=1e-9)
    assert stats.nct.cdf(t_obs, 1, e.high * np.sqrt(2)) == pytest.approx(0.05, abs=1e-9)
    # many differences: close to the large-sample interval d +- z sqrt(1/n + d^2/(2n))
    d = np.random.default_rng(2).normal(0.5, 1, 400)
    e = paired_effect(d, 0.95)
    se = np.sqrt(1 / 400 + e.mean ** 2 / 800)
    assert e.low == pytest.approx(e.mean - 1.96 * se, abs=0.01)
    assert e.high == pytest.approx(e.mean + 1.96 * se, abs=0.01)
    assert paired_effect([0.1], 0.95) is None and paired_effect([0.02, 0.02, 0.02], 0.95) is None


def test_each_video_metric_is_the_task_on_its_valid_frames():
    labels, rng = _videos(n=4, frames=30, seed=5)
    labels["v1"][1][:10] = False
    pred = {k: y + rng.normal(0, 0.3, y.shape) for k, (y, _) in labels.items()}
    got = video_metrics(VA, pred, labels, ["v0", "v1", "v2", "v3", "absent"])
    for i, n in enumerate(["v0", "v1", "v2", "v3"]):
        y, valid = labels[n]
        assert got[i] == pytest.approx(VA.score(pred[n][valid], y[valid])["ccc_mean"], abs=1e-9)
    assert np.isnan(got[4])                                              # not labelled for the task
