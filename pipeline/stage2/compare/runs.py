"""`jmt compare`'s run store: one folder per run, named by what decides the run's numbers.

A run is one head trained with one seed under one configuration (`execute.py` trains and scores
it). It lives in `<compare.runs>/<head>-seed<seed>-<key[:12]>/` (`only:<stream>` written
`only_<stream>`); its run.json holds the whole key. The key (`run_key`) hashes everything that
decides the run's numbers: the head's params, the train params (tasks and seed included), the
tasks' options, the threads per run, the embeddings and labels caches' fingerprints (content
hashes recorded with each entry), the torch version, the prediction protocol when not offline,
and the code the run executes (`code_files`).

The code is found from the imports, not listed by hand: starting at `execute.py`, every module of
`pipeline` that a module imports (at any depth), with two rules. A registry package (the heads',
the tasks') contributes its own `__init__` and only the members the run uses: its head's file and
its tasks' files (with whatever those import, another head's file included), never the ones its
`__init__` registers for other runs, so adding or editing another head leaves the run's key alone.
And the modules in `NOT_NUMERIC` are skipped, each for the reason written there; so is a head
file's `SEARCH_SPACE` (`numeric_source`), which only proposes configurations to `jmt tune`.

So runs of different configurations coexist, a configuration seen before is reused whatever ran
in between, and adding a seed, a head or a configuration trains only what is new. `jmt compare
--gc` removes the runs that no params file names (`garbage`).
"""

from __future__ import annotations

import ast
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.config import Params
from pipeline.engine import threads_for
from pipeline.imports import PACKAGE_ROOT, closure, module_file
from pipeline.stage2.compare.execute import SPLITS
from pipeline.stage2.heads import HEADS
from pipeline.tasks import TASKS

__all__ = ["SPLITS", "code_files", "code_fingerprint", "folder_name", "run_key", "load_run", "load_predictions",
           "planned_runs", "garbage"]

RUN_FIELDS = ("key", "epochs", "best_epoch", "stopped", "scores", "history")  # a run.json lacking one is redone
ENTRY = "pipeline.stage2.compare.execute"  # where a run's code starts
# Imported by a run's code, but unable to change a number: their edits retrain nothing.
NOT_NUMERIC = {
    "pipeline.config": "the params loader: the values it yields are in the key themselves",
    "pipeline.console": "printing",
    "pipeline.errors": "exception classes and messages",
    "pipeline.engine": "where a run executes (local or Ray); its threads per run are in the key",
}
SEARCH_SPACE = "SEARCH_SPACE"  # a head file's search space (`numeric_source`): not in its runs' keys


def _registry_member(cls: type) -> tuple[str, str]:
    """(package, module) of a registered class: its registry's package and its own module."""
    module = cls.__module__
    return module.rpartition(".")[0], module


def code_files(head: str, tasks: list[str] | tuple[str, ...], root: Path = PACKAGE_ROOT) -> list[Path]:
    """The source files whose code a run of `head` on `tasks` executes, in module-name order
    (see the module docstring): found from `execute.py`'s imports under `root`."""
    own = [_registry_member(HEADS.get(head.partition(":")[0])), *(_registry_member(TASKS.get(t)) for t in tasks)]
    registries = {package for package, _ in own}
    wanted = {module for _, module in own}

    def narrow(module: str, found: set[str]) -> set[str]:
        if module in registries:  # a registry importing its members: only this run's (a member's own imports count)
            return {m for m in found if m.rpartition(".")[0] != module or m in wanted}
        return found

    return [module_file(m, root) for m in closure([ENTRY, *wanted], root, skip=NOT_NUMERIC, narrow=narrow)]


def numeric_source(path: Path) -> bytes:
    """A source file's bytes without its top-level `SEARCH_SPACE = ...` assignment (and the blank
    lines right above it): a head's search space proposes configurations for `jmt tune` and the
    configuration a run trains with is in its key already, so editing a space retrains nothing.
    A file without one: its bytes as they are."""
    data = path.read_bytes()
    if SEARCH_SPACE.encode() not in data:
        return data
    lines = data.splitlines(keepends=True)
    drop: set[int] = set()
    for node in ast.parse(data, str(path)).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and any(
                isinstance(t, ast.Name) and t.id == SEARCH_SPACE
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target])):
            first = node.lineno - 1
            while first > 0 and not lines[first - 1].strip():
                first -= 1
            drop.update(range(first, node.end_lineno))
    return b"".join(line for i, line in enumerate(lines) if i not in drop)


def files_fingerprint(paths: list[Path], root: Path | None = None) -> str:
    """sha256 over the names (relative to root) and bytes (`numeric_source`) of files, in the
    given order."""
    h = hashlib.sha256()
    for path in paths:
        h.update(str(path.relative_to(root) if root else path.name).encode() + b"\0")
        h.update(hashlib.sha256(numeric_source(path)).digest())
    return h.hexdigest()


_FINGERPRINTS: dict[tuple[str, tuple[str, ...]], tuple[tuple, str]] = {}  # (head, tasks) -> (stamps, fingerprint)


def _stamps(files: list[Path]) -> tuple:
    return tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)


def code_fingerprint(head: str, tasks: list[str] | tuple[str, ...]) -> str:
    """The fingerprint of the code a run of `head` on `tasks` executes. Remembered per (head,
    tasks) with its files' sizes and modification times, so a comparison parses the imports once
    per head, not once per run, and an edited file is seen."""
    memo = _FINGERPRINTS.get((head, tuple(tasks)))
    if memo is not None and _stamps([Path(f) for f, _, _ in memo[0]]) == memo[0]:
        return memo[1]
    files = code_files(head, tuple(tasks))
    fingerprint = files_fingerprint(files, PACKAGE_ROOT)
    _FINGERPRINTS[head, tuple(tasks)] = (_stamps(files), fingerprint)
    return fingerprint


def folder_name(head: str, seed: int, key: str) -> str:
    """A run's folder: `<head>-seed<seed>-<first 12 hex of its key>`, `only:<stream>` written
    `only_<stream>`."""
    return f"{head.replace(':', '_')}-seed{seed}-{key[:12]}"


def run_key(params: Params, head: str, seed: int, fingerprints: dict[str, str]) -> str:
    """The hash that names a (head, seed) run of `params`: `fingerprints` holds the caches'
    (`cache`, `labels`) and anything else the comparison adds (the protocol); the code's is
    computed here, per head and tasks."""
    train = params.train.model_dump(exclude={"out", "live_dir", "preload_max_mb"})
    what = {"model": {**params.model.model_dump(), "fusion": head}, "train": {**train, "seed": seed},
            "tasks": params.tasks.model_dump(),
            "threads": threads_for(params.run.compare),  # the last bits depend on it (CPU)
            "torch": torch.__version__, **fingerprints,
            "code": code_fingerprint(head, params.train.tasks)}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Planned:
    """A run a comparison needs: its head, seed, key and folder."""

    head: str
    seed: int
    key: str
    folder: Path


def planned_runs(params: Params, heads: list[str], fingerprints: dict[str, str],
                 params_of: dict[str, Params] | None = None) -> list[Planned]:
    """Every (head, seed) run of the comparison `params` describes, heads first, with its key
    and folder; `params_of` gives a head its own params (a tuned configuration)."""
    runs_dir = params.path(params.compare.runs)
    out = []
    for head in heads:
        for seed in params.compare.seeds:
            key = run_key((params_of or {}).get(head, params), head, seed, fingerprints)
            out.append(Planned(head, seed, key, runs_dir / folder_name(head, seed, key)))
    return out


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


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def garbage(runs_dir: Path, keep: set[str]) -> list[tuple[Path, int]]:
    """The folders of `runs_dir` that hold no run whose key is in `keep` (older runs, runs of
    configurations no params file names any more, interrupted `.tmp` folders, folders of an
    older layout), with their sizes in bytes. Files and unrelated names are left alone."""
    out = []
    for folder in sorted(p for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.is_dir() else []:
        try:
            key = json.loads((folder / "run.json").read_text()).get("key")
        except (OSError, ValueError, AttributeError):
            key = None
        if key not in keep and ((folder / "run.json").is_file() or folder.name.endswith(".tmp")):
            out.append((folder, _size(folder)))
    return out


def remove(folders: list[tuple[Path, int]]) -> None:
    """Deletes the folders `garbage` listed."""
    for folder, _ in folders:
        shutil.rmtree(folder)


def shared_params(params: Params) -> dict:
    """The model/train/task params every run of a comparison shares (not the head, the seed or
    output paths)."""
    return {"model": params.model.model_dump(exclude={"fusion"}),
            "train": params.train.model_dump(exclude={"seed", "out", "live_dir", "preload_max_mb"}),
            "tasks": params.tasks.model_dump(),
            "threads_per_run": threads_for(params.run.compare)}
