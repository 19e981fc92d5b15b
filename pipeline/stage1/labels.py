"""`jmt labels`: every entry's annotations, per task, aligned to its frames -> `<labels.out>/<entry>.h5`.

For each entry and each task that lists it (pipeline/tasks: va, expr, au), reads the annotation
file through the task (header, one line per frame, its invalid marker), aligns the rows to the
frames the faces stage decoded (its `n_frames`; rule: `corpus.entries.align_labels`, within
`corpus.label_tolerance` rows) and stores one float32 array per task with the entry's split for
that task (layout: docs/cache.md). An entry listed for a task's test split without a file gets
all-invalid labels. A task whose file is bad (missing, a bad header or line, rows too far from
the frames) is dropped for that entry alone: its other tasks are written, the entry is then
unlabelled for that task (as a video Aff-Wild2 labels for some tasks only), and the report
names the entry, task, file and error (`on_error: fail` stops instead). Labels have their own
stage and cache, so editing an annotation, moving an entry between splits or changing
`label_tolerance` reruns nothing of faces, audio or embed. No video is decoded: the whole
corpus takes seconds.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Annotated, Callable

import numpy as np
import typer

from pipeline import cache
from pipeline.config import DEFAULT_PARAMS, Params, load_params
from pipeline.console import console
from pipeline.corpus.entries import CorpusEntry, Label, align_labels, load_corpus
from pipeline.errors import InputError
from pipeline.stage1.runner import StageResult, run_stage
from pipeline.tasks import TASKS

ALGORITHM = 1  # bump when a code change alters what this stage writes (see faces.ALGORITHM)


def stage_config(params: Params) -> dict:
    """The content-relevant config of the labels stage (hashed into every entry)."""
    return {"algorithm": ALGORITHM, "label_tolerance": params.corpus.label_tolerance}


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def task_labels(task_name: str, label: Label, n: int, tolerance: int, root: Path) -> tuple[np.ndarray, dict]:
    """One task's labels aligned to `n` frames and its row of the file's `tasks` attribute;
    InputError naming the file when it cannot be read or aligned."""
    task = TASKS.get(task_name)()
    if label.path is None:   # listed for the test split, no file
        aligned, diff = task.missing(n), 0
    else:
        aligned, diff = align_labels(task.read_annotation(label.path), n, invalid=task.invalid,
                                     tolerance=tolerance, source=label.path)
    return aligned, {"task": task_name, "split": label.split, "rows_minus_frames": diff,
                     "annotation": _relative(label.path, root) if label.path else None,
                     "valid_frames": int(task.valid(aligned).sum())}


def dropped_task(entry: CorpusEntry, task_name: str, label: Label, error: InputError) -> dict:
    """The record of a task left out of an entry's labels for a bad file (report.json and the
    file's `dropped` attribute), with a warning line naming the entry and the task."""
    warnings.warn(f"{entry.name}: labels of task {task_name} dropped: {error}", stacklevel=2)
    return {"task": task_name, "split": label.split, "file": str(label.path) if label.path else None,
            "error": str(error)}


def process_entries(video: Path, entries: list[CorpusEntry], hashes: dict[str, str], params: Params,
                    advance: Callable[[int], None]) -> dict[str, dict]:
    """Reads, aligns and writes the labels of one video's entries. A bad annotation file drops
    its task from its entry only (recorded under the entry's `dropped`); with `on_error: fail` it
    is raised, and then, as for a missing faces file, none of the video's entries is written."""
    out, faces = params.path(params.labels.out), params.path(params.faces.out)
    root, tol = params.path(params.corpus.root), params.corpus.label_tolerance
    stats, ready = {}, []
    for e in entries:
        t0 = time.time()
        path = cache.entry_path(faces, e.name)
        if not path.is_file():
            raise InputError(f"{path}: missing; run `jmt faces` first (or see its report.json: the entry "
                             "may have been skipped)")
        with cache.open_entry(path) as ff:
            cache.check_schema(ff, "faces")  # an older faces file: re-run jmt faces
            n, fps = int(ff.attrs["n_frames"]), float(ff.attrs["fps"])
        arrays, tasks, dropped = {}, [], []
        for name, label in sorted(e.labels.items()):
            try:
                arrays[name], row = task_labels(name, label, n, tol, root)
            except InputError as exc:
                if params.labels.on_error == "fail":
                    raise
                dropped.append(dropped_task(e, name, label, exc))
                continue
            tasks.append(row)
        ready.append((e, n, fps, arrays, tasks, dropped, t0))
    for e, n, fps, arrays, tasks, dropped, t0 in ready:
        # `dropped` only where a task was dropped: a good corpus's files are what they always were
        more = {"dropped": dropped} if dropped else {}
        # every task dropped: cache stores an empty list as an empty numeric array, which
        # attrs_of cannot read back; its JSON text is what it stores for any other list
        listed = tasks or json.dumps([])
        with cache.write_entry(out, e.name, stage="labels", config=stage_config(params), hash_=hashes[e.name],
                               attrs={"video": e.source, "side": e.side, "fps": fps, "n_frames": n,
                                      "tasks": listed, **more}) as f:
            for name, aligned in arrays.items():
                f.create_dataset(cache.label_key(name), data=aligned)
        stats[e.name] = {"frames": n, "seconds": round(time.time() - t0, 3),
                         **{t["task"]: {k: t[k] for k in ("split", "valid_frames", "rows_minus_frames")} for t in tasks},
                         **more}
        advance(1)
    return stats


class LabelsProcess:
    """One video's entries' labels (pickles as its params)."""

    def __init__(self, params: Params) -> None:
        self.params = params

    def __call__(self, video: Path, entries: list[CorpusEntry], hashes: dict[str, str],
                 advance: Callable[[int], None]) -> dict[str, dict]:
        return process_entries(video, entries, hashes, self.params, advance)


def run_labels(params: Params) -> StageResult:
    """Runs the labels stage over the corpus, in this process (it reads text files only);
    returns what it did (also in report.json)."""
    out = params.path(params.labels.out)
    result = run_stage("labels", out, load_corpus(params), stage_config(params),
                       params.labels.on_error, LabelsProcess(params), lambda video: 1, with_labels=True)
    if report_cached_drops(result):
        cache.write_report(out, result.as_report())
    return result


def report_cached_drops(result: StageResult) -> bool:
    """Adds a warning for each task a cached entry's file dropped (its annotation file unchanged
    since), so every run's report says which labels are missing, not only the run that wrote
    them; returns whether there was any."""
    found = False
    for name in result.cached:
        with cache.open_entry(cache.entry_path(result.out, name)) as f:
            dropped = cache.attrs_of(f).get("dropped", [])
        for d in dropped:
            message = f"{name}: labels of task {d['task']} dropped (cached: the file is unchanged): {d['error']}"
            result.warnings.append({"entry": name, "warning": message})
            console.print(f"[yellow]warning[/] {message}", highlight=False, soft_wrap=True)
            found = True
    return found


def command(params: Annotated[Path, typer.Option(help="Params file.")] = DEFAULT_PARAMS) -> None:
    """Read every entry's annotations, per task, aligned to its frames (stage 1)."""
    run_labels(load_params(params))
