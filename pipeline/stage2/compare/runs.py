"""`jmt compare`'s runs: one (head, seed) trained and evaluated in its folder, reused when its key
matches.

Per run, in `<compare.runs>/<head>-seed<seed>/` (`only:<stream>` -> `only_<stream>-seed<seed>`):
the best checkpoint, every task's post-processed outputs for every validation and test entry
under every robustness condition (`full`, and `no_<stream>`: that stream masked everywhere; the
same trained model, nothing retrained) in `predictions.npz`, and `run.json` (scores, training
history, timing, the entries left out of training and why, the run's key). The key hashes
everything that decides the run's numbers: the head's params, the train params (tasks and seed
included), the tasks' options, the embeddings and labels caches' fingerprints (content hashes
recorded with each entry), the stage-2 training code and the torch version. A run whose folder
holds the same key is reused, not recomputed; a run is written to a temporary folder and
renamed when complete, so an interrupted comparison resumes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.config import Params
from pipeline.device import resolve_device
from pipeline.engine import check_storage, threads_for, torch_threads
from pipeline.stage2 import checkpoints
from pipeline.stage2.data import Splits, load_splits
from pipeline.stage2.causal import predict_split
from pipeline.stage2.protocol import conditions_of, labels_of, score, task_outputs
from pipeline.stage2.train import train_model
from pipeline.tasks import tasks_of

SPLITS = ("validation", "test")
RUN_FIELDS = ("key", "epochs", "best_epoch", "stopped", "scores", "history")  # a run.json lacking one is redone
# The code whose change changes a run's numbers (compare/ and the report are not in it).
_STAGE2 = Path(__file__).resolve().parent.parent
_PIPELINE = _STAGE2.parent
TRAINING_CODE = sorted([*_STAGE2.glob("heads/*.py"), *(_STAGE2 / f for f in (
    "data.py", "layers.py", "protocol.py", "train.py")), *(_PIPELINE / "tasks").glob("*.py"), _PIPELINE / "metrics.py"])
CAUSAL_CODE = _STAGE2 / "causal.py"  # in a run's key only for compare.protocol: causal


def files_fingerprint(paths: list[Path], root: Path | None = None) -> str:
    """sha256 over the names (relative to root) and bytes of files, in the given order."""
    h = hashlib.sha256()
    for path in paths:
        h.update(str(path.relative_to(root) if root else path.name).encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def folder_name(head: str, seed: int) -> str:
    """A run's folder: `<head>-seed<seed>`, `only:<stream>` written `only_<stream>`."""
    return f"{head.replace(':', '_')}-seed{seed}"


def run_params(params: Params, head: str, seed: int, folder: Path) -> Params:
    """params with model.fusion = head, train.seed = seed, outputs inside the run folder."""
    return params.updated(model={"fusion": head},
                          train={"seed": seed, "out": str(folder / "model.pt"), "live_dir": str(folder / "live")})


def shared_params(params: Params) -> dict:
    """The model/train/task params every run of a comparison shares (not the head, the seed or
    output paths)."""
    return {"model": params.model.model_dump(exclude={"fusion"}),
            "train": params.train.model_dump(exclude={"seed", "out", "live_dir", "preload_max_mb"}),
            "tasks": params.tasks.model_dump(),
            "threads_per_run": threads_for(params.run.compare)}


def run_key(params: Params, head: str, seed: int, fingerprints: dict[str, str]) -> str:
    """The hash that decides whether a stored (head, seed) run can be reused."""
    train = params.train.model_dump(exclude={"out", "live_dir", "preload_max_mb"})
    what = {"model": {**params.model.model_dump(), "fusion": head}, "train": {**train, "seed": seed},
            "tasks": params.tasks.model_dump(),
            "threads": threads_for(params.run.compare),  # the last bits depend on it (CPU)
            "torch": torch.__version__, **fingerprints}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def load_run(folder: Path, key: str) -> dict | None:
    """A finished run with this key, or None."""
    try:
        info = json.loads((folder / "run.json").read_text())
    except (OSError, ValueError):
        return None
    if (info.get("key") != key or not all(k in info for k in RUN_FIELDS) or not (folder / "model.pt").is_file()
            or not (folder / "predictions.npz").is_file()):
        return None
    return info


def load_predictions(folder: Path) -> dict[tuple[str, str], dict[str, dict[str, np.ndarray]]]:
    """(split, condition) -> entry name -> task -> outputs (n, width) of one run folder."""
    out: dict = {}
    with np.load(folder / "predictions.npz") as z:
        for k in z.files:
            split, condition, name, task = k.split("/", 3)
            out.setdefault((split, condition), {}).setdefault(name, {})[task] = z[k]
    return out


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
            raw = predict_split(model, entries, window, window // 2, device, tasks, drop=drop,
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
