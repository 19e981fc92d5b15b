"""`jmt evaluate`: the official protocol, per task, on the validation and test splits.

For each task the checkpoint predicts (its `train.tasks`), the task's metrics on all valid
frames of the task's own split concatenated across videos (va: CCC per axis and their mean, with
PCC and RMSE; expr: macro F1 over the 8 classes and accuracy; au: mean F1 over the 12 AUs at
0.5, with each AU's F1), from a checkpoint whose streams must match the cache's. Each task's
outputs are scored as they come (`raw`: none, softmax, sigmoid) and after its explicit,
reported post-processing options (`post`: va's clipping and smoothing, `tasks.va`); au with
`tasks.au.tune_thresholds` also reports `f1_tuned`, per-AU thresholds chosen on the validation
split only (applied to test as they are; the validation figure is optimistic and says so).
Each split is also scored on the frames where every stream is present and where each stream is
missing (`no_<stream>`, the cache's own masks; `protocol.score_subsets`, the function `jmt
compare` uses).

Writes per-video predictions (CSV: every task's outputs and labels), the challenge's submission
files for the test split (`submission/<task>/<entry>.txt`: `image_location,valence,arousal`;
`image_location,Neutral,...,Other` with the class index; `image_location,AU1,...,AU26` with 0/1)
and `metrics/eval.json`: per split (`validation`, `test`), `score` (the sum of the tasks' main
metrics) and per task its raw, post-processed and availability blocks with the post-processed
metrics also beside them, so each column `dvc exp show` makes names its split
(`validation.score`, `validation.va.ccc_mean`, `test.va.ccc_mean`).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Annotated, Any, Mapping

import numpy as np
import typer

from pipeline import cache
from pipeline.config import DEFAULT_PARAMS, Params, load_params
from pipeline.console import console
from pipeline.device import resolve_device
from pipeline.errors import InputError
from pipeline.stage2 import checkpoints
from pipeline.stage2.causal import protocol_paths
from pipeline.stage2.data import CachedEntry, load_splits, preload
from pipeline.stage2.protocol import availability_of, labels_of, score, score_subsets, subsets_of
from pipeline.stage2.windows import PROTOCOLS, inference_hop, predict_split
from pipeline.tasks import Task, tasks_of

SPLITS = ("validation", "test")


def anything_present(present: Mapping[str, Any]) -> Any:
    """Where at least one stream is present: a bool (n,) array from `{stream: (n,) masks}`, or a
    bool from `{stream: bool}` (one frame). The one rule of "knowing nothing": a frame with no
    stream present has no input at all, so its outputs are left blank (predict's CSV cells, null
    in live's JSON, no point or highlighted class in the overlay), never a confident-looking value."""
    values = [np.asarray(m, bool) for m in present.values()]
    if not values:
        return False
    return np.logical_or.reduce(values) if values[0].ndim else bool(any(values))


def write_predictions(path: Path, tasks: dict[str, Task], outputs: dict[str, np.ndarray], times: np.ndarray,
                      labels: dict[str, np.ndarray] | None = None, extra: dict[str, list[str]] | None = None,
                      known: np.ndarray | None = None) -> None:
    """One per-frame CSV: frame, time (the frame's own timestamp from the cache), `extra`
    columns, then every task's columns (its outputs, and its labels when given). `known`: (n,)
    bool, the frames with any stream present (`anything_present`); the others' output cells are
    left empty."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns: dict[str, list[str]] = {"frame": [str(i) for i in range(len(times))],
                                     "time": [f"{t:.3f}" for t in times], **(extra or {})}
    for name, task in tasks.items():
        table = task.table(outputs[name], None if labels is None else labels[name])
        if known is not None:
            table = {col: [v if k else "" for v, k in zip(vals, known)] for col, vals in table.items()}
        columns.update(table)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(columns))
        w.writerows(zip(*columns.values()))


def write_submission(folder: Path, name: str, task: Task, outputs: np.ndarray) -> None:
    """One challenge submission file: header, then `<name>/<frame:05d>.jpg,<values>` per frame."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["image_location," + ",".join(task.submission)]
    lines += [f"{name}/{i + 1:05d}.jpg,{row}" for i, row in enumerate(task.submission_rows(outputs))]
    (folder / f"{name}.txt").write_text("\n".join(lines) + "\n")


def _score_task(task: Task, raw: dict[str, np.ndarray], post: dict[str, np.ndarray], entries: list[CachedEntry],
                split: str, min_subset_frames: int) -> dict | None:
    """One task on one split: raw and post-processed metrics and the availability subsets."""
    labels = labels_of(entries, task.name)
    if not any(m.any() for _, m in labels.values()):
        return None  # unlabelled (an Aff-Wild2 test split)
    return {"raw": score(raw, labels, task, split), "post": score(post, labels, task, split),
            "availability": score_subsets(post, labels, availability_of(entries), task, min_frames=min_subset_frames),
            "entries": len(entries)}


def _tune(task: Task, result: dict, post: dict[str, dict[str, np.ndarray]], splits) -> None:
    """au with tune_thresholds: per-AU thresholds from the validation split's frames, reported as
    f1_tuned on validation (optimistic: tuned there) and on test (thresholds as they are)."""
    val = labels_of(splits.validation[task.name], task.name)
    p = np.concatenate([post["validation"][n][task.name][val[n][1]] for n in val])
    y = np.concatenate([val[n][0][val[n][1]] for n in val])
    thresholds = task.tune(p, y)
    result["validation"][task.name]["post"]["f1_tuned"] = task.score_at(p, y, thresholds)
    result["validation"][task.name]["thresholds"] = [float(t) for t in thresholds]
    result["validation"][task.name]["thresholds_note"] = "tuned on this split: optimistic here"
    test = result.get("test") or {}
    if test.get(task.name):
        lab = labels_of(splits.test[task.name], task.name)
        pt = np.concatenate([post["test"][n][task.name][lab[n][1]] for n in lab])
        yt = np.concatenate([lab[n][0][lab[n][1]] for n in lab])
        test[task.name]["post"]["f1_tuned"] = task.score_at(pt, yt, thresholds)


def evaluate_model(params: Params, *, checkpoint: Path | None = None, write: bool = True,
                   min_subset_frames: int | None = None) -> dict:
    """Scores a checkpoint on validation and test, every task it predicts, and each split's
    availability subsets with at least `min_subset_frames` valid frames (default:
    compare.min_subset_frames, the threshold `jmt compare` applies); returns (and writes) the
    metrics."""
    if min_subset_frames is None:
        min_subset_frames = params.compare.min_subset_frames
    folder = params.path(params.embed.out)
    path = checkpoint or params.path(params.train.out)
    ckpt = checkpoints.read(path)   # read, never executed
    ckpt.check_cache(folder)
    model = ckpt.build()
    device = resolve_device(params.train.device)
    model.to(device)
    names = list(model.tasks)
    tasks = tasks_of(names, params.tasks)  # post-processing options: this run's params
    splits = load_splits(params, names, preload_max_mb=0)
    result: dict = {"checkpoint": str(checkpoint or params.train.out), "head": ckpt.head,
                    "tasks": names, "streams": list(model.streams), "protocol": params.evaluate.protocol,
                    "postprocess": {t: tasks[t].options.as_dict() for t in names}}
    out = params.path(params.evaluate.out)
    post_all: dict[str, dict] = {}
    for split in SPLITS:
        by_task = splits.of(split)
        entries = splits.union(split)
        if not entries:
            if split == "validation":
                raise InputError(f"{params.path(params.labels.out)}: no validation entries for {', '.join(names)}")
            result[split] = None  # no test entries in this cache
            continue
        preload(entries, params.train.preload_max_mb)
        raw = predict_split(model, entries, ckpt.window, inference_hop(ckpt.window), device, tasks,
                            protocol=params.evaluate.protocol)
        post = {n: {t: tasks[t].postprocess(p[t]) for t in names} for n, p in raw.items()}
        post_all[split] = post
        result[split] = {"entries": len(entries)}
        for t in names:
            if by_task[t]:
                own = [e.name for e in by_task[t]]
                result[split][t] = _score_task(tasks[t], {n: raw[n][t] for n in own},
                                               {n: post[n][t] for n in own}, by_task[t], split, min_subset_frames)
        if write:
            members = {t: {e.name for e in by_task[t]} for t in names}
            for e in entries:
                with cache.open_entry(e.path) as f:
                    times = f["timestamps"][...]
                labels = {t: e.read(0, e.n, (cache.label_key(t),))[cache.label_key(t)] for t in names}
                write_predictions(out / "predictions" / split / f"{e.name}.csv", tasks, post[e.name], times, labels)
                if split == "test":
                    for t in names:
                        if e.name in members[t]:
                            write_submission(out / "submission" / t, e.name, tasks[t], post[e.name][t])
    for t in names:
        if getattr(tasks[t].options, "tune_thresholds", False) and result["validation"].get(t):
            _tune(tasks[t], result, post_all, splits)
    for split in SPLITS:  # the headline, named by its split (`dvc exp show`: validation.score, test.va.ccc_mean)
        block = result[split]
        if block:
            scored = [t for t in names if block.get(t)]
            for t in scored:
                block[t].update({k: block[t]["post"][k] for k in tasks[t].metrics})
            block["score"] = sum(block[t]["post"][tasks[t].metric] for t in scored)
    if write:
        path = params.path(params.evaluate.metrics)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1) + "\n")
    return result


def _print(result: dict) -> None:
    tasks = tasks_of(result.get("tasks", ["va"]))
    subsets = subsets_of(result.get("streams", []))
    for split in SPLITS:
        for name, task in tasks.items():
            r = (result.get(split) or {}).get(name)
            if not r:
                continue
            m = r["post"]
            values = "  ".join(f"{k} {m[k]:.4f}" for k in task.metrics)
            tuned = f"  f1_tuned {m['f1_tuned']:.4f}" if "f1_tuned" in m else ""
            console.print(f"{split:>10} {name}: {values}{tuned}  ({m['frames']} frames, {result['head']})",
                          highlight=False)
            for subset, s in (r.get("availability") or {}).items():
                what = subsets.get(subset, subset)
                if s["scored"]:
                    console.print(f"{'':>10}  {what}: " + "  ".join(f"{k} {s[k]:.4f}" for k in task.metrics)
                                  + f"  ({s['frames']} frames, {s['videos']} videos)", highlight=False)
                else:
                    console.print(f"{'':>10}  {what}: not scored, {s['why']}", highlight=False)
    for split in SPLITS:
        block = result.get(split) or {}
        if len(tasks) > 1 and "score" in block:
            console.print(f"{split:>10} score (sum of the tasks' metrics): {block['score']:.4f}", highlight=False)


def command(
    params: Annotated[Path, typer.Option(help="Params file.")] = DEFAULT_PARAMS,
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint (default: params train.out).")] = None,
    show: Annotated[bool, typer.Option("--show", help="Only print the last evaluation's metrics.")] = False,
    protocol: Annotated[str | None, typer.Option(
        help="offline | causal (default: evaluate.protocol). Another than the params' writes "
             "<metrics>-<protocol>.json and <out>-<protocol>/.")] = None,
) -> None:
    """Evaluate a checkpoint with the official protocol, every task it predicts (stage 2)."""
    p = load_params(params)
    if protocol is not None and protocol not in PROTOCOLS:
        raise InputError(f"--protocol {protocol}: one of {', '.join(PROTOCOLS)}")
    if protocol and protocol != p.evaluate.protocol:
        p = p.updated(evaluate={"protocol": protocol, **protocol_paths(
            {"metrics": p.evaluate.metrics, "out": p.evaluate.out}, protocol)})
    path = p.path(p.evaluate.metrics)
    if show:
        if not path.is_file():
            raise InputError(f"{path}: no evaluation yet; run `jmt evaluate`")
        _print(json.loads(path.read_text()))
        return
    _print(evaluate_model(p, checkpoint=checkpoint))
    console.print(f"metrics -> {path}")
