"""Cross-validated comparison (`compare.folds: k`, k >= 2): the training and validation entries
of every task merged and split into k folds by video (pipeline/stage2/folds.py: both sides of a
two-person video together, a video's fold the same for every task, test never enters), and the
whole comparison run once per fold on that fold's labels view.

Each (head, seed, fold) is a run of the run store like any other (the fold's labels fingerprint
is in its key); each fold's comparison is a complete one with its own tables and verdicts
(`<metrics>-fold<i>.json`, `<table>-fold<i>.md`), and every run's run.json records the entries its
fold trained and validated on (`fold`). The summary (`compare.metrics`, `compare.table`) gives per
head the validation metric as mean ± sd over folds x seeds and test per fold model (every fold
model predicts the same test entries), with the paired difference from the reference the same
way: the fold comparisons hold the intervals and verdicts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline.config import Params
from pipeline.console import console
from pipeline.stage2 import folds
from pipeline.stage2.compare.tables import main, measures, what


def fold_paths(params: Params, fold: int) -> dict[str, str]:
    """Where fold `fold`'s comparison writes: `<metrics>-fold<i>.json`, `<table>-fold<i>.md`."""
    m, t = Path(params.compare.metrics), Path(params.compare.table)
    return {"metrics": str(m.with_name(f"{m.stem}-fold{fold}{m.suffix}")),
            "table": str(t.with_name(f"{t.stem}-fold{fold}{t.suffix}"))}


def _record(folder: Path, record: dict) -> None:
    """Adds the fold's entries to a run's run.json (once: the run's key already holds the fold)."""
    path = folder / "run.json"
    info = json.loads(path.read_text())
    if info.get("fold") != record:
        info["fold"] = record
        path.write_text(json.dumps(info, indent=1) + "\n")


def _stats(values: list[float]) -> dict:
    a = np.asarray(values, float)
    return {"mean": round(float(a.mean()), 6), "std": round(float(a.std(ddof=1)), 6) if len(a) > 1 else None,
            "n": len(a)}


def run_crossval(params: Params, run_compare: Callable[[Params], dict]) -> dict:
    """Runs the comparison on every fold (`run_compare` on the fold's params) and writes the
    summary over folds x seeds; returns it."""
    cfg = params.compare
    k, root = cfg.folds, params.path(cfg.runs)
    results = []
    for fold in range(k):
        view = folds.fold_labels(params, k, fold, root)
        console.print(f"[cyan]compare[/]: fold {fold + 1} of {k} ({view})", highlight=False)
        own = params.updated(labels={"out": str(view)}, compare={"folds": 0, **fold_paths(params, fold)})
        result = run_compare(own)
        record = folds.fold_record(params, k, fold, root)
        rows = list(result["runs"])
        if "tuning" in result:  # tuned: the default comparison beside it trained on this fold too
            rows += json.loads(own.path(result["tuning"]["default_metrics"]).read_text())["runs"]
        for row in rows:
            _record(root / row["folder"], record)
        results.append(result)
    out = summary(params, results)
    metrics, table = params.path(cfg.metrics), params.path(cfg.table)
    metrics.write_text(json.dumps(out, indent=1) + "\n")
    table.write_text(markdown(out))
    console.print(f"[green]compare[/]: {k} folds -> {metrics}, {table}", highlight=False)
    return out


def summary(params: Params, results: list[dict]) -> dict:
    """Per head and key: validation over folds x seeds, test per fold model and over them all,
    and the paired difference from the reference (head minus reference, per fold and seed)."""
    first = results[0]
    ref = first["reference"]
    keys = list(measures(first))
    splits = [s for s in ("validation", "test") if s in first["results"][ref]]

    heads = {}
    for head in first["heads"]:
        heads[head] = {}
        for split in splits:
            heads[head][split] = {}
            for key in keys:
                own = _values(results, head, split, key, first)
                base = _values(results, ref, split, key, first)
                heads[head][split][key] = {
                    **_stats([v for fold in own for v in fold]),
                    "per_fold": [round(float(np.mean(fold)), 6) for fold in own],
                    "difference": None if head == ref else _stats(
                        [a - b for fa, fb in zip(own, base) for a, b in zip(fa, fb)])}
    return {"folds": params.compare.folds, "heads": first["heads"], "seeds": first["seeds"], "reference": ref,
            "tasks": first["tasks"], "main_metric": first["main_metric"], "metrics": first["metrics"],
            "keys": keys, "splits": splits,
            "fold_metrics": [fold_paths(params, i)["metrics"] for i in range(len(results))],
            "folds_json": str(folds.view_folder(params, params.compare.folds, 0, params.path(params.compare.runs))
                              .parent.parent / folds.FOLDS_JSON),
            "results": heads,
            "runs": [{**row, "fold": i} for i, res in enumerate(results) for row in res["runs"]]}


def _values(results: list[dict], head: str, split: str, key: str, first: dict) -> list[list[float]]:
    """[fold][seed] of a head's main metric of `key` (a task, or `score`) on one split, full condition."""
    metric = main(first, key)
    out = []
    for res in results:
        rows = sorted((r for r in res["runs"] if r["head"] == head), key=lambda r: r["seed"])
        out.append([r[split]["full"]["score"] if key == "score" else r[split]["full"][key][metric] for r in rows])
    return out


def markdown(out: dict) -> str:
    """The summary table: per key, each head's validation over folds x seeds and test per fold."""
    k, ref = out["folds"], out["reference"]
    first = {"tasks": out["tasks"], "main_metric": out["main_metric"], "metrics": out["metrics"]}
    lines = [f"## Cross-validated comparison: {k} folds x seeds {out['seeds']}", "",
             f"Training and validation entries merged and split into {k} folds by video ({out['folds_json']}); "
             "each (head, seed, fold) a run validated on its fold; test is the same for every fold model. "
             f"Mean ± sd over the {k} x {len(out['seeds'])} runs; the difference is paired by fold and seed "
             f"(head − `{ref}`). Each fold's comparison, with its intervals and verdicts: "
             + ", ".join(f"`{p}`" for p in out["fold_metrics"]) + "."]
    for key in out["keys"]:
        label = what(first, key)
        lines += ["", f"**{label}**", "",
                  "| head | " + " | ".join(f"{s} (folds x seeds)" for s in out["splits"])
                  + " | val − ref | test per fold |",
                  "|---" * (len(out["splits"]) + 3) + "|"]
        for head, r in out["results"].items():
            cells = [_pm(r[s][key]) for s in out["splits"]]
            diff = r["validation"][key]["difference"]
            per_fold = ", ".join(f"{v:.3f}" for v in r["test"][key]["per_fold"]) if "test" in r else "-"
            name = f"**`{head}`**" if head == ref else f"`{head}`"
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {'—' if diff is None else _pm(diff, sign=True)} | "
                         f"{per_fold} |")
    return "\n".join(lines) + "\n"


def _pm(s: dict, sign: bool = False) -> str:
    mean = f"{s['mean']:+.3f}" if sign else f"{s['mean']:.3f}"
    return mean + (f" ± {s['std']:.3f}" if s.get("std") is not None else "")
