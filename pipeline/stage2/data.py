"""Windowed sequences over the stage-1 caches: each entry's streams (`<embed.out>/<entry>.h5`)
and its labels per task (`<labels.out>/<entry>.h5`).

Which entries train, validate and test (`Splits`): in Aff-Wild2 every task has its own splits,
so the rule for a run on tasks T is: an entry trains when it is in the training split of at
least one task of T and in the validation or test split of none of them (an entry a scored task
evaluates is never trained on, not even for another task; run.json lists those left out and
why); each task of T is validated and tested on its own split's entries; an entry trains each
task only on the frames that task labels (an unlabelled task has no valid frame there).

Training: fixed-length windows of `window` frames every `hop` frames (plus one window ending
at the last frame: windows.window_starts); a video shorter than a window is padded, with every
mask False on the padding. Prediction reads its windows here too (`read_window`); how windows
become per-frame outputs (offline, causal, live) is windows.py's.

The cache is preloaded into memory when it is smaller than `train.preload_max_mb`. Otherwise
only the masks and labels (a few bytes a frame) are held in memory and the features are read per
window: a window of a contiguous feature dataset (`cache.FEATURES`) is one `pread` at its byte
offset in the file, from a descriptor each process opens itself (never shared with DataLoader
workers); features stored chunked or compressed are read as h5py slices from a per-process
handle. docs/cache.md, "Reading windows", has the numbers.
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
from pipeline.stage2.windows import window_starts
from pipeline.tasks import TASKS

SPLITS = ("train", "validation", "test")
STATS_MAX_FRAMES = 1 << 18  # feature_stats reads at most about this many frames per stream


def feature_key(stream: str) -> str:
    return cache.stream_key(stream, "features")


def mask_key(stream: str) -> str:
    return cache.stream_key(stream, "mask")


def valid_key(task: str) -> str:
    """An in-memory field: the task's valid-frame mask (from its labels)."""
    return f"valid/{task}"


@dataclass(frozen=True)
class Span:
    """Where a contiguous (n, width) dataset's values lie in its file."""

    offset: int
    dtype: np.dtype
    width: int


@dataclass(eq=False)
class CachedEntry:
    """What stage 2 reads of one entry from the caches (the corpus's entry: `corpus.entries.CorpusEntry`):
    its arrays (in memory), or the file to read its features from (lazy), with its streams (in the
    cache's order) and its split for each task of the run."""

    name: str
    path: Path                                      # the embeddings file
    n: int
    fps: float
    streams: list[str]
    tasks: list[str]                                # the run's tasks (labels of the others are not read)
    splits: dict[str, str]                          # task -> split, for the tasks that list the entry
    arrays: dict[str, np.ndarray] | None = None     # every field, preloaded
    masks_and_labels: dict[str, np.ndarray] | None = None   # lazy: every field but the features, in memory
    spans: dict[str, Span | None] = field(default_factory=dict)  # lazy: features at a byte offset (None: h5py)
    widths: dict[str, int] = field(default_factory=dict)         # stream -> D
    identity: tuple = ()                            # (device, inode, mtime, size) of the file when loaded
    nbytes: int = 0                                 # bytes of every field, as stored

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(feature_key(s) for s in self.streams)

    @property
    def fields(self) -> tuple[str, ...]:
        """Every field a window holds: features, masks, labels, valid masks."""
        return (*self.features, *(mask_key(s) for s in self.streams),
                *(cache.label_key(t) for t in self.tasks), *(valid_key(t) for t in self.tasks))

    def read(self, start: int, stop: int, fields: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """Frames [start, stop) of the given fields (default: all; features in their stored dtype)."""
        fields = self.fields if fields is None else fields
        if self.arrays is not None:
            return {k: self.arrays[k][start:stop] for k in fields}
        out = {}
        for k in fields:
            if self.masks_and_labels is not None and k in self.masks_and_labels:
                out[k] = self.masks_and_labels[k][start:stop]
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
    """A per-process descriptor of the very file load_entries saw (a replaced file is an error:
    its datasets may lie at other offsets)."""
    key = (os.getpid(), path, identity)
    if key not in _FDS:
        fd = os.open(path, os.O_RDONLY)
        if _identity(os.fstat(fd)) != identity:
            os.close(fd)
            raise InputError(f"{path}: the file changed since the cache was loaded; reload it")
        _FDS[key] = fd
    return _FDS[key]


def _pread_rows(entry: CachedEntry, span: Span, start: int, stop: int) -> np.ndarray:
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


def _check(entry: CachedEntry, arrays: dict[str, np.ndarray], offset: int = 0) -> None:
    """NaN/inf embeddings are an error naming the entry, the stream and the (absolute) frame."""
    for stream in entry.streams:
        k = feature_key(stream)
        if k not in arrays:
            continue
        finite = np.isfinite(arrays[k]).all(axis=1)
        if not finite.all():
            raise InputError(f"{entry.name}: NaN/inf in the {stream} embeddings at frame "
                             f"{offset + int(np.flatnonzero(~finite)[0])}")


def streams_of(f: h5py.File) -> list[dict]:
    """An embeddings file's streams, in order: [{name, backbone, input, weights_sha256, dim, ...}]."""
    cache.check_schema(f, "embed")
    return cache.attrs_of(f)["streams"]


def _labels(folder: Path | None, name: str, n: int, tasks: list[str]) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """One entry's splits per task (the tasks its labels file lists) and, for the run's tasks,
    its labels and valid masks (all invalid where the file has no such task, or no labels
    folder is given: `jmt predict`)."""
    splits, arrays = {}, {}
    if folder is None:
        for t in tasks:
            task = TASKS.get(t)()
            arrays[cache.label_key(t)] = task.missing(n)
            arrays[valid_key(t)] = np.zeros(n, bool)
        return splits, arrays
    path = cache.entry_path(folder, name)
    with cache.open_entry(path) as f:
        cache.check_schema(f, "labels")
        if int(f.attrs["n_frames"]) != n:
            raise InputError(f"{path}: {f.attrs['n_frames']} frames but the embeddings have {n}; re-run jmt labels")
        for meta in cache.attrs_of(f)["tasks"]:
            splits[meta["task"]] = meta["split"]
        for t in tasks:
            task = TASKS.get(t)()
            key = cache.label_key(t)
            labels = f[key][...] if key in f else task.missing(n)
            arrays[key], arrays[valid_key(t)] = labels, task.valid(labels)
    return splits, arrays


def load_entries(embeddings: Path, labels: Path | None, tasks: list[str], *, preload_max_mb: float = 0.0,
                 names: list[str] | None = None) -> list[CachedEntry]:
    """Every entry of an embeddings folder (or the `names` given) with its labels for `tasks`
    (`labels` None: none, every frame invalid, no split).

    Each file is opened once: attributes, streams, widths, feature offsets, masks; the labels
    file gives each task's split and labels. Below `preload_max_mb` (bytes of every field) the
    features are read too (kept float16) and checked for NaN/inf; otherwise per window."""
    embeddings = Path(embeddings)
    labels = Path(labels) if labels is not None else None
    have = cache.entries(embeddings)
    if not have:
        raise InputError(f"{embeddings}: no embedding files; run `jmt embed` first")
    lacking = [] if labels is None else sorted(n for n in (names or have) if not cache.entry_path(labels, n).is_file())
    if lacking:
        shown = ", ".join(lacking[:5]) + (" ..." if len(lacking) > 5 else "")
        raise InputError(f"{labels}: no labels for {len(lacking)} entr{'y' if len(lacking) == 1 else 'ies'} of "
                         f"the embeddings cache ({shown}); run `jmt labels` (or see its report.json)")
    entries = []
    for name in names or have:
        path = cache.entry_path(embeddings, name)
        if not path.is_file():
            raise InputError(f"{path}: missing; run `jmt embed` (or see its report.json)")
        with cache.open_entry(path) as f:
            streams = [s["name"] for s in streams_of(f)]
            n = int(f.attrs["n_frames"])
            splits, masks_and_labels = _labels(labels, name, n, tasks)
            masks_and_labels.update({mask_key(s): f[mask_key(s)][...] for s in streams})
            e = CachedEntry(name, path, n, float(f.attrs["fps"]), streams, list(tasks), splits,
                            masks_and_labels=masks_and_labels,
                            spans={feature_key(s): _span(f[feature_key(s)]) for s in streams},
                            widths={s: int(f[feature_key(s)].shape[1]) for s in streams},
                            identity=_identity(path.stat()))
            e.nbytes = (sum(f[k].size * f[k].dtype.itemsize for k in e.features)
                        + sum(a.nbytes for a in masks_and_labels.values()))
        entries.append(e)
    preload(entries, preload_max_mb)
    return entries


def preload(entries: list[CachedEntry], max_mb: float) -> bool:
    """Reads the entries' features into memory (float16, checked for NaN/inf) when all their
    fields take at most `max_mb` MB; returns whether they are (now) in memory."""
    if all(e.arrays is not None for e in entries):
        return True
    if sum(e.nbytes for e in entries) > max_mb * 1e6:
        return False
    for e in (e for e in entries if e.arrays is None):
        with cache.open_entry(e.path) as f:
            e.arrays = {**e.masks_and_labels, **{k: f[k][...] for k in e.features}}
        e.masks_and_labels = None
        _check(e, e.arrays)
    return True


@dataclass
class Splits:
    """The entries a run on some tasks trains, validates and tests on (the rule: module docstring)."""

    tasks: list[str]
    train: list[CachedEntry]
    validation: dict[str, list[CachedEntry]]   # task -> its validation split's entries
    test: dict[str, list[CachedEntry]]         # task -> its test split's entries
    left_out: list[dict]                 # {"entry", "why"}: in a training split but never trained on

    def of(self, split: str) -> dict[str, list[CachedEntry]]:
        """task -> entries of one split (train: the same training entries for every task)."""
        if split == "train":
            return {t: self.train for t in self.tasks}
        return self.validation if split == "validation" else self.test

    def union(self, split: str) -> list[CachedEntry]:
        """Every entry of a split over the tasks, once each, in name order."""
        seen = {e.name: e for entries in self.of(split).values() for e in entries}
        return [seen[n] for n in sorted(seen)]


def split_entries(entries: list[CachedEntry], tasks: list[str]) -> Splits:
    """The run's splits over loaded entries (see the module docstring for the rule)."""
    train, left_out = [], []
    for e in entries:
        trains = [t for t in tasks if e.splits.get(t) == "train"]
        scored = [(t, e.splits[t]) for t in tasks if e.splits.get(t) in ("validation", "test")]
        if trains and scored:
            left_out.append({"entry": e.name, "why": f"train for {', '.join(trains)} but "
                             + ", ".join(f"{s} for {t}" for t, s in scored)
                             + ": never trained on an entry a scored task evaluates"})
        elif trains:
            train.append(e)
    by = {s: {t: [e for e in entries if e.splits.get(t) == s] for t in tasks} for s in ("validation", "test")}
    return Splits(list(tasks), train, by["validation"], by["test"], left_out)


def check_complete(entries: list[CachedEntry], corpus, tasks: list[str]) -> None:
    """Every corpus entry a task of the run lists must be in the caches: an error naming those
    missing (a stage skipped them: its report.json says why), so a run never trains or scores
    silently on part of the corpus. `corpus` None (not at hand): nothing to check."""
    if corpus is None:
        return
    have = {e.name for e in entries}
    wanted = sorted({e.name for e in corpus.entries if any(e.split(t) for t in tasks)})
    missing = [n for n in wanted if n not in have]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise InputError(f"the caches lack {len(missing)} entr{'y' if len(missing) == 1 else 'ies'} of the corpus "
                         f"({shown}); see the stage-1 report.json files or re-run jmt faces/audio/labels/embed")


def corpus_of(params):
    """The corpus params point at, or None when it is not at hand (a cache can be evaluated
    without its videos)."""
    from pipeline.corpus.entries import load_corpus

    try:
        return load_corpus(params)
    except InputError:
        return None


def load_splits(params, tasks: list[str] | None = None, *, preload_max_mb: float | None = None) -> Splits:
    """The run's splits from the caches params point at (tasks default: train.tasks), checked
    against the corpus; the training entries preloaded below train.preload_max_mb, the others
    not yet (`preload` them when first needed)."""
    tasks = list(tasks or params.train.tasks)
    entries = load_entries(params.path(params.embed.out), params.path(params.labels.out), tasks)
    check_complete(entries, corpus_of(params), tasks)
    splits = split_entries(entries, tasks)
    if not splits.train and not any(splits.validation.values()):
        raise InputError(f"{params.path(params.labels.out)}: no entry of the tasks {', '.join(tasks)} "
                         "in any training or validation split")
    preload(splits.train, params.train.preload_max_mb if preload_max_mb is None else preload_max_mb)
    return splits


def feature_stats(entries: list[CachedEntry], stream: str,
                  max_frames: int = STATS_MAX_FRAMES) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std (population) of a stream over the frames where it is present,
    across entries (float64 sums). A feature that never varies gets std 1, so it passes through
    unscaled.

    Up to `max_frames` frames in all, every frame is used. Above that (an Aff-Wild2-sized split
    has ~1.6 M), each entry contributes evenly spaced blocks of 256 frames in proportion to its
    length, about `max_frames` frames in all: reading every feature byte of the split would
    cost tens of seconds before the first step, and 2^18 frames pin a mean or std well below the
    spread of a feature."""
    total_frames = sum(e.n for e in entries)
    block = 4096 if total_frames <= max_frames else 256
    n, total, squares = 0, 0.0, 0.0
    fk, mk = feature_key(stream), mask_key(stream)
    for e in entries:
        if total_frames <= max_frames or e.n <= block:
            starts = range(0, e.n, block)
        else:
            k = max(1, round(e.n * max_frames / total_frames / block))
            starts = np.linspace(0, e.n - block, k).round().astype(int)
        for start in starts:
            x = e.read(int(start), int(start) + block, (fk, mk))
            v = np.asarray(x[fk][x[mk]], np.float64)     # (present frames, D)
            n, total, squares = n + len(v), total + v.sum(0), squares + (v ** 2).sum(0)
    if n == 0:
        raise InputError(f"no frame of the training split has the {stream} stream: cannot standardise it")
    mean = total / n
    std = np.sqrt(np.maximum(squares / n - mean ** 2, 0.0))
    return mean.astype(np.float32), np.where(std > 1e-6, std, 1.0).astype(np.float32)


def stream_widths(entries: list[CachedEntry]) -> dict[str, int]:
    """{stream: width} of the cache, in its order, checked to agree across entries."""
    found = {tuple((s, e.widths[s]) for s in e.streams) for e in entries}
    if len(found) != 1:
        raise InputError(f"the entries' streams or widths differ: {sorted(found)}; re-run jmt embed")
    return dict(found.pop())


def _pad(entry: CachedEntry, arrays: dict[str, np.ndarray], window: int) -> dict[str, dict[str, torch.Tensor]]:
    """One window's arrays -> {streams, masks, labels, valid} of tensors of `window` frames
    (features float32); a short video is padded, every mask False on the padding."""
    def tensor(k: str, dtype=None) -> torch.Tensor:
        v = arrays[k]
        if len(v) < window:
            v = np.concatenate([v, np.zeros((window - len(v), *v.shape[1:]), v.dtype)])
        return torch.as_tensor(np.array(v, dtype=dtype or v.dtype))

    return {"streams": {s: tensor(feature_key(s), np.float32) for s in entry.streams},
            "masks": {s: tensor(mask_key(s)) for s in entry.streams},
            "labels": {t: tensor(cache.label_key(t)) for t in entry.tasks},
            "valid": {t: tensor(valid_key(t)) for t in entry.tasks}}


def read_window(entry: CachedEntry, start: int, window: int) -> dict[str, dict[str, torch.Tensor]]:
    """The window of `window` frames from `start` (padded past the end), lazy reads checked."""
    arrays = entry.read(start, start + window)
    if entry.arrays is None:
        _check(entry, arrays, start)
    return _pad(entry, arrays, window)


def to_device(batch: dict, device: torch.device) -> dict:
    """A (nested) batch of tensors on a device."""
    return {k: to_device(v, device) if isinstance(v, dict) else v.to(device, non_blocking=True)
            for k, v in batch.items()}


class WindowDataset(Dataset):
    """Training windows over a list of entries."""

    def __init__(self, entries: list[CachedEntry], window: int, hop: int) -> None:
        self.entries, self.window = entries, window
        self.index = [(i, s) for i, e in enumerate(entries) for s in window_starts(e.n, window, hop)]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k: int) -> dict[str, dict[str, torch.Tensor]]:
        i, start = self.index[k]
        return read_window(self.entries[i], start, self.window)


def loader_workers(entries: list[CachedEntry]) -> int:
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
