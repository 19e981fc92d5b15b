"""One `jmt compare` run executed: a head trained with one seed, then every validation and test
entry predicted under every robustness condition and scored.

This module is where a run's code starts: the run store (`runs.py`) fingerprints the code it
imports, so nothing here may import the store, and anything that cannot change a run's numbers
(tables, reports, keys, folders) lives elsewhere.

Written into a run folder: the best checkpoint `model.pt`, every task's post-processed outputs
for every validation and test entry under every condition (`full`, and `no_<stream>`: that
stream masked everywhere; the same trained model, nothing retrained) in `predictions.npz`, and
`run.json` (scores, training history, timing, the entries left out of training and why, the
run's key). A run is written to a temporary folder and renamed when complete, so an
interrupted comparison resumes.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from pipeline.config import Params
from pipeline.device import resolve_device
from pipeline.engine import check_storage, threads_for, torch_threads
from pipeline.stage2 import checkpoints
from pipeline.stage2.data import Splits, load_splits
from pipeline.stage2.protocol import conditions_of, labels_of, score, task_outputs
from pipeline.stage2.train import train_model
from pipeline.stage2.windows import inference_hop, predict_split
from pipeline.tasks import tasks_of

SPLITS = ("validation", "test")


def run_params(params: Params, head: str, seed: int, folder: Path) -> Params:
    """params with model.fusion = head, train.seed = seed, outputs inside the run folder."""
    return params.updated(model={"fusion": head},
                          train={"seed": seed, "out": str(folder / "model.pt"), "live_dir": str(folder / "live")})


def execute_run(params: Params, head: str, seed: int, folder: Path, key: str, splits: Splits) -> dict:
    """Trains one (head, seed), evaluates it under every condition, writes the run folder."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    run = run_params(params, head, seed, tmp)
    t0 = time.time()
    threads = threads_for(params.run.compare)
    with torch_threads(threads):  # both engines: the same threads give the same numbers
        info = _train_and_score(params, run, tmp, splits)
    info.update({"head": head, "seed": seed, "key": key, "threads": threads, "seconds": round(time.time() - t0, 1)})
    (tmp / "run.json").write_text(json.dumps(info, indent=1) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return info


def _train_and_score(params: Params, run: Params, tmp: Path, splits: Splits) -> dict:
    """Trains `run` into `tmp`, predicts every split under every condition (predictions.npz)
    and scores each task on its own split's entries."""
    trained = train_model(run, quiet=True)
    model, _ = checkpoints.load(tmp / "model.pt", params.path(params.embed.out))
    device = resolve_device(params.train.device)
    model.to(device)
    tasks = tasks_of(params.train.tasks, params.tasks)
    window = params.train.window
    scores: dict = {}
    arrays: dict[str, np.ndarray] = {}
    for split in SPLITS:
        entries = splits.union(split)
        by_task = {t: e for t, e in splits.of(split).items() if e}
        if not entries or not by_task:
            continue
        scores[split] = {}
        for condition, drop in conditions_of(model.streams).items():
            raw = predict_split(model, entries, window, inference_hop(window), device, tasks, drop=drop,
                                protocol=params.compare.protocol)
            post = {n: {t: tasks[t].postprocess(p[t]) for t in tasks} for n, p in raw.items()}
            row = {t: score(task_outputs(post, t), labels_of(by_task[t], t), tasks[t], split) for t in by_task}
            row["score"] = sum(row[t][tasks[t].metric] for t in by_task)
            scores[split][condition] = row
            arrays.update({f"{split}/{condition}/{n}/{t}": p[t] for n, p in post.items() for t in tasks})
    np.savez_compressed(tmp / "predictions.npz", **arrays)
    return {"epochs": len(trained.history), "best_epoch": trained.best_epoch, "stopped": trained.stopped,
            "parameters": trained.parameters, "train_frames_per_s": round(trained.frames_per_s, 1),
            "scores": scores, "history": trained.history, "left_out": trained.left_out,
            "objective": trained.objective}


def remote_run(params: Params, head: str, seed: int, folder: Path, key: str, marker: str) -> dict:
    """One (head, seed) run as a Ray task: reads the splits from the shared caches, then trains
    and evaluates as the local engine does."""
    check_storage(folder.parent, marker)
    return execute_run(params, head, seed, folder, key, load_splits(params))
