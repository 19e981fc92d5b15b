"""`jmt train`: a fusion head on the cached embeddings, learning every task of `train.tasks`.

Loss: each task's own (pipeline/tasks: va's (1 - CCC_valence) + (1 - CCC_arousal), expr's
cross-entropy, au's binary cross-entropy) over the frames its labels mark valid, weighted by
`train.task_weights` (default 1) and summed. Which entries train and validate: `data.Splits`
(each task on its own splits; an entry any scored task evaluates is never trained on). AdamW or
SGD, warm-up + cosine or plateau schedule, gradient clipping, early stopping on the validation
score: the sum of the tasks' metrics (official protocol, every frame; one task: its metric, e.g.
va's CCC mean; all three: ABAW's multi-task measure CCC mean + EXPR F1 + AU F1), AMP on CUDA,
seeded and deterministic on CPU. The best model is saved with everything needed to rebuild it
(head name and arguments with its streams and tasks, params, cache provenance and fingerprint,
versions: pipeline/stage2/checkpoints.py); metrics and curves go to dvclive.

`train_epoch` is one epoch's loop on its own (no params objects): bench/scale_gpu.py runs the
same loop on machines without this package's config dependencies, which is why
pipeline.config (pydantic) and dvclive are imported only where params are read.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import torch
import typer

from pipeline import cache
from pipeline.console import console, progress
from pipeline.device import resolve_device
from pipeline.errors import InputError
from pipeline.stage2 import checkpoints
from pipeline.stage2.data import (CachedEntry, WindowDataset, feature_stats, load_splits, preload, stream_widths,
                                  to_device, valid_key, window_loader)
from pipeline.stage2.heads import build_head, count_parameters
from pipeline.stage2.protocol import score_split
from pipeline.stage2.windows import inference_hop
from pipeline.tasks import Task, tasks_of

if TYPE_CHECKING:
    from pipeline.config import ModelParams, Params

HEAD_ONLY = {"aggregation": "jmt", "iterations": "rjca"}


def head_kwargs(model: ModelParams, streams: dict[str, int], tasks: list[str]) -> dict:
    """The one place that maps `model` params (and the cache's streams, the run's tasks) to a
    head's constructor arguments."""
    kwargs = {"streams": dict(streams), "tasks": list(tasks), "d_model": model.d_model,
              "temporal": model.temporal, "heads": model.heads, "layers": model.layers,
              "dropout": model.dropout, "temporal_dropout": model.temporal_dropout}
    for key, head in HEAD_ONLY.items():
        if model.fusion == head:
            kwargs[key] = getattr(model, key)
    return kwargs


@dataclass
class Objective:
    """A run's training loss: each task's loss over its valid frames, times its weight, summed;
    `states` hold what a task's loss took from the training split (class weights, pos_weight)."""

    tasks: dict[str, Task]
    weights: dict[str, float] = field(default_factory=dict)
    states: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def of(cls, tasks: dict[str, Task], weights: dict[str, float], train: list[CachedEntry]) -> Objective:
        """The objective with each task's loss state from the training entries' valid labels."""
        states = {}
        for name, task in tasks.items():
            rows = [e.read(0, e.n, (cache.label_key(name), valid_key(name))) for e in train]
            labels = np.concatenate([r[cache.label_key(name)][r[valid_key(name)]] for r in rows]) if rows else \
                np.zeros((0, task.values), np.float32)
            states[name] = task.loss_state(labels)
        return cls(tasks, dict(weights), states)

    def loss(self, pred: dict[str, torch.Tensor], batch: dict) -> torch.Tensor | None:
        """The weighted sum over tasks (those with enough valid frames); None when no task has."""
        total = None
        for name, task in self.tasks.items():
            term = task.loss(pred[name], batch["labels"][name], batch["valid"][name], self.states.get(name, {}))
            if term is None:
                continue
            term = self.weights.get(name, 1.0) * term
            total = term if total is None else total + term
        return total

    def describe(self) -> dict:
        """The weights and loss states, JSON-able (run.json)."""
        return {name: {"weight": self.weights.get(name, 1.0),
                       **{k: [round(float(x), 6) for x in v.tolist()] for k, v in self.states.get(name, {}).items()}}
                for name in self.tasks}


def drop_streams(masks: dict[str, torch.Tensor], p: float, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Modality dropout: each window (row of the (B, T) masks, True = present) loses, with
    probability p, one of its N streams on all its frames, each with chance 1/N; the head then
    sees its learned "missing" vector there, as at a stretch without a face or audio."""
    names = list(masks)
    n = len(masks[names[0]])
    drop = torch.rand(n, generator=generator) < p
    which = torch.randint(len(names), (n,), generator=generator)
    return {s: m & ~(drop & (which == i)).to(m.device)[:, None] for i, (s, m) in enumerate(masks.items())}


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.Generator().manual_seed(seed)


class Schedule:
    """The learning-rate schedule, stepped after every batch and after every epoch.

    warmup_plateau: linear warm-up over `warmup_epochs`, then the lr is halved whenever the
    validation CCC mean has not improved for `lr_patience` epochs; nothing ties it to a fixed
    epoch count, so early stopping, not the schedule, decides when a run ends (the comparison's
    protocol). warmup_cosine: warm-up, then a cosine decay to 0 at `epochs` (every run then
    peaks near the last epoch). plateau: the halving alone. none: a constant lr.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, cfg, steps_per_epoch: int) -> None:
        self.kind, self.opt = cfg.schedule, optimizer
        self.base = [g["lr"] for g in optimizer.param_groups]
        self.warm = cfg.warmup_epochs * steps_per_epoch if cfg.schedule.startswith("warmup") else 0
        self.total, self.step_no = cfg.epochs * steps_per_epoch, 0
        self.plateau = (torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=0.5, patience=cfg.lr_patience)
            if cfg.schedule in ("plateau", "warmup_plateau") else None)
        self._set(self._factor())

    def _factor(self) -> float | None:
        if self.step_no < self.warm:
            return (self.step_no + 1) / self.warm
        if self.kind == "warmup_cosine":
            return 0.5 * (1 + math.cos(math.pi * (self.step_no - self.warm) / max(1, self.total - self.warm)))
        return 1.0 if self.step_no == self.warm and self.warm else None  # end of warm-up: full lr

    def _set(self, factor: float | None) -> None:
        if factor is not None:
            for group, base in zip(self.opt.param_groups, self.base):
                group["lr"] = base * factor

    def batch(self) -> None:
        """After an optimiser step."""
        self.step_no += 1
        self._set(self._factor())

    def epoch(self, val_ccc: float) -> None:
        """After an epoch's validation (plateau schedules, once warm-up is over)."""
        if self.plateau is not None and self.step_no >= self.warm:
            self.plateau.step(val_ccc)

    @property
    def lr(self) -> float:
        return float(self.opt.param_groups[0]["lr"])


@dataclass
class EpochStats:
    """One pass of `train_epoch`: mean loss, optimiser steps, frames, and where the time went
    (waiting for the next batch, moved to the device, vs the step itself), in seconds."""

    loss: float
    steps: int
    frames: int
    load_s: float
    compute_s: float
    first_step_at: float | None  # time.time() when the first optimiser step had finished


def train_epoch(model: torch.nn.Module, loader, opt: torch.optim.Optimizer, objective: Objective, *,
                device: torch.device, amp: bool, scaler: torch.amp.GradScaler, sched: Schedule | None = None,
                grad_clip: float = 0.0, modality_dropout: float = 0.0,
                generator: torch.Generator | None = None, max_steps: int | None = None) -> EpochStats:
    """One training epoch over `loader` (or its first `max_steps` batches): the objective's
    loss, AMP when `amp` (CUDA), gradient clipping, the schedule stepped after every batch.
    Batches where no task has enough valid frames are skipped."""
    model.train()
    losses: list[float] = []
    frames, load_s, compute_s, first = 0, 0.0, 0.0, None
    t = time.perf_counter()
    for i, batch in enumerate(loader):
        batch = to_device(batch, device)
        t1 = time.perf_counter()
        load_s += t1 - t
        if modality_dropout > 0:
            batch["masks"] = drop_streams(batch["masks"], modality_dropout, generator)
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            pred = model(batch["streams"], batch["masks"])
        loss = objective.loss(pred, batch)
        if loss is not None:
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if grad_clip > 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            scaler.step(opt)
            scaler.update()
            if sched is not None:
                sched.batch()
            losses.append(float(loss.detach()))  # also waits for the device: the step is done
            frames += int(next(iter(batch["masks"].values())).numel())   # B * T
            first = first or time.time()
        t = time.perf_counter()
        compute_s += t - t1
        if max_steps is not None and i + 1 >= max_steps:
            break
    return EpochStats(float(np.mean(losses)) if losses else float("nan"), len(losses), frames,
                      load_s, compute_s, first)


@dataclass
class TrainResult:
    checkpoint: Path
    best_epoch: int
    best: dict
    history: list[dict]
    stopped: str          # "patience" (early stopping) or "max_epochs" (still improving at the max)
    parameters: int
    seconds: float
    frames_per_s: float
    # seconds: waiting for batches (load), training steps (compute), validation passes; when
    # the first step finished (time.time()); DataLoader workers; optimiser steps
    timing: dict = field(default_factory=dict)
    left_out: list[dict] = field(default_factory=list)   # entries in a training split never trained on, and why
    objective: dict = field(default_factory=dict)        # each task's loss weight and loss state


def train_model(params: Params, *, quiet: bool = False, max_steps: int | None = None) -> TrainResult:
    """Trains params.model on the caches params point at, for params.train.tasks; saves the
    best checkpoint.

    `max_steps` caps the batches of each epoch (benches time a slice of an epoch)."""
    from dvclive import Live

    cfg, mcfg = params.train, params.model
    t0 = time.time()
    gen = seed_everything(cfg.seed)
    folder = params.path(params.embed.out)
    tasks = tasks_of(cfg.tasks, params.tasks)
    # validation entries are read into memory (if small enough) at the first validation
    splits = load_splits(params, cfg.tasks)
    if not splits.train:
        raise InputError(f"{params.path(params.labels.out)}: no training entries for tasks {', '.join(cfg.tasks)}")
    for t in cfg.tasks:
        if not splits.validation[t]:
            raise InputError(f"{params.path(params.labels.out)}: task {t} has no validation entries")
    val_entries = splits.union("validation")
    streams = stream_widths(splits.train + val_entries)
    # which cache the model learned from: recorded content hashes, not a re-read of the data
    provenance = {**checkpoints.provenance(folder), "fingerprint": cache.folder_fingerprint(folder),
                  "labels_fingerprint": cache.folder_fingerprint(params.path(params.labels.out))}
    device = resolve_device(cfg.device)
    model = build_head(mcfg.fusion, **head_kwargs(mcfg, streams, cfg.tasks))
    if mcfg.standardize:  # stored as buffers: evaluate and predict reuse the training split's statistics
        model.set_input_stats({s: feature_stats(splits.train, s) for s in sorted(streams)})
    model = model.to(device)
    objective = Objective.of(tasks, cfg.task_weights, splits.train)
    loader = window_loader(WindowDataset(splits.train, cfg.window, cfg.hop), batch_size=cfg.batch_size,
                           generator=gen, device=device)
    if cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                              weight_decay=cfg.weight_decay)
    sched = Schedule(opt, cfg, len(loader))
    amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    out = params.path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    best, best_epoch, history, stale = -math.inf, -1, [], 0
    timing = {"started_at": t0, "first_step_at": None, "load_s": 0.0, "compute_s": 0.0, "validation_s": 0.0,
              "steps": 0, "frames": 0, "workers": loader.num_workers}
    live = Live(dir=str(params.path(cfg.live_dir)), save_dvc_exp=False, dvcyaml=None)
    try:
        live.log_params({"fusion": mcfg.fusion, "seed": cfg.seed, "tasks": ",".join(cfg.tasks)})
        with progress(transient=quiet) as bar:
            task = bar.add_task(f"train {mcfg.fusion}", total=cfg.epochs)
            for epoch in range(cfg.epochs):
                ep = train_epoch(model, loader, opt, objective, device=device, amp=amp, scaler=scaler, sched=sched,
                                 grad_clip=cfg.grad_clip, modality_dropout=cfg.modality_dropout, generator=gen,
                                 max_steps=max_steps)
                timing["first_step_at"] = timing["first_step_at"] or ep.first_step_at
                for k in ("load_s", "compute_s"):
                    timing[k] += getattr(ep, k)
                timing["steps"] += ep.steps
                timing["frames"] += ep.frames
                v0 = time.time()
                preload(val_entries, cfg.preload_max_mb)
                val = score_split(model, splits.validation, tasks, cfg.window, inference_hop(cfg.window), device)
                timing["validation_s"] += time.time() - v0
                sched.epoch(val["score"])
                row = {"epoch": epoch, "train_loss": ep.loss, "lr": sched.lr, "val_score": val["score"],
                       **{f"val_{t}_{k}": val[t][k] for t, task_ in tasks.items() for k in task_.metrics}}
                history.append(row)
                for k, v in row.items():
                    if k != "epoch":
                        live.log_metric(k, v)
                live.next_step()
                if val["score"] > best + cfg.min_delta:
                    best, best_epoch, stale = val["score"], epoch, 0
                    checkpoints.save(out, model=model, params=params.model_dump(), cache_provenance=provenance,
                                     versions=cache.versions(), epoch=epoch, validation=val)
                else:
                    stale += 1
                bar.update(task, advance=1, description=f"train {mcfg.fusion} val {val['score']:.3f}")
                if stale >= cfg.patience:
                    break
    finally:
        live.end()
    seconds = time.time() - t0
    stopped = "patience" if stale >= cfg.patience else "max_epochs"
    step_time = timing["load_s"] + timing["compute_s"]
    result = TrainResult(out, best_epoch, history[best_epoch], history, stopped, count_parameters(model),
                         seconds, timing["frames"] / step_time if step_time else 0.0, timing,
                         splits.left_out, objective.describe())
    if not quiet:
        how = "early stopping" if stopped == "patience" else "the epoch limit, still improving"
        what = " + ".join(f"{t} {tasks[t].metric}" for t in tasks)
        console.print(f"[green]train[/] {mcfg.fusion}: best validation {what} {best:.4f} at epoch "
                      f"{best_epoch} ({len(history)} epochs, ended by {how}, {seconds:.0f} s; waiting for data "
                      f"{timing['load_s'] / step_time if step_time else 0:.1%} of step time) -> {out}",
                      highlight=False)
        for row in splits.left_out:
            console.print(f"  left out of training: {row['entry']}: {row['why']}", highlight=False)
    return result


def command(params: Annotated[Path, typer.Option(help="Params file.")] = Path("params.yaml")) -> None:
    """Train the fusion head on the cached embeddings (stage 2)."""
    from pipeline.config import load_params

    result = train_model(load_params(params))
    console.print(json.dumps(result.best))
