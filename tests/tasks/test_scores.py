"""Each task's metrics: hand-worked values, scikit-learn's f1_score (expr: macro over the 8
classes; au: the mean of the 12 binary F1s at 0.5), additive per-video sums (the sums of a
split's videos give the split's metric exactly), invalid frames in no metric, au's tuned
thresholds, activations, post-processing and submission rows."""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from pipeline.stage2.protocol import score as protocol_score
from pipeline.stats import Part, bootstrap_videos
from pipeline.tasks import TASKS, build_task
from pipeline.tasks.au import AUS, GRID
from pipeline.tasks.expr import CLASSES
from pipeline.tasks.va import VAOptions

from .test_annotations import AFFWILD2, labels_of


def outputs_of(name: str, labels: np.ndarray, seed: int = 1) -> np.ndarray:
    """Activated outputs (n, width) loosely following the labels: better than chance, not exact."""
    task = TASKS.get(name)()
    rng = np.random.default_rng(seed)
    if name == "va":
        return (0.6 * labels + rng.normal(0, 0.3, labels.shape)).astype(np.float32)
    if name == "expr":
        logits = rng.normal(size=(len(labels), 8))
        logits[np.arange(len(labels)), labels[:, 0].astype(int).clip(0)] += 1.0
        return task.activate(logits)
    return task.activate(2.0 * (labels - 0.5) + rng.normal(0, 1.2, labels.shape))


def valid_labels(name: str, n: int = 300, seed: int = 0) -> np.ndarray:
    y = labels_of(name, n, seed)
    return y[TASKS.get(name)().valid(y)].astype(np.float32)


# ---------------------------------------------------------------- hand-worked and sklearn

def test_va_by_hand():
    # valence: CCC 0.4 (tests/tasks/test_losses.py works it out); arousal equal to the labels: 1
    task = TASKS.get("va")()
    p = np.array([[0.1, 0.3], [0.2, -0.2], [0.3, 0.9], [0.4, 0.0]])
    y = np.array([[0.2, 0.3], [0.4, -0.2], [0.6, 0.9], [0.8, 0.0]])
    s = task.score(p, y)
    assert s["ccc_valence"] == pytest.approx(0.4) and s["ccc_arousal"] == pytest.approx(1.0)
    assert s["ccc_mean"] == pytest.approx(0.7) and s["frames"] == 4
    assert s["pcc_valence"] == pytest.approx(1.0) and s["rmse_arousal"] == pytest.approx(0.0)
    assert s["rmse_valence"] == pytest.approx(np.sqrt((0.01 + 0.04 + 0.09 + 0.16) / 4))
    assert task.from_sums_all(task.sums(p, y))["ccc_mean"] == pytest.approx(0.7)
    with pytest.raises(ValueError, match="no valid labels"):
        task.score(p[:1], y[:1])


def test_expr_by_hand():
    # true 0 0 1 1 2 4, predicted 0 1 1 1 2 0:
    # class 0: TP 1, FP 1 (the 4), FN 1 -> F1 2/4 = 0.5; class 1: TP 2, FP 1 -> 4/5 = 0.8;
    # class 2: 1; class 4: TP 0, FN 1 -> 0; classes 3, 5, 6, 7: neither labelled nor predicted -> 0.
    # macro F1 over the 8 classes = (0.5 + 0.8 + 1) / 8 = 0.2875; accuracy 4 / 6
    task = TASKS.get("expr")()
    y = np.array([[0], [0], [1], [1], [2], [4]], np.float32)
    p = np.eye(8)[[0, 1, 1, 1, 2, 0]]
    s = task.score(p, y)
    assert s["f1"] == pytest.approx(0.2875) and s["accuracy"] == pytest.approx(4 / 6) and s["frames"] == 6


def test_au_by_hand():
    # AU1: true 1 1 0 0, decided 1 0 1 0 -> TP 1, FP 1, FN 1 -> 0.5; AU2: true 1 0 0 0, decided
    # the same -> 1; the other 10 AUs never present nor decided -> 0. Mean: 1.5 / 12 = 0.125.
    # A probability of exactly 0.5 is decided present.
    task = TASKS.get("au")()
    y = np.zeros((4, 12), np.float32)
    y[:2, 0], y[0, 1] = 1, 1
    p = np.full((4, 12), 0.2)
    p[[0, 2], 0] = [0.9, 0.5]
    p[0, 1] = 0.7
    s = task.score(p, y)
    assert s["f1"] == pytest.approx(0.125) and s["f1_AU1"] == pytest.approx(0.5) and s["f1_AU2"] == 1.0
    assert s["f1_AU26"] == 0.0 and s["frames"] == 4


@pytest.mark.parametrize("seed", range(4))
def test_expr_is_sklearns_macro_f1_over_the_8_classes(seed):
    task = TASKS.get("expr")()
    rng = np.random.default_rng(seed)
    y = rng.choice([0, 1, 4, 5, 6], size=(200, 1)).astype(np.float32)   # some classes never labelled
    p = outputs_of("expr", y, seed)
    decided = p.argmax(1)
    want = f1_score(y[:, 0], decided, average="macro", labels=range(8), zero_division=0)
    assert task.score(p, y)["f1"] == pytest.approx(want, abs=1e-12)
    assert task.score(p, y)["accuracy"] == pytest.approx((decided == y[:, 0]).mean(), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_au_is_the_mean_of_sklearns_binary_f1s_at_one_half(seed):
    task = TASKS.get("au")()
    rng = np.random.default_rng(seed)
    y = (rng.random((200, 12)) < 0.25).astype(np.float32)
    y[:, 11] = 0                                         # an AU never present
    p = outputs_of("au", y, seed)
    per_au = [f1_score(y[:, k], p[:, k] >= 0.5, zero_division=0) for k in range(12)]
    s = task.score(p, y)
    assert s["f1"] == pytest.approx(np.mean(per_au), abs=1e-12)
    for k, name in enumerate(AUS):
        assert s[f"f1_{name}"] == pytest.approx(per_au[k], abs=1e-12)


# ---------------------------------------------------------------- sums over parts (bootstrap)

@pytest.mark.parametrize("name", AFFWILD2)
def test_video_sums_add_up_to_the_split_metric_exactly(name):
    task = TASKS.get(name)()
    y = valid_labels(name)
    p = outputs_of(name, y)
    cuts = [0, 40, 41, 170, len(y)]                      # videos of other lengths, one of a single frame
    parts = [task.sums(p[a:b], y[a:b]) for a, b in zip(cuts, cuts[1:])]
    whole = task.score(p, y)
    summed = np.sum(parts, axis=0)
    assert float(task.from_sums(summed)) == pytest.approx(whole[task.metric], abs=1e-12)
    for metric in task.metrics:
        assert task.from_sums_all(summed)[metric] == pytest.approx(whole[metric], abs=1e-12)
    if name != "va":                                     # counts: exactly equal, not only close
        np.testing.assert_array_equal(summed, task.sums(p, y))
    # from_sums is batched over leading axes: (draws, *S) -> (draws,)
    batched = task.from_sums(np.stack([summed, parts[2], parts[0]]))
    assert batched.shape == (3,) and batched[0] == pytest.approx(whole[task.metric], abs=1e-12)
    assert batched[2] == pytest.approx(task.score(p[:40], y[:40])[task.metric], abs=1e-12)


@pytest.mark.parametrize("name", AFFWILD2)
def test_from_sums_of_nothing_is_undefined(name):
    task = TASKS.get(name)()
    y = valid_labels(name, 20)
    empty = np.zeros_like(task.sums(outputs_of(name, y), y), dtype=np.float64)
    assert np.isnan(task.from_sums(empty))


# ---------------------------------------------------------------- invalid frames in no metric

@pytest.mark.parametrize("name", AFFWILD2)
def test_invalid_frames_are_in_no_metric(name):
    """Through the protocol's scorer and the bootstrap: predictions on invalid frames (the task's
    marker) are never read, the metric is the one of the valid frames alone."""
    task = TASKS.get(name)()
    videos = {f"v{i}": labels_of(name, 60, seed=i).astype(np.float32) for i in range(4)}
    videos["v1"][20:50] = task.invalid
    labels = {k: (y, task.valid(y)) for k, y in videos.items()}
    preds = {k: outputs_of(name, np.where(y == task.invalid, 0, y), seed=7) for k, y in videos.items()}
    garbage = {k: p.copy() for k, p in preds.items()}
    for k, (_, valid) in labels.items():   # va: far off; expr, au: the outputs reversed (still probabilities)
        garbage[k][~valid] = 1e3 if name == "va" else np.flip(garbage[k][~valid], axis=1)
    p_valid = np.concatenate([preds[k][v] for k, (_, v) in labels.items()])
    y_valid = np.concatenate([y[v] for y, v in labels.values()])
    want = task.score(p_valid, y_valid)[task.metric]
    assert protocol_score(preds, labels, task)[task.metric] == pytest.approx(want, abs=1e-12)
    assert protocol_score(garbage, labels, task)[task.metric] == pytest.approx(want, abs=1e-12)
    clean = bootstrap_videos([Part(task, [preds], [preds], labels)], n_boot=50)
    dirty = bootstrap_videos([Part(task, [garbage], [preds], labels)], n_boot=50)
    assert clean.mean == dirty.mean == 0.0 and (dirty.low, dirty.high) == (0.0, 0.0)


# ---------------------------------------------------------------- au thresholds

def test_au_tune_picks_each_aus_best_threshold_and_score_at_uses_them():
    task = TASKS.get("au")()
    y = np.zeros((8, 12), np.float32)
    y[:4] = 1
    p = np.full((8, 12), 0.4)
    p[:4, 0], p[4:, 0] = 0.35, 0.25          # AU1: any threshold in (0.25, 0.35] separates: the first, 0.3
    p[:4, 1], p[4:, 1] = 0.8, 0.1            # AU2: the first above 0.1: 0.15 (0.1 itself lets the negatives in)
    p[:4, 2], p[4:, 2] = 0.1, 0.9            # AU4 backwards: no threshold beats predicting every frame
    thresholds = task.tune(p, y)
    assert thresholds[0] == pytest.approx(0.3) and thresholds[1] == pytest.approx(0.15)
    assert thresholds[2] == pytest.approx(GRID[0])        # ties keep the first: everything present
    assert set(np.round(thresholds, 2)) <= set(GRID)
    # AUs 3-12 at 0.4 for all: every grid value <= 0.4 gives F1 2*4/(2*4+4) = 2/3, the first kept
    assert (thresholds[3:] == GRID[0]).all()
    tuned = task.score_at(p, y, thresholds)
    # AU1, AU2: 1; AU4 all present: 2/3; the rest 2/3
    assert tuned == pytest.approx((2 + 10 * 2 / 3) / 12)
    assert task.score_at(p, y, np.full(12, 0.5)) == pytest.approx(task.score(p, y)["f1"])
    assert tuned > task.score(p, y)["f1"]


# ---------------------------------------------------------------- outputs and submission rows

def test_activations():
    expr, au, va = (TASKS.get(n)() for n in ("expr", "au", "va"))
    logits = np.array([[0.0] * 8, [1000.0] + [0.0] * 7])
    probs = expr.activate(logits)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-6)
    np.testing.assert_allclose(probs[0], 1 / 8) and np.testing.assert_allclose(probs[1, 0], 1)
    np.testing.assert_allclose(au.activate(np.array([[0.0, np.log(3)]])), [[0.5, 0.75]], rtol=1e-6)
    x = np.array([[0.3, -2.0]])
    np.testing.assert_array_equal(va.activate(x), x.astype(np.float32))


def test_va_postprocess_clip_and_smoothing_by_hand():
    x = np.array([[0.0, 0.0], [0.0, 1.5], [3.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    plain = build_task("va", VAOptions(clip=False))
    np.testing.assert_array_equal(plain.postprocess(x), x.astype(np.float32))
    clipped = build_task("va").postprocess(x)
    assert clipped[2, 0] == 1.0 and clipped[1, 1] == 1.0
    # width 3 (edges repeated): valence 0 0 3 0 0 -> 0 1 1 1 0; width 2 on arousal 0 1.5 0 0 0 ->
    # (x[i-1] + x[i]) / 2 = 0 .75 .75 0 0
    smooth = build_task("va", VAOptions(clip=False, smooth_valence=3, smooth_arousal=2)).postprocess(x)
    np.testing.assert_allclose(smooth, [[0, 0], [1, 0.75], [1, 0.75], [1, 0], [0, 0]])


def test_submission_rows():
    va, expr, au = (TASKS.get(n)() for n in ("va", "expr", "au"))
    assert va.submission_rows(np.array([[0.12345, -0.5], [1, -1]])) == ["0.1235,-0.5000", "1.0000,-1.0000"]
    assert va.submission == ("valence", "arousal")
    assert expr.submission_rows(np.eye(8)[[4, 0, 7]] * 0.9 + 0.01) == ["4", "0", "7"]
    assert expr.submission == CLASSES
    p = np.full((2, 12), 0.2)
    p[0, [3, 6]] = [0.5, 0.99]                             # 0.5 is decided present
    assert au.submission_rows(p) == ["0,0,0,1,0,0,1,0,0,0,0,0", "0,0,0,0,0,0,0,0,0,0,0,0"]
    assert au.submission == AUS


@pytest.mark.parametrize("name", AFFWILD2)
def test_tables_have_one_value_per_frame_and_the_labels(name):
    task = TASKS.get(name)()
    y = labels_of(name, 7).astype(np.float32)
    out = outputs_of(name, np.where(y == task.invalid, 0, y))
    table = task.table(out, y)
    assert all(len(column) == 7 for column in table.values())
    assert [c for c in table if c.startswith("label_")] == {
        "va": ["label_valence", "label_arousal"], "expr": ["label_expression"],
        "au": [f"label_{a.lower()}" for a in AUS]}[name]
    assert set(task.outputs) <= set(table)
    invalid_text = table[next(c for c in table if c.startswith("label_"))][3]
    assert float(invalid_text) == task.invalid                    # row 3 is invalid (labels_of)
    if name == "expr":
        assert table["expression"] == [CLASSES[int(k)] for k in out.argmax(1)]


def test_a_va_frame_is_invalid_when_either_axis_is():
    task = TASKS.get("va")()
    np.testing.assert_array_equal(task.valid(np.array([[-5, 0.2], [0.1, -5], [0.1, 0.2]])), [False, False, True])
