"""`jmt ensemble`: each head of the last comparison averaged over its runs (seeds, folds), and the
`ensemble.top_k` heads best on validation averaged together; scored as a run is, written as the
challenge's submission files.

Nothing is predicted again: the runs' `predictions.npz` (compare.json names their folders) hold
every entry's outputs already post-processed (va clipped and smoothed, expr and au activated), and
an ensemble is their plain mean, per split, entry and task, under the `full` condition. The top-k
ensemble is the mean of the head ensembles ranked by their validation score (test never chooses),
each head weighted equally whatever its number of runs. Every ensemble is scored with
`protocol.score` exactly as `compare/execute.py` scores a run, beside its runs' mean single-run
score. Written: `ensemble.out/<name>/<task>/<entry>.txt` (test), `ensemble.metrics` (JSON) and
`ensemble.table` (markdown, printed).

A cross-validated comparison (`compare.folds: k`, compare/crossval.py) trained every (head, seed)
once per fold. Test: every fold model predicts the same test entries, so a head's ensemble is the
mean of all its runs, as above. Validation is out of fold: each fold's labels view
(stage2/folds.py) validates a part of the merged training and validation entries, each entry in
exactly one fold, and that entry is predicted by the mean of its own fold's runs (over seeds)
only, never by a model that trained on it; the ensembles are scored, and the top k chosen, on
that union against the merged labels. A single run's validation score stays its own fold's.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.markdown import Markdown

from pipeline import cache
from pipeline.config import DEFAULT_PARAMS, Params, load_params
from pipeline.console import console
from pipeline.errors import InputError
from pipeline.stage2 import folds as fold_views
from pipeline.stage2.compare import SPLITS, load_predictions, table_console
from pipeline.stage2.data import Splits, load_splits
from pipeline.stage2.evaluate import write_submission
from pipeline.stage2.protocol import labels_of, score
from pipeline.tasks import Task, tasks_of

CONDITION = "full"  # every stream given: the condition a submission is made under
Outputs = dict[str, dict[str, dict[str, np.ndarray]]]  # split -> entry -> task -> (n, width)
Labels = dict[str, dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]]  # split -> task -> entry -> (y, valid)
Folds = dict[int, dict[str, list[str]]]  # fold -> task -> the entries its labels view validates


@dataclass
class Ensemble:
    """One averaged prediction: its name (a head, or `top<k>`), heads, member runs (compare.json
    rows), mean outputs, scores per split, and its members' mean single-run scores."""

    name: str
    heads: list[str]
    members: list[dict]
    outputs: Outputs
    scores: dict = field(default_factory=dict)
    single_runs: dict = field(default_factory=dict)


def _plain(name: str) -> bool:
    return bool(name) and name not in (".", "..") and Path(name).name == name and "\\" not in name


def _what(row: dict) -> str:
    fold = f" fold {row['fold']}" if "fold" in row else ""
    return f"{row.get('head')} seed {row.get('seed')}{fold}"


def row_folder(params: Params, row: dict) -> Path:
    """The run folder a compare.json row names: a plain name inside compare.runs (the check
    `compare.run_folder` makes), found by the row itself, so rows that differ only by fold work."""
    name = str(row.get("folder", ""))
    if not _plain(name):  # read from a file: a plain name, never a path
        raise InputError(f"{params.path(params.compare.metrics)}: run {_what(row)}: folder {name!r} is not "
                         "a folder name inside compare.runs")
    folder = params.path(params.compare.runs) / name
    if not (folder / "run.json").is_file() or not (folder / "predictions.npz").is_file():
        raise InputError(f"{folder}: run {_what(row)} missing; run `jmt compare` again to rebuild it")
    return folder


def out_name(head: str) -> str:
    """A head's folder under ensemble.out: `only:<stream>` written `only_<stream>`."""
    name = head.replace(":", "_")
    if not _plain(name):
        raise InputError(f"head {head!r} cannot name a folder")
    return name


class _Mean:
    """The running mean (float64 sums) of several members' outputs; every member must hold the
    first one's splits, entries, tasks and shapes, or an error names it and what differs."""

    def __init__(self) -> None:
        self.sums: Outputs = {}
        self.dtypes: dict[tuple[str, str, str], np.dtype] = {}
        self.first = ""
        self.n = 0

    def add(self, label: str, outputs: Outputs) -> None:
        if not self.n:
            self.first = label
            self.sums = {s: {n: {t: a.astype(np.float64) for t, a in by.items()} for n, by in e.items()}
                         for s, e in outputs.items()}
            self.dtypes = {(s, n, t): a.dtype for s, e in outputs.items() for n, by in e.items() for t, a in by.items()}
        else:
            self._check(label, outputs)
            for s, entries in outputs.items():
                for n, by in entries.items():
                    for t, a in by.items():
                        self.sums[s][n][t] += a
        self.n += 1

    def _check(self, label: str, outputs: Outputs) -> None:
        def differ(what: str, mine: set, theirs: set) -> None:
            if mine != theirs:
                odd = sorted(mine ^ theirs)[0]
                how = f"no {what} {odd!r}, which" if odd in mine else f"{what} {odd!r}, which not"
                raise InputError(f"{label}: {how} {self.first} predicts: the runs of an ensemble must predict "
                                 "the same entries and tasks (one cache); run `jmt compare` again")
        differ("split", set(self.sums), set(outputs))
        for s, entries in outputs.items():
            differ(f"{s} entry", set(self.sums[s]), set(entries))
            for n, by in entries.items():
                differ(f"{s} entry {n} task", set(self.sums[s][n]), set(by))
                for t, a in by.items():
                    if a.shape != self.sums[s][n][t].shape:
                        raise InputError(f"{label}: {s} entry {n!r} {t} outputs {a.shape}, "
                                         f"{self.first}'s {self.sums[s][n][t].shape}")

    def mean(self) -> Outputs:
        # float64 sums then the members' dtype: n identical members give the member back exactly
        return {s: {n: {t: (a / self.n).astype(self.dtypes[s, n, t]) for t, a in by.items()}
                    for n, by in e.items()} for s, e in self.sums.items()}


def _full(folder: Path) -> Outputs:
    """A run's outputs under the `full` condition, per split (the other conditions dropped)."""
    preds = load_predictions(folder)
    return {s: preds[s, CONDITION] for s in SPLITS if (s, CONDITION) in preds}


def score_outputs(outputs: Outputs, labels: Labels, tasks: dict[str, Task], name: str) -> dict:
    """split -> {task: metrics, "score": the sum of the tasks' main metrics}, as a run is scored."""
    out: dict = {}
    for split, by_task in labels.items():
        got = outputs.get(split, {})
        row: dict = {}
        for t, lab in by_task.items():
            missing = sorted(n for n in lab if t not in got.get(n, {}))
            if missing:
                raise InputError(f"{name}: no {split} {t} outputs for entry {missing[0]!r} of the cache; "
                                 "run `jmt compare` again on this cache")
            row[t] = score({n: got[n][t] for n in lab}, lab, tasks[t], split)
        row["score"] = sum(row[t][tasks[t].metric] for t in by_task)
        out[split] = row
    return out


def _mean_scores(rows: list[dict]) -> dict:
    """The mean of score rows (split -> task -> metric, and split -> score); frames kept."""
    def mean(values: list) -> float | int:
        return values[0] if isinstance(values[0], int) else float(np.mean(values))
    first = rows[0]
    return {s: {k: ({m: mean([r[s][k][m] for r in rows]) for m in v} if isinstance(v, dict)
                    else mean([r[s][k] for r in rows])) for k, v in row.items()} for s, row in first.items()}


def ensembles(params: Params, result: dict, labels: Labels, tasks: dict[str, Task],
              folds: Folds | None = None) -> list[Ensemble]:
    """Every head's ensemble, then the top-k's, scored; heads in compare.json's order. For a
    cross-validated comparison, `labels`' validation is the merged one (read_inputs) and `folds`
    each fold's validation entries (read from the views when not given)."""
    heads: dict[str, list[dict]] = {}
    for row in result.get("runs", []):
        heads.setdefault(str(row.get("head")), []).append(row)
    if not heads:
        raise InputError(f"{params.path(params.compare.metrics)}: no runs; run `jmt compare`")
    k = cross_validated(result)
    if k and folds is None:
        folds = fold_validation(params, k, list(tasks))[0]
    out = []
    for head, rows in heads.items():
        out_name(head)
        if k:
            out.append(_out_of_fold(params, head, rows, folds, labels, tasks))
            continue
        acc, singles = _Mean(), []
        for row in rows:
            folder = row_folder(params, row)
            outputs = _full(folder)
            acc.add(str(folder), outputs)
            singles.append(score_outputs(outputs, labels, tasks, str(folder)))
        e = Ensemble(head, [head], rows, acc.mean(), single_runs=_mean_scores(singles))
        e.scores = score_outputs(e.outputs, labels, tasks, f"ensemble {head}")
        out.append(e)
    best = ranked(out)[:params.ensemble.top_k]
    if len(best) < params.ensemble.top_k:
        console.print(f"[yellow]ensemble:[/] {len(best)} heads compared, fewer than ensemble.top_k "
                      f"{params.ensemble.top_k}: {', '.join(e.name for e in best)} together", highlight=False)
    acc = _Mean()
    for e in best:
        acc.add(f"ensemble {e.name}", e.outputs)
    top = Ensemble(f"top{len(best)}", [e.name for e in best], [r for e in best for r in e.members], acc.mean(),
                   single_runs=_mean_scores([e.single_runs for e in best]))
    top.scores = score_outputs(top.outputs, labels, tasks, f"ensemble {top.name}")
    return out + [top]


def cross_validated(result: dict) -> int:
    """A comparison's number of folds (compare.json's `folds`), 0 for the official splits."""
    k = result.get("folds", 0)
    return k if isinstance(k, int) and not isinstance(k, bool) and k >= 2 else 0


def fold_validation(params: Params, k: int, names: list[str]) -> tuple[Folds, dict]:
    """Each fold's validation entries per task, from the fold's labels view as compare wrote it
    (`folds.fold_labels`; only read here: the labels the runs were trained and scored on), and
    their labels merged: task -> entry -> (y, valid) over every training and validation entry,
    each from its one fold."""
    root = params.path(params.compare.runs)
    per: Folds = {}
    merged: dict[str, dict] = {}
    where: dict[str, int] = {}
    for fold in range(k):
        view = fold_views.view_folder(params, k, fold, root)
        if not cache.entries(view):
            raise InputError(f"{view}: no labels view of fold {fold} of {k}; run `jmt compare` again")
        splits = load_splits(params.updated(labels={"out": str(view)}), names, preload_max_mb=0)
        per[fold] = {t: [e.name for e in es] for t, es in splits.validation.items() if es}
        for t, es in splits.validation.items():
            for e in es:  # a video's fold is the same for every task: one fold per entry
                if where.setdefault(e.name, fold) != fold:
                    raise InputError(f"{view}: entry {e.name!r} validates in folds {where[e.name]} and {fold}; "
                                     "run `jmt compare` again")
            merged.setdefault(t, {}).update(labels_of(es, t))
    return per, {t: dict(sorted(merged[t].items())) for t in names if merged.get(t)}


def _check_record(folder: Path, row: dict, k: int, validates: dict[str, list[str]], tasks: list[str]) -> None:
    """The fold a run recorded (run.json's `fold`, written by compare) validates what its view
    validates now: a view rebuilt since (the labels changed) would mix the folds silently."""
    record = json.loads((folder / "run.json").read_text()).get("fold")
    if record is None:
        return
    got = {t: sorted(v) for t, v in record.get("validation", {}).items() if t in tasks and v}
    if (record.get("k"), record.get("fold")) != (k, row["fold"]) or got != {t: sorted(v) for t, v in validates.items()}:
        raise InputError(f"{folder}: run {_what(row)} validated on other entries than fold {row['fold']} of {k} "
                         "validates now (its labels view rebuilt since?); run `jmt compare` again")


def _out_of_fold(params: Params, head: str, rows: list[dict], folds: Folds, labels: Labels,
                 tasks: dict[str, Task]) -> Ensemble:
    """A head of a cross-validated comparison: test the mean of all its runs; validation each
    fold's validation entries from the mean of that fold's runs only (their seeds)."""
    test, by_fold, singles = _Mean(), {}, []
    for row in rows:
        fold = row.get("fold")
        if isinstance(fold, bool) or fold not in folds:
            raise InputError(f"{params.path(params.compare.metrics)}: run {_what(row)}: fold {fold!r} is not one "
                             f"of 0..{len(folds) - 1}; run `jmt compare` again")
        folder = row_folder(params, row)
        _check_record(folder, row, len(folds), folds[fold], list(tasks))
        outputs = _full(folder)
        own = {s: by if s != "validation" else
               {t: {n: labels["validation"][t][n] for n in names} for t, names in folds[fold].items()}
               for s, by in labels.items()}
        singles.append(score_outputs(outputs, own, tasks, str(folder)))  # as compare scored it: on its own fold
        test.add(str(folder), {s: o for s, o in outputs.items() if s != "validation"})
        by_fold.setdefault(fold, _Mean()).add(str(folder), {"validation": outputs.get("validation", {})})
    validation: dict = {}
    for fold, names in folds.items():
        if fold not in by_fold:
            raise InputError(f"{params.path(params.compare.metrics)}: head {head} has no run of fold {fold}; "
                             "run `jmt compare` again")
        mean = by_fold[fold].mean()["validation"]
        for name in sorted({n for entries in names.values() for n in entries}):
            if name not in mean:
                raise InputError(f"ensemble {head}: the fold {fold} runs predict no validation entry {name!r}, "
                                 "which the fold's labels view validates; run `jmt compare` again")
            validation[name] = mean[name]
    e = Ensemble(head, [head], rows, {"validation": dict(sorted(validation.items())), **test.mean()},
                 single_runs=_mean_scores(singles))
    e.scores = score_outputs(e.outputs, labels, tasks, f"ensemble {head}")
    return e


def ranked(heads: list[Ensemble]) -> list[Ensemble]:
    """Head ensembles best first on their validation score, never test's (a tie keeps their order)."""
    return sorted(heads, key=lambda e: -e.scores["validation"]["score"])


def markdown(out: dict) -> str:
    """The table: each ensemble's runs, mean single-run score and ensemble score per split."""
    splits = [s for s in SPLITS if s in out["splits"]]
    cols = [f"{s} {what}" for s in splits for what in ("single run", "ensemble")]
    lines = ["# Ensembles", "",
             f"Score: {' + '.join(f'{t} {m}' for t, m in out['main_metric'].items())}, condition `{CONDITION}`. "
             f"A head's ensemble is the mean of its runs' outputs; {out['top']} is the mean of the "
             f"head ensembles best on validation ({', '.join(out['ensembles'][out['top']]['heads'])}), each "
             "weighted equally." + (_oof_note(out) if "folds" in out else ""), "",
             "| ensemble | runs | " + " | ".join(cols) + " |", "|---" * (len(cols) + 2) + "|"]
    for name, e in out["ensembles"].items():
        cells = [f"{e[w][s]['score']:.4f}" for s in splits for w in ("single_runs", "scores")]
        lines.append(f"| {name} | {len(e['members'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _oof_note(out: dict) -> str:
    return (f" Cross-validated ({out['folds']} folds, {out['folds_json']}): validation is {out['validation']}; "
            "a single run's validation is scored on its own fold. Test: the mean over every fold and seed.")


def read_inputs(params: Params) -> tuple[dict, dict[str, Task], Splits, Labels]:
    """The comparison (compare.json), its tasks, the caches' splits and every scored split's labels
    (a cross-validated comparison's validation: the merged one, out of fold)."""
    return _read(params)[:4]


def _read(params: Params) -> tuple[dict, dict[str, Task], Splits, Labels, Folds | None]:
    """read_inputs, and a cross-validated comparison's validation entries per fold."""
    source = params.path(params.compare.metrics)
    if not source.is_file():
        raise InputError(f"{source}: no comparison yet; run `jmt compare` first")
    try:
        result = json.loads(source.read_text())
    except ValueError as exc:
        raise InputError(f"{source}: not JSON ({exc}); run `jmt compare` again") from None
    names = list(result.get("tasks") or params.train.tasks)  # the tasks the comparison's runs predicted
    splits = load_splits(params, names, preload_max_mb=0)  # labels only: no feature is read
    labels = {s: {t: labels_of(e, t) for t, e in splits.of(s).items() if e} for s in SPLITS}
    labels = {s: by for s, by in labels.items() if by}
    folds = None
    if cross_validated(result):  # validation: the merged training and validation entries, out of fold
        folds, merged = fold_validation(params, cross_validated(result), names)
        labels = {s: merged if s == "validation" else labels.get(s) for s in SPLITS}
        labels = {s: by for s, by in labels.items() if by}
    if "validation" not in labels:
        raise InputError(f"{params.path(params.labels.out)}: no validation entries to rank the heads on")
    return result, tasks_of(names, params.tasks), splits, labels, folds


def _fold_keys(result: dict, labels: Labels) -> dict:
    """What a cross-validated comparison adds to ensemble.json: how validation was made."""
    return {"folds": cross_validated(result), "folds_json": result.get("folds_json"),
            "validation": "out of fold over the merged training+validation entries, each predicted only by "
                          "the runs of the one fold that validates it (mean over seeds)",
            "validation_entries": {t: len(by) for t, by in labels["validation"].items()}}


def run_ensemble(params: Params) -> dict:
    """Reads the comparison, builds and scores every ensemble, writes submissions, JSON, table."""
    result, tasks, splits, labels, folds = _read(params)
    built = ensembles(params, result, labels, tasks, folds)
    root = params.path(params.ensemble.out)
    for e in built:
        folder = root / out_name(e.name)
        shutil.rmtree(folder, ignore_errors=True)  # only this ensemble's files: none left from another cache
        for t, entries in (splits.test.items() if "test" in e.outputs else ()):
            for entry in entries:
                write_submission(folder / t, entry.name, tasks[t], e.outputs["test"][entry.name][t])
    top = built[-1]
    out = {"compare": str(params.path(params.compare.metrics)), "tasks": list(tasks),
           "main_metric": {t: task.metric for t, task in tasks.items()}, "condition": CONDITION,
           "splits": list(labels), **(_fold_keys(result, labels) if folds else {}),
           "top_k": params.ensemble.top_k, "top": top.name,
           "ranking": [e.name for e in ranked(built[:-1])],
           "ensembles": {e.name: {"heads": e.heads,
                                  "members": [{k: r[k] for k in ("head", "seed", "fold", "folder") if k in r}
                                              for r in e.members],
                                  "scores": e.scores, "single_runs": e.single_runs,
                                  "submission": str(root / out_name(e.name))} for e in built}}
    metrics, table = params.path(params.ensemble.metrics), params.path(params.ensemble.table)
    for path in (metrics, table):
        path.parent.mkdir(parents=True, exist_ok=True)
    metrics.write_text(json.dumps(out, indent=1) + "\n")
    table.write_text(markdown(out))
    table_console().print(Markdown(markdown(out)))
    console.print(f"[green]ensemble[/]: {len(built) - 1} heads and {top.name} -> {metrics}, {table}, {root}",
                  highlight=False)
    return out


def command(params: Annotated[Path, typer.Option(help="Params file.")] = DEFAULT_PARAMS) -> None:
    """Average each head's runs of the last comparison, and the best heads on validation; score and submit."""
    run_ensemble(load_params(params))
