"""`prosody`: a fast, licence-clean prosodic extractor in torch (no weights).

Low-level descriptors (LLDs) every 10 ms over the whole track (row j centred at sample
j * 160, 16 kHz), computed in chunks of 5 s:
- F0 and voicing: a YIN pitch tracker (de Cheveigne & Kawahara 2002): difference function
  over a 25 ms integration window and lags for 50-600 Hz (45 ms frames), cumulative mean
  normalisation, the first dip below 0.15 (else the global minimum), parabolic
  interpolation. Voicing probability = 1 - the normalised difference at the chosen lag; a
  row is voiced when that is >= VOICED_P and the row is louder than LEVEL_FLOOR_DB.
- level: RMS of the Hann-weighted 25 ms frame, dBFS;
- spectral centroid (kHz) and spectral slope (least-squares slope of the dB spectrum over
  50 Hz - 5 kHz, dB/kHz) of the same frame.
Functionals over the LLD rows whose centre lies in each video frame's window (frames.py):

| features | meaning (units chosen to stay within a few units: stage 2 L2-normalises) |
| --- | --- |
| voiced_fraction, voicing_mean | share of voiced rows; mean voicing probability |
| f0_mean, f0_std, f0_range, f0_delta | F0 in octaves above 27.5 Hz, voiced rows only (0 if none); delta = mean absolute change between consecutive voiced rows |
| level_*, centroid_*, slope_* | mean, std, range, mean absolute delta of level (dBFS / 20), centroid (kHz), slope (dB/kHz / 10) |
| syllable_rate | voiced level peaks per second / 10 (the highest level within 100 ms, with dips of >= 6 dB within 250 ms on both sides): a syllable-rate proxy |
| modulation_2_8hz | share of the level envelope's modulation power at 2-8 Hz (syllabic rhythm) |

A window's features depend only on the samples within 22.5 ms of it (the YIN frame), except
syllable_rate, whose peak test looks 270 ms around each row.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.config import BackboneParams
from pipeline.errors import JmtError
from pipeline.stage1.backbones import BACKBONES, WaveformBackbone
from pipeline.stage1.backbones.frames import gather_rows, masked_stats, one_thread, padded_slice, row_range

SR = 16000
HOP = 160                                   # 10 ms between LLD rows
SPEC_WIN = 400                              # 25 ms frame for level and spectrum
YIN_W = 400                                 # 25 ms integration window
F0_MIN, F0_MAX = 50.0, 600.0
TAU_MIN, TAU_MAX = int(SR // F0_MAX), int(math.ceil(SR / F0_MIN))   # 26, 320 samples
FRAME = YIN_W + TAU_MAX                     # 720 samples, centred on the row
YIN_THRESHOLD = 0.15
VOICED_P = 0.7
LEVEL_FLOOR_DB = -60.0
CHUNK_ROWS = 500                            # 5 s of LLD rows per chunk (bounded memory, cache-friendly)
F0_REF = 27.5                               # Hz (eGeMAPS' semitone reference)
FEATURES = ["voiced_fraction", "voicing_mean",
            *[f"{lld}_{stat}" for lld in ("f0", "level", "centroid", "slope")
              for stat in ("mean", "std", "range", "delta")],
            "syllable_rate", "modulation_2_8hz"]


def yin(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """frames (N, FRAME) -> F0 in Hz (N,) and voicing probability (N,) (YIN, see the docstring)."""
    n_fft = 1024                                                        # >= FRAME: no wrap for lags >= 0
    x = frames.float()
    spec = torch.fft.rfft(x, n_fft)
    head = torch.fft.rfft(x[:, :YIN_W], n_fft)
    r = torch.fft.irfft(spec * head.conj(), n_fft)[:, :TAU_MAX + 1]     # (N, T) sum_j x_j x_{j+tau}
    cs = F.pad(torch.cumsum(x * x, 1), (1, 0))                          # (N, FRAME + 1)
    energy = cs[:, YIN_W:YIN_W + TAU_MAX + 1] - cs[:, :TAU_MAX + 1]     # (N, T) sum_j x_{j+tau}^2
    d = (energy[:, :1] + energy - 2 * r).clamp(min=0)                   # difference function
    tau = torch.arange(TAU_MAX + 1, device=x.device, dtype=x.dtype)
    run = torch.cumsum(d, 1)
    ok = run > 1e-9 * energy[:, :1].clamp(min=1e-20)
    cmnd = torch.where(ok, d * tau / run.clamp(min=1e-30), torch.ones_like(d))
    cmnd[:, 0] = 1.0
    search = cmnd[:, TAU_MIN:TAU_MAX]                                   # (N, S) lags TAU_MIN..TAU_MAX-1
    dip = (search < YIN_THRESHOLD) & (search <= cmnd[:, TAU_MIN + 1:TAU_MAX + 1])
    first = dip.float().argmax(1)                                       # first local min below threshold
    best = torch.where(dip.any(1), first, search.argmin(1)) + TAU_MIN   # (N,) integer lag
    rows = torch.arange(len(x), device=x.device)
    a, b, c = cmnd[rows, best - 1], cmnd[rows, best], cmnd[rows, (best + 1).clamp(max=TAU_MAX)]
    den = a - 2 * b + c
    shift = torch.where(den.abs() > 1e-12, 0.5 * (a - c) / den, torch.zeros_like(den)).clamp(-1, 1)
    f0 = SR / (best.to(x.dtype) + shift)
    return f0, (1 - b).clamp(0, 1)


def spectral(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """frames (N, SPEC_WIN) -> level dBFS, centroid kHz, slope dB/kHz (each (N,))."""
    win = torch.hann_window(SPEC_WIN, periodic=False, device=frames.device, dtype=torch.float32)
    x = frames.float() * win
    level = 10 * torch.log10((x * x).sum(1) / (win * win).sum() + 1e-10)
    power = torch.fft.rfft(x, 512).abs() ** 2                           # (N, 257)
    freqs = torch.fft.rfftfreq(512, 1 / SR, device=frames.device) / 1000.0  # kHz
    centroid = (power * freqs).sum(1) / (power.sum(1) + 1e-20)
    band = (freqs >= 0.05) & (freqs <= 5.0)
    f, db = freqs[band], 10 * torch.log10(power[:, band] + 1e-12)
    fc = f - f.mean()
    slope = ((db - db.mean(1, keepdim=True)) * fc).sum(1) / (fc * fc).sum()
    return level.clamp(min=-100.0), centroid, slope


def llds(wave: torch.Tensor, first: int, last: int) -> torch.Tensor:
    """LLD rows [first, last) of the track -> (L, 6): f0 (octaves above 27.5 Hz, 0 unvoiced),
    voicing probability, voiced (0/1), level dBFS, centroid kHz, slope dB/kHz; chunked."""
    out = []
    for j0 in range(first, last, CHUNK_ROWS):
        j1 = min(last, j0 + CHUNK_ROWS)
        seg = padded_slice(wave, j0 * HOP - FRAME // 2, (j1 - 1) * HOP + FRAME // 2)
        frames = seg.unfold(0, FRAME, HOP)                             # (j1 - j0, FRAME)
        f0, prob = yin(frames)
        mid = (FRAME - SPEC_WIN) // 2
        level, centroid, slope = spectral(frames[:, mid:mid + SPEC_WIN])
        voiced = (prob >= VOICED_P) & (level > LEVEL_FLOOR_DB)
        octave = torch.where(voiced, torch.log2(f0 / F0_REF), torch.zeros_like(f0))
        out.append(torch.stack([octave, prob, voiced.float(), level, centroid, slope], 1))
    return torch.cat(out) if out else wave.new_zeros(0, 6)


def run_max(x: torch.Tensor, a: int, b: int) -> torch.Tensor:
    """max of x (L,) over rows [j + a, j + b] for every row j (-inf beyond the ends)."""
    pad = max(-a, b, 0)
    xp = F.pad(x[None], (pad, pad), value=float("-inf"))[0]
    return xp.unfold(0, b - a + 1, 1)[pad + a: pad + a + len(x)].amax(1)


def level_peaks(level: torch.Tensor, voiced: torch.Tensor) -> torch.Tensor:
    """Syllable-nucleus proxy per row (L,): a voiced maximum of the 50 ms-smoothed level, above
    the 100 ms before it and not below the 100 ms after it (a plateau counts once), with a dip
    of >= 6 dB within 250 ms on each side (a tone's onset or offset alone is no syllable)."""
    s = F.avg_pool1d(level[None, None], 5, 1, 2, count_include_pad=False)[0, 0]
    top = (s > run_max(s, -10, -1)) & (s >= run_max(s, 1, 10))
    dips = (s + run_max(-s, -25, 0) >= 6.0) & (s + run_max(-s, 0, 25) >= 6.0)
    return top & dips & (voiced > 0)


class Prosody(WaveformBackbone):
    """Prosodic functionals per video frame window (module docstring); 20-d, no weights."""

    dim = len(FEATURES)
    features = FEATURES

    def __init__(self, batch: int = 4096) -> None:
        super().__init__()
        self.batch = batch

    def forward(self, wave: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
        win = np.asarray(windows.cpu() if torch.is_tensor(windows) else windows, np.int64)
        if len(win) == 0:
            return wave.new_zeros(0, self.dim)
        with one_thread():  # small memory-bound ops: see frames.one_thread
            return self._forward(wave, win)

    def _forward(self, wave: torch.Tensor, win: np.ndarray) -> torch.Tensor:
        lo, hi = row_range(win, HOP, 0)
        first, last = int(lo.min()), int(hi.max())
        rows = llds(wave.float(), first, last)                          # (L, 6)
        peaks = level_peaks(rows[:, 3], rows[:, 2]).float()
        rows = torch.cat([rows, peaks[:, None]], 1)                     # (L, 7)
        seconds = (win[:, 1] - win[:, 0]) / SR
        out = []
        for a in range(0, len(win), self.batch):
            vals, mask = gather_rows(rows, first, lo[a:a + self.batch], hi[a:a + self.batch])  # (n, K, 7)
            out.append(self._functionals(vals, mask, torch.as_tensor(seconds[a:a + self.batch],
                                                                     device=vals.device)))
        return torch.cat(out)

    @staticmethod
    def _functionals(v: torch.Tensor, mask: torch.Tensor, seconds: torch.Tensor) -> torch.Tensor:
        octave, prob, voiced, level, centroid, slope, peak = v.unbind(-1)          # each (n, K)
        m = mask.float()
        cnt = m.sum(1).clamp(min=1)
        voiced_m = mask & (voiced > 0)
        parts = [(voiced * m).sum(1, keepdim=True) / cnt[:, None],
                 (prob * m).sum(1, keepdim=True) / cnt[:, None],
                 masked_stats(octave[..., None], voiced_m),
                 masked_stats(level[..., None] / 20.0, mask),
                 masked_stats(centroid[..., None], mask),
                 masked_stats(slope[..., None] / 10.0, mask),
                 ((peak * m).sum(1) / seconds.clamp(min=1e-6) / 10.0)[:, None]]
        # modulation spectrum of the level envelope (padding rows set to the window's mean)
        mean = (level * m).sum(1, keepdim=True) / cnt[:, None]
        env = torch.where(mask, level, mean) - mean                                 # (n, K)
        k = env.shape[1]
        power = torch.fft.rfft(env, k).abs() ** 2                                   # (n, K//2+1)
        hz = torch.fft.rfftfreq(k, HOP / SR, device=env.device)
        band = power[:, (hz >= 2.0) & (hz <= 8.0)].sum(1)
        parts.append((band / (power[:, 1:].sum(1) + 1e-12))[:, None])
        return torch.cat(parts, 1)


@BACKBONES.register("prosody")
def prosody(params: BackboneParams, root: Path) -> Prosody:
    """YIN F0 and voicing, level, spectral centroid and slope, syllable rate (no weights)."""
    if params.pretrained or params.checkpoint or params.allow_random:
        raise JmtError("prosody has no weights: leave pretrained/checkpoint/allow_random unset")
    return Prosody()
