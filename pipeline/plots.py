"""Shared matplotlib pieces (headless Agg backend) for `jmt predict` and `jmt report`."""

from __future__ import annotations

import numpy as np

FACE_COLOUR, AUDIO_COLOUR = "tab:red", "tab:blue"


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def runs_of(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index ranges where a boolean mask is True."""
    m = np.concatenate([[False], np.asarray(mask, bool), [False]])
    edges = np.flatnonzero(np.diff(m.astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def shade_missing(ax, times: np.ndarray, face: np.ndarray, audio: np.ndarray) -> None:
    """Shades the stretches without a face (red) and without audio (blue) on an axis."""
    step = float(np.median(np.diff(times))) if len(times) > 1 else 0.04
    for present, colour, name in ((face, FACE_COLOUR, "no face"), (audio, AUDIO_COLOUR, "no audio")):
        for k, (a, b) in enumerate(runs_of(~np.asarray(present, bool))):
            ax.axvspan(times[a], times[b - 1] + step, color=colour, alpha=0.13, lw=0,
                       label=name if k == 0 else None)
