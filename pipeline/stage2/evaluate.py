"""`jmt evaluate`: the official protocol on the validation and test splits.

CCC on all valid frames of a split concatenated across videos, per axis and their mean (plus
PCC and RMSE), from a checkpoint that must match the cache's backbones. Post-processing is
explicit and reported: clipping to [-1, 1] and a per-video moving average with separate
valence/arousal widths; metrics are given raw and post-processed. Writes per-video
predictions (CSV), Aff-Wild2 submission files for the test split
(`image_location,valence,arousal`) and `metrics/eval.json` (top-level `ccc_valence`,
`ccc_arousal`, `ccc_mean` are the validation split's, post-processed). Each split is also
scored on the frames where both streams are present, where the face is missing and where the
audio is missing (the cache's own masks; `pipeline.stage2.protocol.score_subsets`, the same
function `jmt compare` uses), post-processed predictions.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from pipeline import cache
from pipeline.config import DEFAULT_PARAMS, EvaluateParams, Params, load_params
from pipeline.console import console
from pipeline.device import resolve_device
from pipeline.errors import InputError
from pipeline.stage2.data import corpus_names, load_split
from pipeline.stage2 import checkpoints
from pipeline.stage2.protocol import (MIN_SUBSET_FRAMES, SUBSETS, availability_of, labels_of, predict_split, score,
                                      score_subsets)


def postprocess(pred: np.ndarray, cfg: EvaluateParams) -> np.ndarray:
    """Clip and/or smooth one video's predictions (n, 2), as configured."""
    out = pred.astype(np.float64).copy()
    if cfg.clip:
        out = np.clip(out, -1, 1)
    for k, width in enumerate((cfg.smooth_valence, cfg.smooth_arousal)):
        if width > 1:
            kernel = np.ones(width) / width
            padded = np.pad(out[:, k], (width // 2, width - 1 - width // 2), mode="edge")
            out[:, k] = np.convolve(padded, kernel, mode="valid")
    return out.astype(np.float32)


def _write_predictions(folder: Path, name: str, pred: np.ndarray, labels: np.ndarray, times: np.ndarray) -> None:
    """One CSV per entry; `time` is the frame's own timestamp from the cache (media.frame_times)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["frame", "time", "valence", "arousal", "label_valence", "label_arousal"])
        for i, (p, y, t) in enumerate(zip(pred, labels, times)):
            w.writerow([i, f"{t:.3f}", f"{p[0]:.4f}", f"{p[1]:.4f}", f"{y[0]:.4f}", f"{y[1]:.4f}"])


def write_submission(folder: Path, name: str, pred: np.ndarray) -> None:
    """One Aff-Wild2 test submission file: header, then `<frame:05d>.jpg,v,a` per frame."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["image_location,valence,arousal"]
    lines += [f"{name}/{i + 1:05d}.jpg,{v:.4f},{a:.4f}" for i, (v, a) in enumerate(pred)]
    (folder / f"{name}.txt").write_text("\n".join(lines) + "\n")


def evaluate_model(params: Params, *, checkpoint: Path | None = None, write: bool = True,
                   min_subset_frames: int = MIN_SUBSET_FRAMES) -> dict:
    """Scores a checkpoint on validation and test, and each split's availability subsets with
    at least `min_subset_frames` valid frames; returns (and writes) the metrics."""
    cfg = params.evaluate
    folder = params.path(params.embed.out)
    model, ckpt = checkpoints.load(checkpoint or params.path(params.train.out), folder)
    device = resolve_device(params.train.device)
    model.to(device)
    window = ckpt["params"]["train"]["window"]
    result: dict = {"checkpoint": str(checkpoint or params.train.out), "head": ckpt["head"]["name"],
                    "postprocess": {"clip": cfg.clip, "smooth_valence": cfg.smooth_valence,
                                    "smooth_arousal": cfg.smooth_arousal}}
    out = params.path(cfg.out)
    for split in ("validation", "test"):
        try:
            entries = load_split(folder, split, preload_max_mb=params.train.preload_max_mb,
                                 expected=corpus_names(params, split))
        except InputError as exc:
            if split == "validation" or "lacks" in str(exc):
                raise
            result[split] = None  # no test entries in this cache
            continue
        raw = predict_split(model, entries, window, window // 2, device)
        post = {n: postprocess(p, cfg) for n, p in raw.items()}
        labels = labels_of(entries)
        has_labels = any(m.any() for _, m in labels.values())
        result[split] = {"raw": score(raw, labels, split) if has_labels else None,
                         "post": score(post, labels, split) if has_labels else None,
                         "availability": score_subsets(post, labels, availability_of(entries),
                                                       min_frames=min_subset_frames) if has_labels else None,
                         "entries": len(entries)}
        if write:
            for e in entries:
                with cache.open_entry(e.path) as f:
                    times = f["timestamps"][...]
                _write_predictions(out / "predictions" / split, e.name, post[e.name], labels[e.name][0], times)
                if split == "test":
                    write_submission(out / "submission", e.name, post[e.name])
    val = result["validation"]["post"]
    result.update({k: val[k] for k in ("ccc_valence", "ccc_arousal", "ccc_mean")})
    if write:
        path = params.path(cfg.metrics)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1) + "\n")
    return result


def _print(result: dict) -> None:
    for split in ("validation", "test"):
        if result.get(split) and result[split]["post"]:
            m = result[split]["post"]
            console.print(f"{split:>10}: CCC valence {m['ccc_valence']:.4f}  arousal {m['ccc_arousal']:.4f}  "
                          f"mean {m['ccc_mean']:.4f}  ({m['frames']} frames, {result['head']})", highlight=False)
            for subset, s in (result[split].get("availability") or {}).items():
                what = SUBSETS[subset][0]
                if s["scored"]:
                    console.print(f"{'':>10}  {what}: CCC valence {s['ccc_valence']:.4f}  arousal "
                                  f"{s['ccc_arousal']:.4f}  mean {s['ccc_mean']:.4f}  ({s['frames']} frames, "
                                  f"{s['videos']} videos)", highlight=False)
                else:
                    console.print(f"{'':>10}  {what}: not scored, {s['why']}", highlight=False)


def command(
    params: Annotated[Path, typer.Option(help="Params file.")] = DEFAULT_PARAMS,
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint [default: params train.out].")] = None,
    show: Annotated[bool, typer.Option("--show", help="Only print the last evaluation's metrics.")] = False,
) -> None:
    """Evaluate a checkpoint with the official protocol (stage 2)."""
    p = load_params(params)
    path = p.path(p.evaluate.metrics)
    if show:
        if not path.is_file():
            raise InputError(f"{path}: no evaluation yet; run `jmt evaluate`")
        _print(json.loads(path.read_text()))
        return
    _print(evaluate_model(p, checkpoint=checkpoint))
    console.print(f"metrics -> {path}")
