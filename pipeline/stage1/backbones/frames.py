"""Shared helpers of the waveform backbones: frame-rate features -> each video frame's window.

A waveform backbone computes a sequence of feature rows over the track once (LLDs at 100 Hz,
SSL features at 50 Hz...); row j describes the samples around its centre
`j * hop + centre`. A video frame's window [start, end) (samples) owns the rows whose centre
lies in [start, end), so every frame pools exactly the rows of its own window, aligned to
the video timestamps. Outside the track the waveform is silence (zeros), the same convention
as the log-mel windows' padding before the track starts.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torchaudio


def row_range(windows: np.ndarray, hop: int, centre: int) -> tuple[np.ndarray, np.ndarray]:
    """Global row indices [lo, hi) of the rows whose centre lies in each window [start, end)."""
    w = np.asarray(windows, np.int64)
    # smallest j with j * hop + centre >= x is ceil((x - centre) / hop)
    lo = -((centre - w[:, 0]) // hop)
    hi = -((centre - w[:, 1]) // hop)
    return lo, hi


def resample(wave: torch.Tensor, orig: int, new: int, chunk_s: float = 20.0) -> torch.Tensor:
    """wave (S,) from `orig` to `new` Hz, chunk by chunk: torchaudio's resampling of the whole
    track (to float rounding), with temporaries for one chunk instead of ~3x the output track.

    torchaudio's polyphase filter maps each block of o = orig / gcd input samples to n = new /
    gcd output samples and reaches about o input samples past a block; chunks start on block
    boundaries and carry 64 blocks of input on each side, so each output sample sees the same
    inputs as in one call (zeros past the track's ends in both)."""
    if orig == new:
        return wave
    g = math.gcd(orig, new)
    o, n = orig // g, new // g
    step = max(1, int(chunk_s * orig) // o) * o                     # input samples per chunk
    margin = 64 * o
    out = []
    for s in range(0, len(wave), step):
        a = max(0, s - margin)
        y = torchaudio.functional.resample(wave[a:min(len(wave), s + step + margin)], orig, new)
        lo = (s - a) // o * n
        out.append(y[lo:lo + step // o * n])
    return torch.cat(out)[:math.ceil(n * len(wave) / o)] if out else wave.new_zeros(0)


def padded_slice(wave: torch.Tensor, a: int, b: int) -> torch.Tensor:
    """wave[a:b] with zeros where [a, b) runs outside the track (a may be negative)."""
    out = wave.new_zeros(max(b - a, 0))
    lo, hi = max(a, 0), min(b, len(wave))
    if hi > lo:
        out[lo - a: hi - a] = wave[lo:hi]
    return out


def gather_rows(rows: torch.Tensor, first: int, lo: np.ndarray, hi: np.ndarray
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cuts each window's rows out of `rows` (L, C), whose row 0 is global row `first`.

    Returns values (n, K, C) and a mask (n, K), K the longest window (windows of one length
    differ by at most one row); padding rows repeat the window's last row and are masked.
    """
    count = torch.as_tensor(hi - lo)
    k = max(int(count.max()), 1) if len(lo) else 1
    idx = torch.as_tensor(lo - first)[:, None] + torch.arange(k)[None, :]        # (n, K)
    mask = torch.arange(k)[None, :] < count[:, None]
    idx = torch.minimum(idx, torch.as_tensor(hi - first - 1)[:, None]).clamp(0, len(rows) - 1)
    return rows[idx.to(rows.device)], mask.to(rows.device)


def masked_stats(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mean, std, range and mean absolute delta of x (n, K, C) over the K rows where mask (n, K)
    holds; delta only between consecutive rows that both hold. 0 where too few rows.
    Returns (n, 4 * C): the four statistics, each over all C channels."""
    m = mask[..., None].to(x.dtype)                                   # (n, K, 1)
    cnt = m.sum(1)                                                     # (n, 1)
    mean = (x * m).sum(1) / cnt.clamp(min=1)
    var = (((x - mean[:, None]) ** 2) * m).sum(1) / cnt.clamp(min=1)
    big = torch.finfo(x.dtype).max
    hi = torch.where(mask[..., None], x, -big).amax(1)
    lo = torch.where(mask[..., None], x, big).amin(1)
    rng = torch.where(cnt > 0, hi - lo, torch.zeros_like(hi))
    pair = (m[:, 1:] * m[:, :-1])                                      # (n, K-1, 1)
    delta = ((x[:, 1:] - x[:, :-1]).abs() * pair).sum(1) / pair.sum(1).clamp(min=1)
    return torch.cat([mean, var.sqrt(), rng, delta], dim=1)


def masked_mean_std(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (population) std of x (n, K, C) over the rows where mask (n, K[, C]) holds."""
    m = (mask if mask.dim() == 3 else mask[..., None]).to(x.dtype)
    cnt = m.sum(1).clamp(min=1)
    mean = (x * m).sum(1) / cnt
    var = (((x - mean[:, None]) ** 2) * m).sum(1) / cnt
    return mean, var.sqrt()


@contextmanager
def one_thread() -> Iterator[None]:
    """Runs the block with one torch intra-op thread (restored after). For many small,
    memory-bound ops, more threads only add hand-over costs, and when the cores are shared
    their spin-waiting costs far more: prosody on 120 s of audio took 0.2 CPU-s with one
    thread and 2.1 CPU-s (13-19 s wall) with two on this 2-core machine under load."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
