"""The visual cues and the real face: MTCNN finds it, the labels move the right features."""

import numpy as np
import pytest

from pipeline.demo import face

NEUTRAL = face.Appearance(center=(160.0, 120.0), scale=1.0, rotation_deg=0.0, mirror=False,
                          gain=(1.0, 1.0, 1.0), gradient=0.0, motion_phase=0.0)


def render(valence, arousal, look=NEUTRAL, t=0.0):
    frame = np.full((240, 320, 3), 0.5, np.float32)
    face.draw_face(frame, look, valence, arousal, t)
    return frame


def region_change(a, b, centre, half=9):
    """Mean absolute change in a box around a patch point (neutral look: frame = patch + offset)."""
    x, y = (np.asarray(centre) - face.FACE_CENTER + NEUTRAL.center).astype(int)
    return float(np.abs(a - b)[y - half:y + half, x - half:x + half].mean())


def test_valence_moves_the_mouth_not_the_eyes():
    smile, frown = render(1.0, 0.0, t=0.0), render(-1.0, 0.0, t=0.0)
    mouth = region_change(smile, frown, face.LANDMARKS[3])
    eyes = region_change(smile, frown, face.LANDMARKS[0])
    assert mouth > 0.03 and mouth > 5 * eyes


def test_arousal_moves_brows_more_than_mouth():
    # same time and a still head (motion phase chosen so the sway is zero at t = 0)
    calm, excited = render(0.0, -1.0), render(0.0, 1.0)
    dx, dy = face.head_offset(NEUTRAL, 0.0, 1.0)
    assert abs(dx) < 1e-9  # sin(0) = 0: the head is not displaced horizontally at t = 0
    brows = region_change(calm, excited, face.LANDMARKS[0] + [0, -11])
    mouth = region_change(calm, excited, face.LANDMARKS[3])
    assert brows > 0.02 and brows > mouth


def test_head_motion_grows_with_arousal():
    t = np.linspace(0, 3, 50)
    amp = lambda a: np.ptp([face.head_offset(NEUTRAL, x, a)[0] for x in t])  # noqa: E731
    assert amp(1.0) > 3 * amp(-1.0)


def test_occluder_and_box():
    frame = render(0.0, 0.0)
    box = face.face_box(NEUTRAL)
    face.draw_occluder(frame, box, np.array([0.2, 0.9, 0.2], np.float32))
    x0, y0, x1, y1 = box
    assert np.allclose(frame[(y0 + y1) // 2, (x0 + x1) // 2], [0.2, 0.9, 0.2], atol=0.1)


@pytest.mark.slow
def test_mtcnn_finds_the_rendered_face_under_every_variation():
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(keep_all=True, device="cpu")
    rng = np.random.default_rng(7)
    frames = []
    for i in range(12):
        look = face.Appearance.sample(rng, (160.0, 120.0), 0.9)
        frame = face.background(rng, 240, 320)
        face.draw_face(frame, look, rng.uniform(-1, 1), rng.uniform(-1, 1), i / 15)
        frames.append((frame * 255).astype(np.uint8))
    boxes, probs = mtcnn.detect(frames)
    found = [b is not None and max(p) > 0.9 for b, p in zip(boxes, probs)]
    assert sum(found) == len(frames)
    # and an occluded face is not found
    frame = face.background(rng, 240, 320)
    face.draw_face(frame, NEUTRAL, 0.0, 0.0, 0.0)
    face.draw_occluder(frame, face.face_box(NEUTRAL), np.array([0.5, 0.3, 0.3], np.float32))
    b, p = mtcnn.detect((frame * 255).astype(np.uint8))
    assert b is None or max(p) < 0.9
