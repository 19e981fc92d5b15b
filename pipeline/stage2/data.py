"""Windowed sequences over the embeddings cache (`<embed.out>/<entry>.h5`).

Training: fixed-length windows of `window` frames every `hop` frames (plus one window ending
at the last frame); a video shorter than a window is padded, with every mask False on the
padding. Evaluation: every frame is covered by overlapping windows whose predictions are
averaged (`predict_entry`). The cache is preloaded into memory when it is smaller than
`train.preload_max_mb`; otherwise windows are read as slices from lazily opened files, one
handle per process (never pickled into DataLoader workers).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline import cache
from pipeline.errors import InputError

FIELDS = ("audio", "visual", "audio_mask", "visual_mask", "labels", "label_mask")


@dataclass
class Entry:
    """One entry's arrays (in memory), or the file to read them from (lazy)."""

    name: str
    path: Path
    split: str
    n: int
    fps: float
    arrays: dict[str, np.ndarray] | None = None

    def read(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Frames [start, stop) of every field."""
        if self.arrays is not None:
            return {k: v[start:stop] for k, v in self.arrays.items()}
        f = _handle(self.path)
        return {k: f[k][start:stop] for k in FIELDS}


_HANDLES: dict[tuple[int, Path], h5py.File] = {}


def _handle(path: Path) -> h5py.File:
    """A per-process read handle (a forked DataLoader worker opens its own)."""
    key = (os.getpid(), path)
    if key not in _HANDLES:
        _HANDLES[key] = cache.open_entry(path)
    return _HANDLES[key]


def _check(name: str, arrays: dict[str, np.ndarray], offset: int = 0) -> None:
    """NaN/inf embeddings are an error naming the entry and the (absolute) frame."""
    for field in ("audio", "visual"):
        finite = np.isfinite(arrays[field]).all(axis=1)
        if not finite.all():
            raise InputError(f"{name}: NaN/inf in the {field} embeddings at frame "
                             f"{offset + int(np.flatnonzero(~finite)[0])}")


def load_split(folder: Path, split: str, *, preload_max_mb: float,
               expected: list[str] | None = None) -> list[Entry]:
    """The entries of one split in an embeddings folder; errors if there are none, or if any
    of the `expected` entry names (the corpus's) is missing from the cache."""
    folder = Path(folder)
    names = cache.entries(folder)
    if not names:
        raise InputError(f"{folder}: no embedding files; run `jmt embed` first")
    entries, total = [], 0
    for name in names:
        path = cache.entry_path(folder, name)
        with cache.open_entry(path) as f:
            if f.attrs.get("stage") != "embed":
                raise InputError(f"{path}: not an embeddings file (stage {f.attrs.get('stage')!r})")
            if f.attrs["split"] != split:
                continue
            entries.append(Entry(name, path, split, int(f.attrs["n_frames"]), float(f.attrs["fps"])))
            total += sum(f[k].size * f[k].dtype.itemsize for k in FIELDS)
    if not entries:
        raise InputError(f"{folder}: no entries of split {split!r} in the cache")
    missing = sorted(set(expected or []) - {e.name for e in entries})
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise InputError(f"{folder}: the cache lacks {len(missing)} {split} entr{'y' if len(missing) == 1 else 'ies'} "
                         f"of the corpus ({shown}); see the stage-1 report.json files or re-run jmt faces/audio/embed")
    if total <= preload_max_mb * 1e6:
        for e in entries:
            with cache.open_entry(e.path) as f:
                e.arrays = {k: f[k][...] for k in FIELDS}
            e.arrays["audio"] = e.arrays["audio"].astype(np.float32)
            e.arrays["visual"] = e.arrays["visual"].astype(np.float32)
            _check(e.name, e.arrays)
    return entries


def corpus_names(params, split: str) -> list[str] | None:
    """The corpus's entry names for a split, or None when the corpus is not at hand (a cache
    can be evaluated without its videos)."""
    from pipeline.corpus.entries import load_corpus

    try:
        corpus = load_corpus(params)
    except InputError:
        return None
    return [e.name for e in corpus.entries if e.split == split]


def feature_stats(entries: list[Entry], modality: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std (population) of `modality` ('audio' or 'visual') over the frames
    where it is present, across entries (float64 sums, read entry by entry). A feature that never
    varies gets std 1, so it passes through unscaled."""
    n, total, squares = 0, 0.0, 0.0
    for e in entries:
        x = e.read(0, e.n)
        present = x[f"{modality}_mask"]
        v = np.asarray(x[modality][present], np.float64)               # (present frames, D)
        n, total, squares = n + len(v), total + v.sum(0), squares + (v ** 2).sum(0)
    if n == 0:
        raise InputError(f"no frame of the training split has the {modality} stream: cannot standardise it")
    mean = total / n
    std = np.sqrt(np.maximum(squares / n - mean ** 2, 0.0))
    return mean.astype(np.float32), np.where(std > 1e-6, std, 1.0).astype(np.float32)


def dims(entries: list[Entry]) -> tuple[int, int]:
    """(audio_dim, visual_dim) of the cache, checked to agree across entries."""
    found = set()
    for e in entries:
        if e.arrays is not None:
            found.add((e.arrays["audio"].shape[1], e.arrays["visual"].shape[1]))
        else:
            f = _handle(e.path)
            found.add((f["audio"].shape[1], f["visual"].shape[1]))
    if len(found) != 1:
        raise InputError(f"embedding widths differ between entries: {sorted(found)}")
    return found.pop()


def window_starts(n: int, window: int, hop: int) -> list[int]:
    """Window starts covering frames 0..n-1: every `hop`, plus one ending at the last frame."""
    if n <= window:
        return [0]
    starts = list(range(0, n - window + 1, hop))
    if starts[-1] != n - window:
        starts.append(n - window)
    return starts


def _pad(arrays: dict[str, np.ndarray], window: int) -> dict[str, torch.Tensor]:
    n = len(arrays["labels"])
    out = {}
    for k, v in arrays.items():
        if n < window:  # short video: pad, masks False on the padding
            v = np.concatenate([v, np.zeros((window - n, *v.shape[1:]), v.dtype)])
        out[k] = torch.as_tensor(np.ascontiguousarray(v))
    out["audio"], out["visual"] = out["audio"].float(), out["visual"].float()
    return out


class WindowDataset(Dataset):
    """Training windows over a list of entries."""

    def __init__(self, entries: list[Entry], window: int, hop: int) -> None:
        self.entries, self.window = entries, window
        self.index = [(i, s) for i, e in enumerate(entries) for s in window_starts(e.n, window, hop)]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        i, start = self.index[k]
        e = self.entries[i]
        arrays = e.read(start, start + self.window)
        if e.arrays is None:
            arrays["audio"], arrays["visual"] = arrays["audio"].astype(np.float32), arrays["visual"].astype(np.float32)
            _check(e.name, arrays, start)
        return _pad(arrays, self.window)


@torch.no_grad()
def predict_entry(model: torch.nn.Module, entry: Entry, window: int, hop: int,
                  device: torch.device, *, drop: str | None = None) -> np.ndarray:
    """Per-frame predictions (n, 2) for a whole entry: overlapping windows, averaged.

    `drop` ('audio' or 'visual') masks that modality everywhere (robustness checks)."""
    total = np.zeros((entry.n, 2), np.float64)
    count = np.zeros(entry.n, np.float64)
    for start in window_starts(entry.n, window, hop):
        arrays = entry.read(start, start + window)
        if entry.arrays is None:
            arrays["audio"], arrays["visual"] = arrays["audio"].astype(np.float32), arrays["visual"].astype(np.float32)
            _check(entry.name, arrays, start)
        n = len(arrays["labels"])
        x = {k: v.unsqueeze(0).to(device) for k, v in _pad(arrays, window).items()}
        if drop:
            x[f"{drop}_mask"] = torch.zeros_like(x[f"{drop}_mask"])
        out = model(x["audio"], x["visual"], x["audio_mask"], x["visual_mask"])[0, :n]
        total[start:start + n] += out.float().cpu().numpy()
        count[start:start + n] += 1
    return (total / count[:, None]).astype(np.float32)
