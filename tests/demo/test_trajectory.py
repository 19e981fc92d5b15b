import numpy as np
import pytest

from pipeline.demo.trajectory import pick_stretch, smooth_trajectory, speaker_turns


@pytest.mark.parametrize("n", [30, 300, 3000])
def test_trajectories_are_bounded_smooth_and_varied(n):
    rng = np.random.default_rng(0)
    x = smooth_trajectory(rng, n, 15.0)
    assert x.shape == (n,) and np.abs(x).max() < 1
    assert np.abs(np.diff(x)).max() < 0.1
    if n >= 300:  # long enough to wander over a good part of the range
        assert x.max() - x.min() > 0.5


def test_pick_stretch_respects_bounds_and_avoid():
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = pick_stretch(rng, 300, 45)
        b = pick_stretch(rng, 300, 45, avoid=[a])
        assert b[1] - b[0] == 45 and 0 <= b[0] and b[1] <= 300
        assert b[1] <= a[0] or b[0] >= a[1]
    assert pick_stretch(rng, 300, 0) is None


def test_speaker_turns_alternate():
    rng = np.random.default_rng(0)
    who = speaker_turns(rng, 600, 15.0, 2)
    assert set(who) == {0, 1}
    changes = np.flatnonzero(np.diff(who))
    assert np.diff(changes).min() >= 2 * 15 - 1  # turns last at least ~2 s
    assert (speaker_turns(rng, 100, 15.0, 1) == 0).all()
