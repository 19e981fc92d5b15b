"""Smooth valence/arousal trajectories and the stretches where a modality is unreliable."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d


def smooth_trajectory(rng: np.random.Generator, n_frames: int, fps: float,
                      timescale_s: float = 2.5) -> np.ndarray:
    """One smooth curve in (-1, 1): low-passed noise plus a slow sine, squashed by tanh.

    Returns float64 (n_frames,). `timescale_s` is the Gaussian smoothing width in seconds.
    """
    pad = int(4 * timescale_s * fps)  # avoid the filter's edge effects
    noise = rng.standard_normal(n_frames + 2 * pad)
    sigma = timescale_s * fps
    x = gaussian_filter1d(noise, sigma=sigma)[pad:pad + n_frames]
    # Gaussian-filtered unit white noise has variance 1 / (2 sqrt(pi) sigma): rescale to 1
    # (not by the sample std, which would blow up short videos).
    x = x * np.sqrt(2 * np.sqrt(np.pi) * sigma)
    t = np.arange(n_frames) / fps
    period = rng.uniform(6.0, 14.0)
    x = 0.7 * x + 0.8 * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
    return np.tanh(0.9 * x)


def pick_stretch(rng: np.random.Generator, n_frames: int, length: int,
                 avoid: list[tuple[int, int]] = ()) -> tuple[int, int] | None:
    """A [start, stop) frame interval of `length` frames inside the video, away from
    the edges and not overlapping any interval in `avoid`. None if length is 0."""
    if length <= 0:
        return None
    margin = max(1, n_frames // 10)
    candidates = [
        s for s in range(margin, n_frames - margin - length + 1)
        if all(s + length <= a or s >= b for a, b in avoid)
    ]
    if not candidates:  # tiny videos: fall back to anywhere that fits
        candidates = [s for s in range(0, n_frames - length + 1)
                      if all(s + length <= a or s >= b for a, b in avoid)] or [0]
    start = int(rng.choice(candidates))
    return start, start + length


def speaker_turns(rng: np.random.Generator, n_frames: int, fps: float,
                  n_people: int) -> np.ndarray:
    """Who speaks at each frame (int (n_frames,)): turns of 2-5 s alternating between people."""
    who = np.zeros(n_frames, dtype=np.int64)
    if n_people == 1:
        return who
    start, person = 0, int(rng.integers(n_people))
    while start < n_frames:
        stop = min(n_frames, start + int(rng.uniform(2.0, 5.0) * fps))
        who[start:stop] = person
        start, person = stop, (person + 1) % n_people
    return who
