"""One step of one `jmt tune` trial, run where the engine puts it (this process or a Ray task):
the head trained with the trial's configuration for at most `epochs` epochs, on validation only.

A trial grows rung by rung under ASHA (`study.py`): each rung is trained again from the start
with a larger epoch cap, rather than resumed, because a run keeps only its best checkpoint (no
optimiser state). Training is seeded and deterministic, and the schedules ASHA accepts do not
depend on the cap, so a rung's first epochs are the previous rung's epochs again; the effort
counts them again too (the record says so: `epochs` is what was trained).

With folds, the step trains once per fold (the fold's labels view: pipeline/stage2/folds.py) and
its per-epoch value is the mean over folds of each fold's best validation score so far. Nothing
is kept on disk: the trial's folder is removed once its numbers are returned.
"""

from __future__ import annotations

import math
import shutil
import socket
import sys
import time
from pathlib import Path

from pipeline.config import Params
from pipeline.engine import check_storage, threads_for, torch_threads
from pipeline.stage2.train import train_model


def best_so_far(values: list[float], min_delta: float = 0.0) -> list[float]:
    """After each epoch, the validation score of the checkpoint the run keeps: train.py's rule,
    a score counts as a gain only above the best so far + min_delta. Its last value is what a
    comparison run of this configuration reports on validation."""
    out, best = [], -math.inf
    for v in values:
        if v > best + min_delta:
            best = v
        out.append(best)
    return out


def run_step(runs: list[Params], folder: Path, epochs: int, marker: str | None = None) -> dict:
    """Trains each of `runs` (one per fold; one without folds) for at most `epochs` epochs in
    `folder`; returns the per-epoch value (mean over folds of the best-so-far validation score),
    how the training ended, the epochs trained and the seconds, then removes `folder`."""
    if marker is not None:  # a Ray task: the tune folder must be the one the driver sees
        check_storage(folder.parent, marker)
    t0 = time.time()
    curves, stopped, trained = [], [], 0
    try:
        for i, params in enumerate(runs):
            out = folder / f"fold{i}"
            run = params.updated(train={"epochs": epochs, "out": str(out / "model.pt"), "live_dir": str(out / "live")})
            with torch_threads(threads_for(params.run.compare)):
                result = train_model(run, quiet=True)
            curves.append(best_so_far([row["val_score"] for row in result.history], params.train.min_delta))
            stopped.append(result.stopped)
            trained += len(result.history)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    # a fold that stopped early keeps its best value for the later epochs of the others
    length = max(len(c) for c in curves)
    values = [sum(c[min(e, len(c) - 1)] for c in curves) / len(curves) for e in range(length)]
    return {"values": values, "stopped": "patience" if all(s == "patience" for s in stopped) else "max_epochs",
            "epochs": trained, "seconds": round(time.time() - t0, 3), "node": node()}


def node() -> str:
    """Where the step ran: the Ray node's id inside a Ray task, else this host's name."""
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        return sys.modules["ray"].get_runtime_context().get_node_id()
    return socket.gethostname()
