"""Small stage-1 caches written the way `jmt embed` and `jmt labels` write them (cache.write_entry,
the cache.FEATURES layout unless told otherwise): random features and masks per stream, and
labels per task with invalid stretches."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import cache
from pipeline.tasks import TASKS

STREAMS = {"visual": 6, "audio": 4}   # name -> width, in the cache's order
PRESENT = {"visual": 0.9, "audio": 0.6}


def write_embeddings(folder: Path, name: str, *, seed: int = 0, n: int = 50, streams: dict[str, int] | None = None,
                     features: dict | None = None, backbones: dict[str, str] | None = None) -> Path:
    """One embeddings entry: per stream (default visual 6-d, ~90 % present; audio 4-d, ~60 %)
    float16 features and a mask; `features` overrides the feature datasets' storage."""
    rng = np.random.default_rng(seed)
    streams = streams or STREAMS
    meta = [{"name": s, "backbone": (backbones or {}).get(s, "test"), "input": "crops" if s == "visual" else "logmel",
             "weights_sha256": "none", "weights": "none", "dim": d} for s, d in streams.items()]
    attrs = {"video": f"{name}.mp4", "fps": 30.0, "n_frames": n, "side": None, "streams": meta}
    with cache.write_entry(folder, name, stage="embed", config={"seed": seed}, attrs=attrs) as f:
        for s, d in streams.items():
            f.create_dataset(cache.stream_key(s, "features"), data=rng.normal(size=(n, d)).astype(np.float16),
                             **(features if features is not None else cache.FEATURES))
            f.create_dataset(cache.stream_key(s, "mask"), data=rng.random(n) < PRESENT.get(s, 0.8))
        f.create_dataset("timestamps", data=np.arange(n) / 30.0)
    return cache.entry_path(folder, name)


def random_labels(task: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Random valid labels of a task for n frames (float32 (n, values))."""
    t = TASKS.get(task)
    if task == "va":
        return rng.uniform(-1, 1, (n, 2)).astype(np.float32)
    if task == "expr":
        return rng.integers(0, t.width, (n, 1)).astype(np.float32)
    return (rng.random((n, t.values)) < 0.3).astype(np.float32)


def write_labels(folder: Path, name: str, splits: dict[str, str], *, seed: int = 0, n: int = 50,
                 invalid: int = 5) -> Path:
    """One labels entry: for each task in `splits` (task -> split) random labels, the first
    `invalid` frames marked invalid."""
    rng = np.random.default_rng(seed + 1000)
    tasks, arrays = [], {}
    for task, split in splits.items():
        t = TASKS.get(task)()
        y = random_labels(task, n, rng)
        y[:invalid] = t.invalid
        arrays[task] = y
        tasks.append({"task": task, "split": split, "annotation": None, "rows_minus_frames": 0,
                      "valid_frames": int(t.valid(y).sum())})
    with cache.write_entry(folder, name, stage="labels", config={"seed": seed},
                           attrs={"video": f"{name}.mp4", "side": None, "fps": 30.0, "n_frames": n, "tasks": tasks}) as f:
        for task, y in arrays.items():
            f.create_dataset(cache.label_key(task), data=y)
    return cache.entry_path(folder, name)


def write_entry(root: Path, name: str, *, split: str = "train", seed: int = 0, n: int = 50,
                splits: dict[str, str] | None = None, **kw) -> None:
    """An entry in both caches under root (`embeddings/`, `labels/`); va in `split` unless
    `splits` (task -> split) says otherwise."""
    write_embeddings(root / "embeddings", name, seed=seed, n=n, **kw)
    write_labels(root / "labels", name, splits or {"va": split}, seed=seed, n=n)
