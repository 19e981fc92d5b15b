"""The rendered face: each action unit is a visible deformation of its own region (measured with
pipeline.demo.check's crop measures, which know where the photo's features are but not how an
AU is drawn), the geometry of placing the face, and MTCNN still finding it."""

import numpy as np
import pytest

from pipeline.demo import check, face
from pipeline.tasks.au import AUS

NEUTRAL = face.Appearance(center=(160.0, 120.0), scale=1.0, rotation_deg=0.0, mirror=False,
                          gain=(1.0, 1.0, 1.0), gradient=0.0, motion_phase=0.0)
# The measure each AU must move, at intensity 1, at least this far (px of head patch; AU25: the
# share of the mouth's centre that opens).
OWN = {"AU1": 2.5, "AU2": 2.5, "AU4": 2.0, "AU6": 2.0, "AU7": 1.5, "AU10": 2.5, "AU12": 3.0,
       "AU15": 2.5, "AU23": 1.5, "AU24": 2.5, "AU25": 0.1, "AU26": 5.0}
# A jaw that drops parts the lips (the generator labels AU25 whenever AU26 is shown).
ALSO = {("AU26", "AU25")}
# The lip-shape measures read closed lips: an open mouth (AU25, AU26) is not held against them.
LIP_SHAPE = ("AU10", "AU12", "AU15", "AU23", "AU24")


def alone(name, intensity=1.0):
    aus = np.zeros(len(AUS))
    aus[AUS.index(name)] = intensity
    return aus


def neutral_rgb():
    return face.expression_patch()[..., :3]


@pytest.fixture(scope="module")
def responses():
    """measures[k][j]: measure j of the face showing AU k alone at intensity 1."""
    ref = neutral_rgb()
    return {a: check.au_measures(face.expression_patch(alone(a))[..., :3], ref) for a in AUS}


@pytest.mark.parametrize("au", AUS)
def test_each_au_deforms_its_own_region_and_no_other(au, responses):
    own = responses[au][au]
    assert own >= OWN[au], f"{au} moves its measure by {own:.2f} only"
    for other in AUS:
        if other == au or (au, other) in ALSO or (au in ("AU25", "AU26") and other in LIP_SHAPE):
            continue
        # another AU's measure moves (in its own direction) by at most a third of what its AU does
        assert responses[au][other] < responses[other][other] / 3, (au, other, responses[au][other])
    half = check.au_measures(face.expression_patch(alone(au, 0.5))[..., :3], neutral_rgb())[au]
    assert 0.2 * own < half < 0.8 * own  # the deformation grows with the intensity


def test_neutral_face_is_not_the_photos_smile():
    """The photo smiles with parted lips: the neutral face closes them and lowers the corners,
    so AU12 and AU25 appear only when rendered."""
    photo, ref = face.head_patch()[..., :3], neutral_rgb()
    m = check.au_measures(photo, ref)
    assert m["AU25"] > 0.1 and m["AU12"] > 1.0
    assert face.expression_patch(np.zeros(len(AUS))) is face.expression_patch()  # cached, shared
    assert not face.expression_patch().flags.writeable


def test_expression_leaves_the_outline_and_hair_alone():
    patch = face.expression_patch(np.ones(len(AUS)))
    ref = face.expression_patch()
    np.testing.assert_array_equal(patch[..., 3], ref[..., 3])      # the soft mask does not move
    np.testing.assert_array_equal(patch[:40], ref[:40])            # the hair above the brows
    assert np.abs(patch - ref)[60:170].max() > 0.3


def test_placing_a_face_round_trips():
    rng = np.random.default_rng(3)
    look = face.Appearance.sample(rng, (160.0, 120.0), 0.9)
    look = face.Appearance(**{**look.__dict__, "mirror": True})
    centre = face.face_centre(look, 0.4, 0.3, shift=(5.0, -2.0))
    u, v = rng.uniform(0, 170, 50), rng.uniform(0, 205, 50)
    x, y = face.patch_to_frame(look, centre, u, v)
    u2, v2 = face.frame_to_patch(look, centre, x, y)
    np.testing.assert_allclose(u2, u, atol=1e-6)
    np.testing.assert_allclose(v2, v, atol=1e-6)


def test_aligned_face_recovers_the_rendered_expression():
    """check.aligned_face undoes the placement: the smile measured on a placed, rotated,
    mirrored face is the smile of the patch."""
    rng = np.random.default_rng(5)
    look = face.Appearance.sample(rng, (160.0, 120.0), 0.9)
    frame = np.full((240, 320, 3), 0.4, np.float32)
    patch = face.expression_patch(alone("AU12"))
    face.draw_expression(frame, look, patch, 0.2, 0.7)
    img = check.aligned_face((frame * 255).astype(np.uint8), look, face.face_centre(look, 0.7, 0.2))
    m = check.au_measures(img, neutral_rgb())
    assert m["AU12"] > 0.7 * check.au_measures(patch[..., :3], neutral_rgb())["AU12"]
    assert abs(m["AU1"]) < 1.0 and abs(m["AU26"]) < 1.0


def test_head_motion_grows_with_arousal():
    t = np.linspace(0, 3, 50)
    amp = lambda a: np.ptp([face.head_offset(NEUTRAL, x, a)[0] for x in t])  # noqa: E731
    assert amp(1.0) > 3 * amp(-1.0)


def test_draw_expression_composites_inside_the_mask_only():
    frame = np.full((240, 320, 3), 0.5, np.float32)
    face.draw_expression(frame, NEUTRAL, None, 0.0, 0.0)
    assert np.abs(frame[120, 160] - 0.5).max() > 0.05          # the face is drawn
    assert np.allclose(frame[5, 5], 0.5) and np.allclose(frame[235, 20], 0.5)  # the background is not
    off = np.full((240, 320, 3), 0.5, np.float32)
    face.draw_expression(off, NEUTRAL, None, 0.0, 0.0, shift=(1000.0, 0.0))
    assert np.allclose(off, 0.5)


def test_draw_face_shows_valence_and_arousal():
    """draw_face (test videos, scripts/): valence moves the lip corners, arousal the brows."""
    def aligned(v, a):
        frame = np.full((240, 320, 3), 0.5, np.float32)
        face.draw_face(frame, NEUTRAL, v, a, 0.0)
        return check.aligned_face(frame, NEUTRAL, face.face_centre(NEUTRAL, 0.0, a))
    ref = aligned(0.0, 0.0)
    smile, frown, excited = (check.au_measures(aligned(v, a), ref) for v, a in ((1, 0), (-1, 0), (0, 1)))
    assert smile["AU12"] > 3 and frown["AU15"] > 2 and excited["AU1"] > 2 and excited["AU2"] > 2
    assert abs(smile["AU1"]) < 0.5 and abs(excited["AU12"]) < 0.5


def test_occluder_and_box():
    frame = np.full((240, 320, 3), 0.5, np.float32)
    face.draw_face(frame, NEUTRAL, 0.0, 0.0, 0.0)
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
    for i in range(14):
        look = face.Appearance.sample(rng, (160.0, 120.0), 0.9)
        frame = face.background(rng, 240, 320)
        aus = np.ones(len(AUS)) if i == 0 else rng.uniform(0, 1, len(AUS)) * (rng.uniform(size=len(AUS)) < 0.4)
        face.draw_expression(frame, look, face.expression_patch(aus), rng.uniform(-1, 1), i / 15)
        frames.append((frame * 255).astype(np.uint8))
    boxes, probs = mtcnn.detect(frames)
    found = [b is not None and max(p) > 0.9 for b, p in zip(boxes, probs)]
    assert sum(found) == len(frames)
    # and an occluded face is not found
    frame = face.background(rng, 240, 320)
    face.draw_expression(frame, NEUTRAL, None, 0.0, 0.0)
    face.draw_occluder(frame, face.face_box(NEUTRAL), np.array([0.5, 0.3, 0.3], np.float32))
    b, p = mtcnn.detect((frame * 255).astype(np.uint8))
    assert b is None or max(p) < 0.9
