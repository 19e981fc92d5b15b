"""`jmt labels`: every entry's annotations, per task, aligned to its frames -> `<labels.out>/<entry>.h5`.

For each entry and each task that lists it (pipeline/tasks: va, expr, au), reads the annotation
file through the task (header, one line per frame, its invalid marker), aligns the rows to the
frames the faces stage decoded (its `n_frames`; rule: `corpus.entries.align_labels`, within
`corpus.label_tolerance` rows) and stores one float32 array per task with the entry's split for
that task (layout: docs/cache.md). An entry listed for a task's test split without a file gets
all-invalid labels. Labels have their own stage and cache, so editing an annotation, moving an
entry between splits or changing `label_tolerance` reruns nothing of faces, audio or embed. No
video is decoded: the whole corpus takes seconds.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Callable

import typer

from pipeline import cache
from pipeline.config import DEFAULT_PARAMS, Params, load_params
from pipeline.corpus.entries import Entry, align_labels, load_corpus
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


def process_entries(video: Path, entries: list[Entry], hashes: dict[str, str], params: Params,
                    advance: Callable[[int], None]) -> dict[str, dict]:
    """Reads, aligns and writes the labels of one video's entries: all of them read first, so a
    bad file of one entry (an InputError: the whole video is skipped) leaves none of them written,
    as in the faces and audio stages."""
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
        arrays, tasks = {}, []
        for name, label in sorted(e.labels.items()):
            task = TASKS.get(name)()
            if label.path is None:   # listed for the test split, no file
                aligned, diff = task.missing(n), 0
            else:
                aligned, diff = align_labels(task.read_annotation(label.path), n, invalid=task.invalid,
                                             tolerance=tol, source=label.path)
            arrays[name] = aligned
            tasks.append({"task": name, "split": label.split, "rows_minus_frames": diff,
                          "annotation": _relative(label.path, root) if label.path else None,
                          "valid_frames": int(task.valid(aligned).sum())})
        ready.append((e, n, fps, arrays, tasks, t0))
    for e, n, fps, arrays, tasks, t0 in ready:
        with cache.write_entry(out, e.name, stage="labels", config=stage_config(params), hash_=hashes[e.name],
                               attrs={"video": e.source, "side": e.side, "fps": fps, "n_frames": n,
                                      "tasks": tasks}) as f:
            for name, aligned in arrays.items():
                f.create_dataset(cache.label_key(name), data=aligned)
        stats[e.name] = {"frames": n, "seconds": round(time.time() - t0, 3),
                         **{t["task"]: {k: t[k] for k in ("split", "valid_frames", "rows_minus_frames")} for t in tasks}}
        advance(1)
    return stats


class LabelsProcess:
    """One video's entries' labels (pickles as its params)."""

    def __init__(self, params: Params) -> None:
        self.params = params

    def __call__(self, video: Path, entries: list[Entry], hashes: dict[str, str],
                 advance: Callable[[int], None]) -> dict[str, dict]:
        return process_entries(video, entries, hashes, self.params, advance)


def run_labels(params: Params) -> StageResult:
    """Runs the labels stage over the corpus, in this process (it reads text files only);
    returns what it did (also in report.json)."""
    return run_stage("labels", params.path(params.labels.out), load_corpus(params), stage_config(params),
                     params.labels.on_error, LabelsProcess(params), lambda video: 1, with_labels=True)


def command(params: Annotated[Path, typer.Option(help="Params file.")] = DEFAULT_PARAMS) -> None:
    """Read every entry's annotations, per task, aligned to its frames (stage 1)."""
    run_labels(load_params(params))
