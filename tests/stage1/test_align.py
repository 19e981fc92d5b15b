import numpy as np
import torch

from pipeline.stage1.align import similarity, template, warp_crops


def test_similarity_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 200, (5, 2))
    th, s, t = 0.3, 1.7, np.array([12.0, -4.0])
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    dst = src @ rot.T * s + t
    m = similarity(src, dst)
    np.testing.assert_allclose(m[:, :2], s * rot, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], t, atol=1e-7)


def test_similarity_degenerate_points():
    assert similarity(np.zeros((5, 2)), template(112)) is None


def test_warp_puts_landmarks_on_the_template():
    """A bright dot at each landmark of a frame lands on the template's position in the crop."""
    frame = np.zeros((240, 320, 3), np.uint8)
    marks = np.array([[140.0, 100.0], [180.0, 104.0], [160.0, 125.0], [143.0, 146.0], [177.0, 148.0]])
    for x, y in marks:
        frame[int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2] = 255
    m = similarity(marks, template(112))
    crop = warp_crops(torch.as_tensor(frame)[None], m[None], 112)[0].numpy()
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    residual = (np.c_[marks, np.ones(5)] @ m.T) - template(112)
    assert np.abs(residual).max() < 4.0  # a similarity fits 5 points, not exactly
    for x, y in np.c_[marks, np.ones(5)] @ m.T:
        assert crop[int(round(y)) - 1:int(round(y)) + 2, int(round(x)) - 1:int(round(x)) + 2].max() > 100
