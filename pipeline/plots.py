"""Shared matplotlib pieces (headless Agg backend) for `jmt predict` and `jmt report`."""

from __future__ import annotations

import numpy as np

# a stream's colour where it is missing: visual (faces) red, audio blue, any other from this list
STREAM_COLOURS = {"visual": "tab:red", "audio": "tab:blue"}
OTHER_COLOURS = ("tab:olive", "tab:brown", "tab:purple", "tab:gray")


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
