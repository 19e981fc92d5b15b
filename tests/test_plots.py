import numpy as np

from pipeline.plots import runs_of


def test_runs_of_finds_every_stretch_including_the_edges():
    assert runs_of(np.array([1, 1, 0, 0, 1, 0, 1, 1], bool)) == [(0, 2), (4, 5), (6, 8)]
    assert runs_of(np.zeros(4, bool)) == [] and runs_of(np.ones(3, bool)) == [(0, 3)]
