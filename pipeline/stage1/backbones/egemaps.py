"""`egemaps`: the eGeMAPSv02 acoustic parameter set (Eyben et al. 2016) through openSMILE.

openSMILE (pip package `opensmile`, audEERING) is dual-licensed: free for private, research
and educational use, not for any commercial product (https://pypi.org/project/opensmile/,
"License"): never the default backbone.

openSMILE computes eGeMAPSv02's 25 low-level descriptors (LLDs) every 10 ms over the whole
track, in chunks of 60 s with 1 s of context on each side (rows in the context are dropped,
so smoothing and pitch tracking see the same neighbourhood as in one pass). LLD row j
analyses the 20 ms from sample j * 160 (pitch-related LLDs: 60 ms), so its centre is
j * 160 + 160; with openSMILE's 3-row smoothing a window's energy and spectral features depend
on samples within 20 ms of it, its voiced-only ones on up to 60 ms after it. Each video frame's window then pools the rows whose centre lies in it:
mean and std of every LLD, the 15 voiced-only LLDs (names ending `nz`: F0, jitter, shimmer,
HNR, harmonic and formant parameters) over the voiced rows (F0 > 0) only, as eGeMAPS' own
functionals do, plus the voiced fraction: 51 values. Units are openSMILE's except formant
frequencies and bandwidths, in kHz. openSMILE's own 88 functionals per window would cost one
openSMILE run per video frame instead of one pass over the track.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.config import BackboneParams
from pipeline.errors import JmtError
from pipeline.stage1.backbones import BACKBONES, WaveformBackbone
from pipeline.stage1.backbones.frames import gather_rows, masked_mean_std, one_thread, padded_slice, row_range

SR = 16000
HOP = 160                    # 10 ms between LLD rows
CENTRE = 160                 # row j analyses [j * 160, j * 160 + 320): centre j * 160 + 160
CHUNK_ROWS = 6000            # 60 s of rows per openSMILE call
CONTEXT_ROWS = 100           # 1 s of context each side of a chunk
TAIL = 800                   # openSMILE's last row starts 50 ms before the end of its input
N_LLD, N_FUNCTIONALS = 25, 88  # eGeMAPSv02, as documented (tests/stage1/test_audio_backbones.py)


def smile(level: str = "lld"):
    """An openSMILE extractor of eGeMAPSv02 ('lld' or 'functionals'); a clear error without it."""
    try:
        import opensmile
    except ImportError:
        raise JmtError("egemaps needs the opensmile package (research and education licence): "
                       "pip install opensmile==2.6.0") from None
    feature_level = {"lld": opensmile.FeatureLevel.LowLevelDescriptors,
                     "functionals": opensmile.FeatureLevel.Functionals}[level]
    return opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=feature_level)


class EGeMAPS(WaveformBackbone):
    """eGeMAPSv02 LLDs -> per-window mean/std (module docstring); 51-d, no weights."""

    def __init__(self) -> None:
        super().__init__()
        self.smile = smile("lld")
        self.llds = list(self.smile.feature_names)
        self.voiced_only = np.array([n.endswith("nz") for n in self.llds])
        self.khz = np.array([n.startswith(("F1f", "F2f", "F3f", "F1b", "F2b", "F3b")) for n in self.llds])
        self.f0 = self.llds.index("F0semitoneFrom27.5Hz_sma3nz")
        self.features = [f"{n}_{s}" for s in ("mean", "std") for n in self.llds] + ["voiced_fraction"]
        self.dim = len(self.features)

    def rows(self, wave: np.ndarray, first: int, last: int) -> np.ndarray:
        """LLD rows [first, last) of the track (zeros outside it) -> float32 (L, 25)."""
        out = []
        for j0 in range(first, last, CHUNK_ROWS):
            j1 = min(last, j0 + CHUNK_ROWS)
            a = j0 - CONTEXT_ROWS
            n_rows = j1 + CONTEXT_ROWS - a
            seg = padded_slice(torch.from_numpy(wave), a * HOP, (a + n_rows) * HOP + TAIL).numpy()
            vals = self.smile.process_signal(seg, SR).to_numpy(np.float32)   # (>= n_rows, 25)
            out.append(vals[CONTEXT_ROWS: CONTEXT_ROWS + j1 - j0])
        rows = np.concatenate(out) if out else np.zeros((0, N_LLD), np.float32)
        rows[:, self.khz] /= 1000.0
        return rows

    def forward(self, wave: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
        win = np.asarray(windows.cpu() if torch.is_tensor(windows) else windows, np.int64)
        if len(win) == 0:
            return torch.zeros(0, self.dim)
        lo, hi = row_range(win, HOP, CENTRE)
        first = int(lo.min())
        rows = torch.from_numpy(self.rows(wave.detach().float().cpu().numpy(), first, int(hi.max())))
        with one_thread():  # small memory-bound ops: see frames.one_thread
            return self._functionals(rows, first, lo, hi).to(wave.device)

    def _functionals(self, rows: torch.Tensor, first: int, lo: np.ndarray, hi: np.ndarray) -> torch.Tensor:
        vals, mask = gather_rows(rows, first, lo, hi)                        # (n, K, 25), (n, K)
        voiced = mask & (vals[..., self.f0] > 0)                             # (n, K)
        per_lld = torch.where(torch.as_tensor(self.voiced_only)[None, None], voiced[..., None],
                              mask[..., None])                               # (n, K, 25)
        mean, std = masked_mean_std(vals, per_lld)
        frac = voiced.sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp(min=1)
        return torch.cat([mean, std, frac.float()], 1)


@BACKBONES.register("egemaps")
def egemaps(params: BackboneParams, root: Path) -> EGeMAPS:
    """eGeMAPSv02 LLD functionals via openSMILE (research/education licence; no weights)."""
    if params.pretrained or params.checkpoint or params.allow_random:
        raise JmtError("egemaps has no weights: leave pretrained/checkpoint/allow_random unset")
    return EGeMAPS()
