"""Expression episodes -> valence/arousal, AU intensities and labels (pipeline.demo.expression)."""

import numpy as np
import pytest

from pipeline.demo import expression as ex
from pipeline.tasks.au import AUS
from pipeline.tasks.expr import CLASSES

FPS = 15.0
C = ex.CLASS_INDEX
A = ex.AU_INDEX


def test_every_class_has_a_place_and_a_face():
    assert set(ex.CIRCUMPLEX) == set(ex.PROFILES) == set(CLASSES)
    assert ex.PROFILES["Neutral"] == {}
    shown = {a for p in ex.PROFILES.values() for a, x in p.items() if x * ex.INTENSITY[0] >= ex.AU_THRESHOLD}
    assert shown == set(AUS)  # every AU is the face of some expression
    # distinct faces: no two classes share the AUs they show at full intensity
    faces = [frozenset(a for a, x in ex.PROFILES[c].items() if x >= ex.AU_THRESHOLD) for c in CLASSES]
    assert len(set(faces)) == len(CLASSES)


def test_circumplex_agrees_with_the_expressions():
    v = {c: ex.CIRCUMPLEX[c][0] for c in CLASSES}
    a = {c: ex.CIRCUMPLEX[c][1] for c in CLASSES}
    assert ex.CIRCUMPLEX["Neutral"] == (0.0, 0.0)
    assert v["Happiness"] > 0.5 and v["Happiness"] == max(v.values())
    assert v["Sadness"] < -0.4 and a["Sadness"] < -0.4
    assert v["Anger"] < -0.4 and a["Anger"] > 0.4
    assert v["Fear"] < -0.3 and a["Fear"] > 0.5
    assert a["Surprise"] > 0.5 and v["Disgust"] < -0.4
    # the FACS prototypes asked for: each AU shown at an episode's typical intensity or more
    for c, aus in {"Happiness": ("AU6", "AU12"), "Sadness": ("AU1", "AU4", "AU15"), "Anger": ("AU4", "AU7", "AU23"),
                   "Surprise": ("AU1", "AU2", "AU26"), "Disgust": ("AU4", "AU10"), "Fear": ("AU1", "AU2", "AU4", "AU25")}.items():
        assert all(ex.PROFILES[c].get(x, 0) * np.mean(ex.INTENSITY) >= ex.AU_THRESHOLD for x in aus), c


def test_dealt_classes_cover_every_class_in_each_run_of_eight():
    rng = np.random.default_rng(0)
    dealt = ex.deal_classes(rng, [4] * 10)
    assert all(len(d) == 4 for d in dealt)
    flat = [c for d in dealt for c in d]
    for start in range(0, 40, 8):
        assert sorted(flat[start:start + 8]) == list(range(8))
    fresh = ex.deal_classes(np.random.default_rng(0), [4, 4, 4, 4, 4, 4], fresh=(1, 3))
    assert sorted(fresh[1] + fresh[2]) == list(range(8)) and sorted(fresh[3] + fresh[4]) == list(range(8))
    assert fresh[0] == dealt[0] and fresh[1] == dealt[2]   # the rest of the first deck was set aside
    odd = ex.deal_classes(np.random.default_rng(1), [3, 5, 2, 7, 4])
    assert all(a != b for d in odd for a, b in zip(d, d[1:]))  # never the same class twice in a row
    assert ex.deal_classes(np.random.default_rng(1), [3, 5, 2, 7, 4]) == odd


def test_episodes_tile_the_video():
    rng = np.random.default_rng(2)
    eps = ex.draw_episodes(rng, 150, (4, 5, 0, 1))
    assert eps[0].start == 0 and eps[-1].stop == 150
    assert all(a.stop == b.start for a, b in zip(eps, eps[1:]))
    floor = ex.EPISODE_MIN_FRACTION * 150 / 4
    assert min(e.stop - e.start for e in eps) >= int(floor)
    assert all(ex.INTENSITY[0] <= e.intensity <= ex.INTENSITY[1] for e in eps)
    assert ex.episodes_per_person(10.0) == 4 and ex.episodes_per_person(4.0) == 2


@pytest.fixture(scope="module")
def long_timelines():
    """Many people, every class several times: (timelines)."""
    rng = np.random.default_rng(11)
    classes = ex.deal_classes(rng, [8] * 12)
    return [ex.timeline(rng, 600, FPS, c) for c in classes]


def core(e, pad=8):
    """Frames of an episode away from its blends."""
    return slice(e.start + pad, e.stop - pad)


def test_valence_arousal_follow_the_episodes(long_timelines):
    means = {c: [] for c in CLASSES}
    for t in long_timelines:
        assert np.abs(t.va).max() < 1
        assert np.abs(np.diff(t.va, axis=0)).max() < 0.15  # smooth at 15 fps, blends included
        for e in t.episodes:
            if e.stop - e.start > 20:
                means[CLASSES[e.cls]].append(t.va[core(e)].mean(0))
    m = {c: np.mean(v, 0) for c, v in means.items()}
    for c in CLASSES:  # each class's frames sit near its place on the circumplex
        target = np.tanh(1.1 * 0.85 * np.asarray(ex.CIRCUMPLEX[c]))
        assert np.abs(m[c] - target).max() < 0.15, (c, m[c], target)
    assert np.abs(m["Neutral"]).max() < 0.1


def test_expr_labels_are_the_episodes(long_timelines):
    for t in long_timelines:
        for e in t.episodes:
            assert (t.expr[e.start:e.stop] == e.cls).all()


def test_aus_show_the_expression_with_independent_noise(long_timelines):
    hits = {c: [] for c in CLASSES}
    outside = 0
    patterns = {c: set() for c in CLASSES}
    for t in long_timelines:
        labels = ex.au_labels(t.aus)
        assert set(np.unique(labels)) <= {0.0, 1.0} and ((t.aus >= 0) & (t.aus <= 1)).all()
        for e in t.episodes:
            seg = labels[core(e)]
            main = [A[a] for a, x in ex.PROFILES[CLASSES[e.cls]].items() if x >= 0.9]
            hits[CLASSES[e.cls]].append(seg[:, main].mean() if main else 1.0)
            rest = [k for k in range(len(AUS)) if ex.PROFILE_MATRIX[e.cls, k] == 0]
            outside += int(seg[:, rest].sum())
            patterns[CLASSES[e.cls]].update(map(tuple, seg.astype(int)))
    # the main AUs of an expression are on through its episodes
    assert all(np.mean(h) > 0.9 for h in hits.values()), {c: np.mean(h) for c, h in hits.items()}
    assert outside > 0                          # AUs the class does not explain (bursts)
    assert all(len(p) > 1 for p in patterns.values())  # not a function of the class
    neutral = [ex.au_labels(t.aus)[core(e)].mean() for t in long_timelines for e in t.episodes if e.cls == C["Neutral"]]
    assert np.mean(neutral) < 0.05


def test_no_burst_fights_the_expression(long_timelines):
    for t in long_timelines:
        labels = ex.au_labels(t.aus)
        for e in t.episodes:
            seg = labels[core(e)]
            if e.cls == C["Happiness"]:
                assert seg[:, A["AU15"]].sum() == 0
            if e.cls == C["Sadness"]:
                assert seg[:, A["AU12"]].sum() == 0
            if e.cls in (C["Surprise"], C["Fear"]):
                assert seg[:, A["AU4" if e.cls == C["Surprise"] else "AU24"]].sum() == 0


def test_speech_parts_the_lips_and_drops_the_jaw():
    aus = np.zeros((6, len(AUS)))
    aus[:, A["AU24"]] = 0.8
    lips = np.array([0.0, 0.3, 0.9, 1.0, 0.9, 0.0])
    jaw = lips * np.array([1.0, 1.0, 1.0, 0.37, 1.0, 1.0])
    out = ex.add_speech(aus, lips, jaw)
    assert out is not aus and (aus[:, A["AU25"]] == 0).all()
    labels = ex.au_labels(out)
    np.testing.assert_array_equal(labels[:, A["AU25"]], [0, 0, 1, 1, 1, 0])
    np.testing.assert_array_equal(labels[:, A["AU26"]], [0, 0, 1, 0, 1, 0])   # open vowels only
    assert (out[:, A["AU25"]] >= out[:, A["AU26"]]).all()
    np.testing.assert_array_equal(out[:, A["AU24"]], 0.8)                     # the rest is kept


def test_runs():
    assert ex.runs(np.array([0, 1, 1, 0, 1], bool)) == [[1, 3], [4, 5]]
    assert ex.runs(np.zeros(3, bool)) == []
