"""`jmt compare`'s numbers from its runs: per head, each task's metrics as mean +- sample std over
seeds under every condition; the paired difference from `compare.reference` on each task's
metric (and, with several tasks, on their sum, the multi-task measure): per-seed differences,
a Student t interval over seeds and a percentile bootstrap over videos paired by video and seed
(indicative below `compare.min_videos_bootstrap` videos, then never used in the findings); the
same per availability subset (`all`, `no_<stream>`: the cache's own masks); how each run stopped;
parameters, MFLOPs per frame and CPU latency.

Layout of a head's results (`result["results"][head]`), `key` a task or `score` (the sum of the
tasks' metrics; its one metric is `score`):
    [split][key][condition][metric] = {mean, std, n}
    ["vs_reference"][split][key] = {per_seed, seeds: t interval, videos: bootstrap, margin}
    ["availability"][split][task][subset] = {frames, videos, scored, <metric>: summary, vs_reference}
"""

from __future__ import annotations

import numpy as np

from pipeline.config import CompareParams
from pipeline.stage2.protocol import restrict, score_subsets
from pipeline.stats import Part, bootstrap_videos, paired_t
from pipeline.tasks import Task

SCORE = "score"  # the sum of the tasks' metrics (one task: its metric)


def keys_of(tasks: dict[str, Task]) -> dict[str, tuple[str, ...]]:
    """What is compared: each task's metrics, then (several tasks) `score`, the sum of their metrics."""
    out = {t: task.metrics for t, task in tasks.items()}
    if len(tasks) > 1:
        out[SCORE] = (SCORE,)
    return out


def main_metric(key: str, tasks: dict[str, Task]) -> str:
    """The metric a key's paired differences are on."""
    return SCORE if key == SCORE else tasks[key].metric


def summary(values: list[float]) -> dict:
    """mean and sample std (n - 1; None for one value) of per-seed values."""
    v = np.asarray(values, np.float64)
    return {"mean": round(float(v.mean()), 6), "std": round(float(v.std(ddof=1)), 6) if len(v) > 1 else None,
            "n": len(v)}


def _interval(iv) -> dict:
    return {"mean": round(iv.mean, 6), "low": round(iv.low, 6), "high": round(iv.high, 6), "n": iv.n,
            "method": iv.method, "excludes_zero": iv.excludes_zero}


def paired(own: list[float], ref: list[float], parts: list[Part], cfg: CompareParams) -> dict:
    """The paired difference own - ref of per-seed metrics: the per-seed differences, the Student
    t interval over seeds (None with one seed) and the percentile bootstrap over the videos of
    `parts` (a split's, or its videos restricted to an availability subset), marked `indicative`
    when there are fewer than `cfg.min_videos_bootstrap` videos."""
    d = np.subtract(own, ref)
    seeds_iv = _interval(paired_t(d, cfg.confidence)) if len(d) > 1 else None
    iv = bootstrap_videos(parts, n_boot=cfg.bootstrap, confidence=cfg.confidence)
    return {"per_seed": [round(float(x), 6) for x in d], "seeds": seeds_iv,
            "videos": {**_interval(iv), "indicative": iv.n < cfg.min_videos_bootstrap}}


def subset_summary(rows: list[dict], metrics: tuple[str, ...]) -> dict:
    """One availability subset of one head and task: frames, videos, and each metric's mean +-
    std over seeds (rows: that subset's `score_subsets` row of every seed); unscored if any seed is."""
    out = {"frames": rows[0]["frames"], "videos": rows[0]["videos"], "scored": all(r["scored"] for r in rows)}
    if out["scored"]:
        out.update({k: summary([r[k] for r in rows]) for k in metrics})
    else:
        out["why"] = next(r["why"] for r in rows if not r["scored"])
    return out


def run_availability(preds: dict, labels: dict, availability: dict, tasks: dict[str, Task],
                     min_frames: int) -> dict:
    """One run's availability rows: [split][task][subset], from its `full` predictions."""
    return {split: {t: score_subsets({n: p[t] for n, p in preds[split, "full"].items()}, labels[split][t],
                                     availability[split][t], tasks[t], min_frames=min_frames)
                    for t in labels[split]}
            for split in labels}


def head_results(head: str, runs: dict, preds: dict, labels: dict, availability: dict, tasks: dict[str, Task],
                 conditions: list[str], cfg: CompareParams) -> dict:
    """A head's summaries over seeds and, unless it is the reference, its paired differences."""
    mine = [runs[head, s] for s in cfg.seeds]
    theirs = [runs[cfg.reference, s] for s in cfg.seeds]
    keys = keys_of(tasks)
    r: dict = {"train_seconds": summary([m["seconds"] for m in mine]),
               "training": {"epochs": summary([m["epochs"] for m in mine]),
                            "best_epoch": summary([m["best_epoch"] for m in mine]),
                            "stopped_by_max": sum(m["stopped"] == "max_epochs" for m in mine), "runs": len(mine)},
               "availability": {}}
    for split in labels:
        r[split] = {}
        for key, metrics in keys.items():
            if key != SCORE and key not in labels[split]:
                continue
            r[split][key] = {c: {k: summary([_value(m, split, c, key, k) for m in mine]) for k in metrics}
                             for c in conditions}
        r["availability"][split] = {t: {sub: subset_summary([m["availability"][split][t][sub] for m in mine],
                                                            tasks[t].metrics)
                                        for sub in availability[split][t]}
                                    for t in labels[split]}
    if head == cfg.reference:
        return r
    r["vs_reference"] = {}
    for split in labels:
        own_p = [preds[head, s][split, "full"] for s in cfg.seeds]
        ref_p = [preds[cfg.reference, s][split, "full"] for s in cfg.seeds]

        def parts(which: list[str], frames: dict | None = None) -> list[Part]:
            return [Part(tasks[t], [{n: p[t] for n, p in x.items()} for x in own_p],
                         [{n: p[t] for n, p in x.items()} for x in ref_p],
                         labels[split][t] if frames is None else restrict(labels[split][t], frames))
                    for t in which]

        r["vs_reference"][split] = {}
        for key in keys:
            which = list(labels[split]) if key == SCORE else [key]
            if key != SCORE and key not in labels[split]:
                continue
            metric = main_metric(key, tasks)
            r["vs_reference"][split][key] = paired([_value(m, split, "full", key, metric) for m in mine],
                                                   [_value(m, split, "full", key, metric) for m in theirs],
                                                   parts(which), cfg)
        for t in labels[split]:
            for sub, rows in r["availability"][split][t].items():
                runs_rows = [m["availability"][split][t][sub] for m in (*mine, *theirs)]
                if not all(row["scored"] for row in runs_rows):
                    continue  # too few frames: said so in the tables, not scored
                metric = tasks[t].metric
                rows["vs_reference"] = paired([m["availability"][split][t][sub][metric] for m in mine],
                                              [m["availability"][split][t][sub][metric] for m in theirs],
                                              parts([t], availability[split][t][sub]), cfg)
    return r


def _value(run: dict, split: str, condition: str, key: str, metric: str) -> float:
    """One run's score: a task's metric, or the sum of the tasks' metrics (`score`)."""
    row = run["scores"][split][condition]
    return row[SCORE] if key == SCORE else row[key][metric]


def corpus_facts(params, splits, labels: dict, availability: dict, subsets: dict, cache: dict) -> dict:
    """What the comparison was run on: entries per split and task, valid frames scored, the
    availability subsets' sizes, the cache's provenance, the entries left out of training."""
    return {"root": str(params.corpus.root), "layout": params.corpus.layout,
            "videos": {"train": len(splits.train),
                       **{s: {t: len(e) for t, e in splits.of(s).items()} for s in labels}},
            "scored_frames": {s: {t: int(sum(m.sum() for _, m in labels[s][t].values())) for t in labels[s]}
                              for s in labels},
            "availability": {s: {t: {k: {"frames": int(sum(m.sum() for _, m in sub.values())), "videos": len(sub)}
                                     for k, sub in ((k, restrict(labels[s][t], availability[s][t][k]))
                                                    for k in subsets)}
                                 for t in labels[s]}
                             for s in labels},
            "left_out": splits.left_out, "cache": cache}
