"""Tracking logic (which face is the annotated person; keyframes and gaps).

These use hand-made Detections in place of MTCNN's output, to pin down the choice rules;
tests/stage1/test_faces.py runs the real MTCNN on real videos.
"""

import numpy as np

from pipeline.stage1.detect import EMPTY, Detections, PersonTrack, iou, track


def dets(*boxes, prob=0.99):
    b = np.array(boxes, np.float32).reshape(-1, 4)
    marks = np.stack([np.tile([(x0 + x1) / 2, (y0 + y1) / 2], (5, 1)) for x0, y0, x1, y1 in b]) if len(b) else np.zeros((0, 5, 2))
    return Detections(b, np.full(len(b), prob, np.float32), marks.astype(np.float32))


LEFT, RIGHT, BIG = (10, 10, 60, 70), (200, 10, 250, 70), (100, 0, 220, 150)


def test_iou():
    assert iou(np.array(LEFT), np.array(LEFT)) == 1.0
    assert iou(np.array(LEFT), np.array(RIGHT)) == 0.0


def test_single_person_takes_the_largest_then_follows_it():
    t = PersonTrack(None, 320, 0.9)
    assert np.array_equal(t.choose(dets(LEFT, BIG)).box, BIG)
    moved = (105, 2, 225, 152)
    assert np.array_equal(t.choose(dets(LEFT, moved)).box, moved)  # continuity beats size
    assert t.choose(dets(LEFT, prob=0.5)) is None                    # below min_prob


def test_left_and_right_people():
    left, right = PersonTrack("left", 320, 0.9), PersonTrack("right", 320, 0.9)
    both = dets(RIGHT, LEFT)
    assert np.array_equal(left.choose(both).box, LEFT)
    assert np.array_equal(right.choose(both).box, RIGHT)
    lone = PersonTrack("right", 320, 0.9)
    assert lone.choose(dets(LEFT)) is None   # a lone face on the other half is not this person


class Scripted:
    """Returns scripted detections by frame value (each frame's pixels hold its index)."""

    def __init__(self, script):
        self.script, self.calls = script, []

    def __call__(self, frames):
        idx = [int(f[0, 0, 0]) for f in frames]
        self.calls += idx
        return [self.script.get(i, EMPTY) for i in idx]


def frames(n):
    return np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 3), np.uint8)


def run(script, n, every, batch=4):
    det = Scripted(script)
    stream = (frames(n)[i:i + batch] for i in range(0, n, batch))
    out = [f for _, faces in track(stream, det, [PersonTrack(None, 320, 0.9)], every) for f in faces]
    return out, det.calls


def test_keyframes_interpolate_between_matching_faces():
    a, b = (0, 0, 100, 100), (10, 0, 110, 100)
    script = {0: dets(a), 4: dets(b), 8: dets(b), 9: dets(b)}
    out, calls = run(script, 10, every=4)
    assert calls == [0, 4, 8, 9]                    # the tail after the last keyframe is detected
    assert len(out) == 10 and all(f[0] is not None for f in out)
    assert not out[2][0].detected and out[4][0].detected
    np.testing.assert_allclose(out[2][0].box, [5, 0, 105, 100])   # halfway between 0 and 4


def test_a_face_that_vanishes_between_keyframes_is_looked_for_in_every_frame():
    a = (0, 0, 100, 100)
    script = {0: dets(a), 1: dets(a), 4: EMPTY}
    out, calls = run(script, 5, every=4)
    assert sorted(calls) == [0, 1, 2, 3, 4]
    assert [f[0] is not None for f in out] == [True, True, False, False, False]
