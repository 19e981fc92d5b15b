"""Windowed sequences over the embeddings cache (`<embed.out>/<entry>.h5`).

Training: fixed-length windows of `window` frames every `hop` frames (plus one window ending
at the last frame); a video shorter than a window is padded, with every mask False on the
padding. Evaluation: every frame is covered by overlapping windows whose predictions are
averaged (`predict_entry`, a batch of windows at a time, so a long video streams through in
bounded memory).

The cache is preloaded into memory when it is smaller than `train.preload_max_mb`. Otherwise
only the masks and labels (11 bytes a frame) are held in memory and the features are read per
window: a window of the contiguous `visual`/`audio` datasets (`cache.FEATURES`) is one `pread`
at its byte offset in the file, from a descriptor each process opens itself (never shared with
DataLoader workers); caches written with chunked, compressed features (before that layout) are
read as h5py slices from a per-process handle. docs/cache.md, "Reading windows", has the numbers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pipeline import cache
from pipeline.errors import InputError

FIELDS = ("audio", "visual", "audio_mask", "visual_mask", "labels", "label_mask")
FEATURES = ("audio", "visual")                                    # (n, D) float16, read per window
SMALL = ("audio_mask", "visual_mask", "labels", "label_mask")       # held in memory for lazy entries too
STATS_MAX_FRAMES = 1 << 18  # feature_stats reads at most about this many frames per modality


@dataclass(frozen=True)
class Span:
    """Where a contiguous (n, width) dataset's values lie in its file."""

    offset: int
    dtype: np.dtype
    width: int


@dataclass
class Entry:
    """One entry's arrays (in memory), or the file to read its features from (lazy)."""

    name: str
    path: Path
    split: str
    n: int
    fps: float
    arrays: dict[str, np.ndarray] | None = None     # every field, preloaded
    small: dict[str, np.ndarray] | None = None      # lazy: the SMALL fields, in memory
    spans: dict[str, Span | None] = field(default_factory=dict)  # lazy: features at a byte offset (None: h5py)
    widths: dict[str, int] = field(default_factory=dict)         # feature -> D
    identity: tuple = ()                            # (device, inode, mtime, size) of the file when loaded
    nbytes: int = 0                                 # bytes of every field, as stored

    def read(self, start: int, stop: int, fields: tuple[str, ...] = FIELDS) -> dict[str, np.ndarray]:
        """Frames [start, stop) of the given fields (features in their stored dtype)."""
        if self.arrays is not None:
            return {k: self.arrays[k][start:stop] for k in fields}
        out = {}
        for k in fields:
            if self.small is not None and k in self.small:
                out[k] = self.small[k][start:stop]
            elif self.spans.get(k) is not None:
                out[k] = _pread_rows(self, self.spans[k], start, min(stop, self.n))
            else:
                out[k] = _handle(self.path)[k][start:stop]
        return out


_HANDLES: dict[tuple[int, Path], h5py.File] = {}
_FDS: dict[tuple[int, Path, tuple], int] = {}


def _handle(path: Path) -> h5py.File:
    """A per-process read handle (a forked DataLoader worker opens its own)."""
    key = (os.getpid(), path)
    if key not in _HANDLES:
        _HANDLES[key] = cache.open_entry(path)
    return _HANDLES[key]


def _identity(st: os.stat_result) -> tuple:
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def _fd(path: Path, identity: tuple) -> int:
    """A per-process descriptor of the very file load_split saw (a replaced file is an error:
    its datasets may lie at other offsets)."""
    key = (os.getpid(), path, identity)
    if key not in _FDS:
        fd = os.open(path, os.O_RDONLY)
        if _identity(os.fstat(fd)) != identity:
            os.close(fd)
            raise InputError(f"{path}: the file changed since the cache was loaded; reload it")
        _FDS[key] = fd
    return _FDS[key]


def _pread_rows(entry: Entry, span: Span, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of a contiguous dataset: one pread -> (rows, width), read-only."""
    rows = max(0, stop - start)
    row_bytes = span.width * span.dtype.itemsize
    buf = os.pread(_fd(entry.path, entry.identity), rows * row_bytes, span.offset + start * row_bytes)
    if len(buf) != rows * row_bytes:
        raise InputError(f"{entry.path}: file ends inside the features (frames {start}-{stop}); re-run jmt embed")
    return np.frombuffer(buf, span.dtype).reshape(rows, span.width)


def _span(ds: h5py.Dataset) -> Span | None:
    """The byte offset of a dataset stored contiguous and unfiltered (cache.FEATURES); None for
    chunked or compressed ones (read through h5py) and for empty ones."""
    if ds.chunks is not None or ds.compression is not None or ds.ndim != 2 or ds.size == 0:
        return None
    offset = ds.id.get_offset()
    return None if offset is None else Span(int(offset), ds.dtype, int(ds.shape[1]))


def _check(name: str, arrays: dict[str, np.ndarray], offset: int = 0) -> None:
    """NaN/inf embeddings are an error naming the entry and the (absolute) frame."""
    for field_ in FEATURES:
        if field_ not in arrays:
            continue
        finite = np.isfinite(arrays[field_]).all(axis=1)
        if not finite.all():
            raise InputError(f"{name}: NaN/inf in the {field_} embeddings at frame "
                             f"{offset + int(np.flatnonzero(~finite)[0])}")


def load_split(folder: Path, split: str, *, preload_max_mb: float,
               expected: list[str] | None = None) -> list[Entry]:
    """The entries of one split in an embeddings folder; errors if there are none, or if any
    of the `expected` entry names (the corpus's) is missing from the cache.

    Each file is opened once: attributes, feature widths and offsets, and the masks and labels.
    Below `preload_max_mb` (bytes of every field of the split) the features are read too
    (kept float16) and checked for NaN/inf; otherwise they are read per window."""
    folder = Path(folder)
    names = cache.entries(folder)
    if not names:
        raise InputError(f"{folder}: no embedding files; run `jmt embed` first")
    entries = []
    for name in names:
        path = cache.entry_path(folder, name)
        with cache.open_entry(path) as f:
            if f.attrs.get("stage") != "embed":
                raise InputError(f"{path}: not an embeddings file (stage {f.attrs.get('stage')!r})")
            if f.attrs["split"] != split:
                continue
            e = Entry(name, path, split, int(f.attrs["n_frames"]), float(f.attrs["fps"]),
                      small={k: f[k][...] for k in SMALL},
                      spans={k: _span(f[k]) for k in FEATURES},
                      widths={k: int(f[k].shape[1]) for k in FEATURES},
                      identity=_identity(path.stat()),
                      nbytes=sum(f[k].size * f[k].dtype.itemsize for k in FIELDS))
            entries.append(e)
    if not entries:
        raise InputError(f"{folder}: no entries of split {split!r} in the cache")
    missing = sorted(set(expected or []) - {e.name for e in entries})
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise InputError(f"{folder}: the cache lacks {len(missing)} {split} entr{'y' if len(missing) == 1 else 'ies'} "
                         f"of the corpus ({shown}); see the stage-1 report.json files or re-run jmt faces/audio/embed")
    preload(entries, preload_max_mb)
    return entries


def preload(entries: list[Entry], max_mb: float) -> bool:
    """Reads the entries' features into memory (float16, checked for NaN/inf) when all their
    fields take at most `max_mb` MB; returns whether they are (now) in memory."""
    if all(e.arrays is not None for e in entries):
        return True
    if sum(e.nbytes for e in entries) > max_mb * 1e6:
        return False
    for e in (e for e in entries if e.arrays is None):
        with cache.open_entry(e.path) as f:
            e.arrays = {**e.small, **{k: f[k][...] for k in FEATURES}}
        e.small = None
        _check(e.name, e.arrays)
    return True


def corpus_names(params, split: str) -> list[str] | None:
    """The corpus's entry names for a split, or None when the corpus is not at hand (a cache
    can be evaluated without its videos)."""
    from pipeline.corpus.entries import load_corpus

    try:
        corpus = load_corpus(params)
    except InputError:
        return None
    return [e.name for e in corpus.entries if e.split == split]


def feature_stats(entries: list[Entry], modality: str,
                  max_frames: int = STATS_MAX_FRAMES) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std (population) of `modality` ('audio' or 'visual') over the frames
    where it is present, across entries (float64 sums). A feature that never varies gets std 1,
    so it passes through unscaled.

    Up to `max_frames` frames in all, every frame is used. Above that (an Aff-Wild2-sized split
    has ~1.6 M), each entry contributes evenly spaced blocks of 256 frames in proportion to its
    length, about `max_frames` frames in all: reading every feature byte of the split would
    cost tens of seconds before the first step, and 2^18 frames pin a mean or std well below the
    spread of a feature."""
    total_frames = sum(e.n for e in entries)
    block = 4096 if total_frames <= max_frames else 256
    n, total, squares = 0, 0.0, 0.0
    for e in entries:
        if total_frames <= max_frames or e.n <= block:
            starts = range(0, e.n, block)
        else:
            k = max(1, round(e.n * max_frames / total_frames / block))
            starts = np.linspace(0, e.n - block, k).round().astype(int)
        for start in starts:
            x = e.read(int(start), int(start) + block, (modality, f"{modality}_mask"))
            v = np.asarray(x[modality][x[f"{modality}_mask"]], np.float64)     # (present frames, D)
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
            found.add((e.widths["audio"], e.widths["visual"]))
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
    """One window's arrays -> tensors of `window` frames, features float32."""
    n = len(arrays["labels"])
    out = {}
    for k, v in arrays.items():
        if n < window:  # short video: pad, masks False on the padding
            v = np.concatenate([v, np.zeros((window - n, *v.shape[1:]), v.dtype)])
        out[k] = torch.as_tensor(np.array(v, dtype=np.float32 if k in FEATURES else v.dtype))
    return out


def read_window(entry: Entry, start: int, window: int) -> dict[str, torch.Tensor]:
    """The window of `window` frames from `start` (padded past the end), lazy reads checked."""
    arrays = entry.read(start, start + window)
    if entry.arrays is None:
        _check(entry.name, arrays, start)
    return _pad(arrays, window)


class WindowDataset(Dataset):
    """Training windows over a list of entries."""

    def __init__(self, entries: list[Entry], window: int, hop: int) -> None:
        self.entries, self.window = entries, window
        self.index = [(i, s) for i, e in enumerate(entries) for s in window_starts(e.n, window, hop)]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        i, start = self.index[k]
        return read_window(self.entries[i], start, self.window)


def loader_workers(entries: list[Entry]) -> int:
    """DataLoader worker processes: none for a preloaded cache (a window is a slice of memory)
    nor on a machine with 2 cores or fewer (a worker then takes CPU from the training step:
    bench/scale.py measured it, docs/measurements.md); else half the cores, at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if all(e.arrays is not None for e in entries) or cores <= 2:
        return 0
    return min(8, cores // 2)


def window_loader(dataset: WindowDataset, *, batch_size: int, generator: torch.Generator,
                  device: torch.device, workers: int | None = None) -> DataLoader:
    """Shuffled training batches: workers from `loader_workers` unless given (kept across
    epochs), pinned memory when training on CUDA. The order depends only on the generator."""
    workers = loader_workers(dataset.entries) if workers is None else workers
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator,
                      drop_last=len(dataset) > batch_size, num_workers=workers,
                      persistent_workers=workers > 0, prefetch_factor=4 if workers else None,
                      pin_memory=device.type == "cuda")


@torch.no_grad()
def predict_entry(model: torch.nn.Module, entry: Entry, window: int, hop: int,
                  device: torch.device, *, drop: str | None = None, batch: int = 32) -> np.ndarray:
    """Per-frame predictions (n, 2) for a whole entry: overlapping windows, averaged.

    Windows are read and run `batch` at a time, so memory holds one batch of windows plus the
    (n, 2) sums whatever the video's length. `drop` ('audio' or 'visual') masks that modality
    everywhere (robustness checks)."""
    total = np.zeros((entry.n, 2), np.float64)
    count = np.zeros(entry.n, np.float64)
    starts = window_starts(entry.n, window, hop)
    for i in range(0, len(starts), batch):
        group = starts[i:i + batch]
        items = [read_window(entry, s, window) for s in group]
        x = {k: torch.stack([it[k] for it in items]).to(device) for k in items[0]}   # (b, window, ...)
        if drop:
            x[f"{drop}_mask"] = torch.zeros_like(x[f"{drop}_mask"])
        out = model(x["audio"], x["visual"], x["audio_mask"], x["visual_mask"]).float().cpu().numpy()  # (b, window, 2)
        for s, o in zip(group, out):
            m = min(window, entry.n - s)
            total[s:s + m] += o[:m]
            count[s:s + m] += 1
    return (total / count[:, None]).astype(np.float32)
