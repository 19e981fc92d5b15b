"""pipeline.demo.check on the generated tiny corpus: what its annotation files hold, and that the
labels state what the decoded (H.264) frames show."""

import numpy as np
import pytest

from pipeline.demo import check, face
from pipeline.tasks.au import AUS
from pipeline.tasks.expr import CLASSES

# Lip-shape measures read closed lips: judged on the frames whose lips are not parted.
LIP_SHAPE = ("AU10", "AU12", "AU15", "AU23", "AU24")


def auc(on: np.ndarray, off: np.ndarray) -> float:
    """P(a frame with the label shows more of the measure than one without), ties halved."""
    return float((on[:, None] > off[None]).mean() + 0.5 * (on[:, None] == off[None]).mean())


@pytest.fixture(scope="module")
def measured(tiny_corpus):
    return check.face_measures(tiny_corpus, step=2)


def test_region_shift_finds_a_known_shift():
    rng = np.random.default_rng(0)
    a = np.cumsum(np.cumsum(rng.standard_normal((80, 80)), 0), 1)   # a smooth texture
    b = np.roll(a, (3, -2), axis=(0, 1))                             # content moved 2 left, 3 down
    dx, dy = check.region_shift(a, b, (30, 30, 50, 50))
    assert (dx, dy) == pytest.approx((-2, 3), abs=0.1)
    assert check.region_shift(a, a, (30, 30, 50, 50)) == pytest.approx((0, 0), abs=0.1)
    assert check.region_shift(a, np.roll(a, 9, axis=0), (30, 30, 50, 50), search=(2, 10))[1] == pytest.approx(9, abs=0.1)


def test_label_summary_of_the_tiny_corpus(tiny_corpus):
    s = check.label_summary(tiny_corpus)
    assert set(s["tasks"]) == {"va", "expr", "au"}
    assert [s["tasks"]["va"][x]["entries"] for x in ("Train_Set", "Validation_Set", "Test_Set")] == [2, 1, 1]
    assert [s["tasks"]["expr"][x]["entries"] for x in ("Train_Set", "Validation_Set", "Test_Set")] == [1, 2, 1]
    assert [s["tasks"]["au"][x]["entries"] for x in ("Train_Set", "Validation_Set", "Test_Set")] == [1, 1, 1]
    assert s["not_labelled"] == {"va": [], "expr": [], "au": ["demo_00_right"]}
    assert s["split_differs"] == {"demo_00_right": {"va": "Train_Set", "expr": "Validation_Set"}}
    for task in ("va", "expr", "au"):
        assert sum(r["invalid_frames"] for r in s["tasks"][task].values()) > 0
    frames = sum(sum(r["class_frames"].values()) for r in s["tasks"]["expr"].values())
    assert frames == sum(r["frames"] - r["invalid_frames"] for r in s["tasks"]["expr"].values())
    shown = {c for r in s["tasks"]["expr"].values() for c, n in r["class_frames"].items() if n}
    assert shown == set(CLASSES)
    positive = {a for r in s["tasks"]["au"].values() for a, n in r["au_positive_frames"].items() if n}
    assert len(positive) >= 9   # three of the four people, six of the eight classes: most AUs


def test_au_labels_are_what_the_frames_show(measured):
    """For every AU: frames where it is labelled 1 show more of it than frames labelled 0 (same
    corpus, decoded), by the AU's own crop measure; lip shapes among frames with closed lips.
    Labels: the manifest's AU stretches, for every person (the AU files hold the same where a
    person has one: test_generate), so the people without AU labels count too."""
    m = np.concatenate([r["measures"] for r in measured])
    labels = np.concatenate([r["shown"] for r in measured])
    files = [r for r in measured if r["au"] is not None]
    assert files and all(((r["au"] == r["shown"]) | (r["au"] == -1)).all() for r in files)
    closed = labels[:, AUS.index("AU25")] == 0
    tested = []
    for k, au in enumerate(AUS):
        frames = closed if au in LIP_SHAPE else np.ones(len(m), bool)
        on, off = m[frames & (labels[:, k] == 1), k], m[frames & (labels[:, k] == 0), k]
        if len(on) < 5:
            continue
        tested.append(au)
        assert auc(on, off) > 0.85, (au, auc(on, off), on.mean(), off.mean())
    assert len(tested) >= 11, tested   # the tiny corpus shows (nearly) every AU, every class once


def test_expressions_are_what_the_frames_show(measured):
    """Each class's frames move the face the way its expression does, against the neutral face:
    a smile for Happiness (AU6 + AU12), corners down for Sadness, a frown and tight lids for
    Anger, brows up and the jaw dropped for Surprise, ..."""
    rows = [r for r in measured if r["expr"] is not None]
    m = np.concatenate([r["measures"] for r in rows])
    cls = np.concatenate([r["expr"] for r in rows])
    mean = {c: m[cls == k].mean(0) for k, c in enumerate(CLASSES) if (cls == k).sum() >= 5}
    assert len(mean) == len(CLASSES)
    at = {a: k for k, a in enumerate(AUS)}
    neutral = mean["Neutral"]
    expected = {"Happiness": ("AU6", "AU12"), "Sadness": ("AU15", "AU1"), "Anger": ("AU4", "AU7", "AU23"),
                "Surprise": ("AU1", "AU2", "AU26"), "Fear": ("AU1", "AU2", "AU4"), "Disgust": ("AU10", "AU4"),
                "Other": ("AU2", "AU24")}
    for c, aus in expected.items():
        for a in aus:
            assert mean[c][at[a]] > neutral[at[a]] + 1.0, (c, a, mean[c][at[a]], neutral[at[a]])
    assert mean["Happiness"][at["AU12"]] > 2.0 and mean["Sadness"][at["AU12"]] < -0.5  # corners up / down
    # the neutral face moves nothing much (its mouth moves with speech)
    brows_eyes = [at[a] for a in ("AU1", "AU2", "AU6", "AU7", "AU10", "AU12", "AU15")]
    assert np.abs(neutral[brows_eyes]).max() < 1.0


def test_aligned_face_of_a_decoded_frame_is_the_face(tiny_corpus):
    """check.aligned_face, with the look the manifest records, puts a decoded frame's face back
    where the photo has it (and a wrong look does not)."""
    import json
    from dataclasses import replace

    from pipeline.media import iter_frames

    m = json.loads((tiny_corpus / "corpus.json").read_text())
    v = next(v for v in m["videos"] if len(v["persons"]) == 1)
    p = v["persons"][0]
    i = next(i for i in range(v["n_frames"]) if not any(a <= i < b for a, b in p["face_hidden"]))
    frame = next(iter(iter_frames(tiny_corpus / v["video"], v["width"], v["height"], batch=i + 1)))[i]
    look = check.look_of(p)
    arousal = float(check.read_annotation(tiny_corpus / p["annotation"])[i, 1])
    ref = check._grey(face.expression_patch())[60:170, 40:130].ravel()

    def corr(app):
        img = check.aligned_face(frame, app, face.face_centre(app, i / v["fps"], arousal))
        return np.corrcoef(check._grey(img)[60:170, 40:130].ravel(), ref)[0, 1]

    assert corr(look) > 0.9
    assert corr(replace(look, mirror=not look.mirror)) < corr(look) - 0.1
