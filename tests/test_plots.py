"""pipeline/plots.py: one palette (a colour per meaning, heads apart), and the stretches where each
stream is missing, shaded one colour per stream."""

import numpy as np
from matplotlib.colors import to_hex, to_rgba, to_rgba_array

from pipeline.plots import HEAD_COLOURS, OTHER_COLOURS, PALETTE, colour_of, head_colours, pyplot, runs_of, shade_missing


def drawn_colours(fig) -> set[str]:
    """The colours (hex, alpha dropped) a figure's axes draw with: lines, patches (bars, spans)
    and collections (error bars, fills, points); not colour-mapped images or meshes, text,
    legends or colour bars."""
    out: set[str] = set()

    def add(colours) -> None:
        out.update(to_hex(c[:3]) for c in to_rgba_array(colours) if c[3] > 0)

    for ax in fig.axes:
        if hasattr(ax, "_colorbar"):
            continue
        for line in ax.lines:
            add(line.get_color())
        for patch in ax.patches:
            add(patch.get_facecolor())
            if patch.get_linewidth():
                add(patch.get_edgecolor())
        for coll in ax.collections:
            if coll.get_array() is not None:  # colour-mapped: its colour bar says what it means
                continue
            add(coll.get_facecolor())
            if np.any(np.asarray(coll.get_linewidth()) > 0):
                add(coll.get_edgecolor())
    return out


MEANINGS = {to_hex(c) for c in (*PALETTE.values(), *OTHER_COLOURS)}
HEADS = {to_hex(c) for c in HEAD_COLOURS}


def test_every_colour_means_one_thing():
    """Each meaning its own colour, the other streams' too; the head colours neither repeat one
    another nor a meaning's."""
    assert len(MEANINGS) == len(PALETTE) + len(OTHER_COLOURS)
    assert len(HEADS) == len(HEAD_COLOURS) and not HEADS & MEANINGS
    assert {"ground truth", "prediction", "visual", "audio", "every stream present", "validation", "test",
            "t over seeds", "bootstrap over videos", "rerun margin"} <= set(PALETTE)


def test_runs_of_finds_every_stretch_including_the_edges():
    assert runs_of(np.array([1, 1, 0, 0, 1, 0, 1, 1], bool)) == [(0, 2), (4, 5), (6, 8)]
    assert runs_of(np.zeros(4, bool)) == [] and runs_of(np.ones(3, bool)) == [(0, 3)]


def test_colours_fixed_for_visual_and_audio_then_by_position():
    streams = ["visual", "audio", "prosody", "egemaps"]
    assert colour_of("visual", streams) == PALETTE["visual"] and colour_of("audio", streams) == PALETTE["audio"]
    assert colour_of("prosody", streams) == OTHER_COLOURS[0] and colour_of("egemaps", streams) == OTHER_COLOURS[1]
    assert len({colour_of(s, streams) for s in streams}) == 4


def test_head_colours_follow_the_heads_order_and_repeat_past_the_palette():
    heads = [f"h{i}" for i in range(len(HEAD_COLOURS) + 2)]
    colours = head_colours(heads)
    assert list(colours) == heads and colours["h0"] == HEAD_COLOURS[0] and colours["h1"] == HEAD_COLOURS[1]
    assert colours[f"h{len(HEAD_COLOURS)}"] == HEAD_COLOURS[0]


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
    assert colours[:2] == [to_rgba(PALETTE["visual"])[:3]] * 2 and colours[2] == to_rgba(OTHER_COLOURS[0])[:3]
    assert drawn_colours(fig) == {PALETTE["visual"], OTHER_COLOURS[0]}
    x0 = [p.get_x() for p in spans]
    widths = [p.get_width() for p in spans]
    np.testing.assert_allclose(x0, [0.2, 0.7, 0.0])
    np.testing.assert_allclose(widths, [0.2, 0.1, 0.1])                      # to the end of the last frame
    _, names = ax.get_legend_handles_labels()
    assert names == ["no visual", "no prosody"]                              # one legend entry per stream
    plt.close(fig)
