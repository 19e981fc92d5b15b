"""The evaluation protocol: predict every frame of a split (windows.predict_split), then score
each task on all valid frames of its split concatenated across videos (the official ABAW way),
with the task's metric.

Also the one place that slices a split by stream availability, generated from the cache's
streams: `all_streams` (every stream present) and `no_<stream>` for each stream (that stream missing,
whatever the others do; the subsets overlap). What "present" means is stage 1's business
(docs/cache.md: a face found; a voiced frame inside the track). `jmt evaluate` and `jmt compare`
both score those subsets through it, as they score the robustness conditions (`conditions`:
`full`, and `no_<stream>` with that stream masked on every frame)."""

from __future__ import annotations

import numpy as np
import torch

from pipeline import cache
from pipeline.errors import InputError
from pipeline.stage2.data import CachedEntry, mask_key, valid_key
from pipeline.stage2.windows import predict_split
from pipeline.tasks import Task

MIN_SUBSET_FRAMES = 50  # below this a subset's metric is too noisy to report: say so instead
ALL = "all_streams"


def labels_of(entries: list[CachedEntry], task: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per entry, one task's (labels (n, values), valid (n,)) (held in memory: no feature is read)."""
    out = {}
    for e in entries:
        arrays = e.read(0, e.n, (cache.label_key(task), valid_key(task)))
        out[e.name] = (arrays[cache.label_key(task)], arrays[valid_key(task)])
    return out


def score(preds: dict[str, np.ndarray], labels: dict[str, tuple[np.ndarray, np.ndarray]], task: Task,
          split: str = "split") -> dict[str, float]:
    """A task's metrics over all valid frames of the entries in `labels`, concatenated in their
    order; preds: name -> the task's outputs (n, width)."""
    p = np.concatenate([preds[n][labels[n][1]] for n in labels])
    y = np.concatenate([labels[n][0][labels[n][1]] for n in labels])
    if len(y) < 2:
        raise InputError(f"{split}: no valid {task.name} labels to score (fewer than 2 valid frames)")
    return task.score(p, y)


def task_outputs(preds: dict[str, dict[str, np.ndarray]], task: str) -> dict[str, np.ndarray]:
    """name -> one task's outputs, from name -> task -> outputs."""
    return {n: p[task] for n, p in preds.items()}


def score_split(model: torch.nn.Module, by_task: dict[str, list[CachedEntry]], tasks: dict[str, Task], window: int,
                hop: int, device: torch.device) -> dict[str, dict[str, float]]:
    """Each task's metrics on its own entries of a split (`Splits.validation`), every entry
    predicted once, plus `score`: the sum of the tasks' metrics (early stopping)."""
    union = {e.name: e for entries in by_task.values() for e in entries}
    preds = predict_split(model, [union[n] for n in sorted(union)], window, hop, device, tasks)
    out: dict = {t: score(task_outputs(preds, t), labels_of(by_task[t], t), tasks[t], "validation")
                 for t in tasks}
    out["score"] = sum(out[t][tasks[t].metric] for t in tasks)
    return out


def subsets_of(streams: list[str]) -> dict[str, str]:
    """Availability subset -> what it holds: `all_streams`, then `no_<stream>` per stream."""
    return {ALL: "every stream present", **{f"no_{s}": f"no {s}" for s in streams}}


def conditions_of(streams: list[str]) -> dict[str, str | None]:
    """Robustness condition -> the stream masked on every frame (None: `full`, nothing masked)."""
    return {"full": None, **{f"no_{s}": s for s in streams}}


def availability_of(entries: list[CachedEntry]) -> dict[str, dict[str, np.ndarray]]:
    """subset -> entry name -> frame membership (n,) bool, from the cache's stream masks."""
    streams = entries[0].streams if entries else []
    out: dict[str, dict[str, np.ndarray]] = {s: {} for s in subsets_of(streams)}
    for e in entries:
        present = {s: a.astype(bool) for s, a in
                   zip(e.streams, e.read(0, e.n, tuple(mask_key(s) for s in e.streams)).values())}
        out[ALL][e.name] = np.logical_and.reduce([present[s] for s in e.streams])
        for s in e.streams:
            out[f"no_{s}"][e.name] = ~present[s]
    return out


def restrict(labels: dict[str, tuple[np.ndarray, np.ndarray]],
             frames: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """labels whose valid mask keeps only the given frames (name -> (n,) bool); entries left
    with no valid frame are dropped, so what follows (scoring, resampling videos) sees only
    the videos that have such frames."""
    out = {}
    for name, (y, valid) in labels.items():
        keep = valid & frames[name]
        if keep.any():
            out[name] = (y, keep)
    return out


def score_subsets(preds: dict[str, np.ndarray], labels: dict[str, tuple[np.ndarray, np.ndarray]],
                  availability: dict[str, dict[str, np.ndarray]], task: Task, *,
                  min_frames: int = MIN_SUBSET_FRAMES) -> dict[str, dict]:
    """Per availability subset: valid frames, videos holding them, and the task's metrics over
    those frames of the split concatenated (the official protocol restricted to the subset). A
    subset with fewer than `min_frames` valid frames is not scored: `scored` is False and `why`
    says so."""
    out = {}
    for subset, frames in availability.items():
        sub = restrict(labels, frames)
        n = int(sum(m.sum() for _, m in sub.values()))
        row: dict = {"frames": n, "videos": len(sub), "scored": False}
        if n < min_frames:
            row["why"] = f"{n} valid frames, fewer than {min_frames}"
        else:
            try:
                s = score(preds, sub, task, subset)
                row.update(scored=True, **{k: s[k] for k in task.metrics})
            except ValueError as exc:  # both constant: CCC undefined
                row["why"] = str(exc)
        out[subset] = row
    return out
