"""pipeline/plots.py: the stretches where each stream is missing, shaded one colour per stream."""

import numpy as np
from matplotlib.colors import to_rgba

from pipeline.plots import OTHER_COLOURS, colour_of, pyplot, runs_of, shade_missing


def test_runs_of_finds_every_stretch_including_the_edges():
    assert runs_of(np.array([1, 1, 0, 0, 1, 0, 1, 1], bool)) == [(0, 2), (4, 5), (6, 8)]
    assert runs_of(np.zeros(4, bool)) == [] and runs_of(np.ones(3, bool)) == [(0, 3)]


def test_colours_fixed_for_visual_and_audio_then_by_position():
    streams = ["visual", "audio", "prosody", "egemaps"]
    assert colour_of("visual", streams) == "tab:red" and colour_of("audio", streams) == "tab:blue"
    assert colour_of("prosody", streams) == OTHER_COLOURS[0] and colour_of("egemaps", streams) == OTHER_COLOURS[1]
    assert len({colour_of(s, streams) for s in streams}) == 4


def test_shade_missing_draws_one_span_per_missing_stretch_of_each_stream():
    plt = pyplot()
    fig, ax = plt.subplots()
    times = np.arange(10) * 0.1
    masks = {"visual": np.array([1, 1, 0, 0, 1, 1, 1, 0, 1, 1], bool),      # two stretches missing
             "audio": np.ones(10, bool),                                     # never missing
             "prosody": np.array([0, 1, 1, 1, 1, 1, 1, 1, 1, 1], bool)}      # one, at the start
    shade_missing(ax, times, masks)
    spans = ax.patches
    assert len(spans) == 3
    colours = [to_rgba(p.get_facecolor())[:3] for p in spans]
    assert colours[:2] == [to_rgba("tab:red")[:3]] * 2 and colours[2] == to_rgba(OTHER_COLOURS[0])[:3]
    x0 = [p.get_x() for p in spans]
    widths = [p.get_width() for p in spans]
    np.testing.assert_allclose(x0, [0.2, 0.7, 0.0])
    np.testing.assert_allclose(widths, [0.2, 0.1, 0.1])                      # to the end of the last frame
    _, names = ax.get_legend_handles_labels()
    assert names == ["no visual", "no prosody"]                              # one legend entry per stream
    plt.close(fig)
