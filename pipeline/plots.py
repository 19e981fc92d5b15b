"""Shared matplotlib pieces (headless Agg backend) for `jmt predict` and `jmt report`, and the
one palette every figure draws from.

`PALETTE` gives each meaning one colour in every figure (red always means "no face", blue "no
voice", purple "validation"...); `HEAD_COLOURS` colours per-head lines and bars, disjoint from
it, so a head is never drawn in a colour that means something else elsewhere.
"""

from __future__ import annotations

import numpy as np

PALETTE = {
    "ground truth": "#000000",
    "prediction": "#2ca02c",
    "visual": "#d62728",                 # a stream: where it is missing, or masked
    "audio": "#1f77b4",
    "every stream present": "#7f7f7f",   # no stream missing: no hue
    "validation": "#9467bd",
    "test": "#ff7f0e",
    "t over seeds": "#17becf",
    "bootstrap over videos": "#e377c2",
    "rerun margin": "#dddddd",           # the band around 0 within which no verdict is stated
    "zero": "#b5b5b5",                   # reference lines at 0
    "spread": "#333333",                 # error bars: ± std over seeds
}
# a stream's colour: visual (faces) and audio fixed, any other by its position among the others
STREAM_COLOURS = {"visual": PALETTE["visual"], "audio": PALETTE["audio"]}
OTHER_COLOURS = ("#bcbd22", "#8c564b", "#e7ba52")
# per-head colours: tab20b's darker tones, none of them a meaning's colour
HEAD_COLOURS = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173",
                "#5254a3", "#8ca252", "#bd9e39", "#ad494a", "#a55194")


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def colour_of(stream: str, streams: list[str]) -> str:
    """A stream's colour (fixed for visual and audio, then by position among the others)."""
    if stream in STREAM_COLOURS:
        return STREAM_COLOURS[stream]
    others = [s for s in streams if s not in STREAM_COLOURS]
    return OTHER_COLOURS[others.index(stream) % len(OTHER_COLOURS)]


def head_colours(heads: list[str]) -> dict[str, str]:
    """head -> colour by its position in `heads` (a comparison's compare.heads: the same colour
    in every figure of its report); past ten heads the colours repeat."""
    return {h: HEAD_COLOURS[i % len(HEAD_COLOURS)] for i, h in enumerate(heads)}


def runs_of(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index ranges where a boolean mask is True."""
    m = np.concatenate([[False], np.asarray(mask, bool), [False]])
    edges = np.flatnonzero(np.diff(m.astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def shade_missing(ax, times: np.ndarray, masks: dict[str, np.ndarray]) -> None:
    """Shades the stretches where each stream is missing (its mask False), one colour per stream."""
    step = float(np.median(np.diff(times))) if len(times) > 1 else 0.04
    for stream, present in masks.items():
        colour = colour_of(stream, list(masks))
        for k, (a, b) in enumerate(runs_of(~np.asarray(present, bool))):
            ax.axvspan(times[a], times[b - 1] + step, color=colour, alpha=0.13, lw=0,
                       label=f"no {stream}" if k == 0 else None)

