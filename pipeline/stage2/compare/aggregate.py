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
    ["vs_reference"][split][key] = {per_seed, seeds: t interval, videos: bootstrap, effect, margin}
    ["availability"][split][task][subset] = {frames, videos, scored, <metric>: summary, vs_reference}
    ["per_video"][split][task] = {videos, values, per_seed[, vs_reference: {difference, wins, losses, ties}]}
`effect` = {seeds, videos}: d_z of the per-seed and of the per-video differences with its exact
interval (`stats.paired_effect`; None where undefined; videos None for `score`, whose videos
each hold a different set of tasks). The bootstrap interval carries its draws as `_draws` until
`verdicts.annotate` has used and removed them.
"""

from __future__ import annotations

import numpy as np

from pipeline.config import CompareParams
from pipeline.stage2.protocol import restrict, score_subsets
from pipeline.stats import Part, bootstrap_videos, paired_effect, paired_t, video_metrics
from pipeline.tasks import Task

SCORE = "score"  # the sum of the tasks' metrics (one task: its metric)
TIE = 1e-9  # a per-video difference smaller than this is a tie


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


def _effect(iv) -> dict | None:
    return None if iv is None else {"d": round(iv.mean, 4), "low": round(iv.low, 4), "high": round(iv.high, 4),
                                    "n": iv.n, "method": iv.method}


def video_values(part: Part, which: str) -> np.ndarray:
    """Each video's own metric for every seed of one head of a part (`preds_a` or `preds_b`):
    (seeds, videos), videos sorted by name; NaN where undefined."""
    names = sorted(part.labels)
    return np.stack([video_metrics(part.task, x, part.labels, names) for x in getattr(part, which)])


def video_differences(own: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per video, the mean over seeds of own minus the mean over seeds of ref ((seeds, videos)
    each); NaN where either is undefined on some seed."""
    return own.mean(0) - ref.mean(0)


def paired(own: list[float], ref: list[float], parts: list[Part], cfg: CompareParams) -> dict:
    """The paired difference own - ref of per-seed metrics: the per-seed differences, the Student
    t interval over seeds (None with one seed), the percentile bootstrap over the videos of
    `parts` (a split's, or its videos restricted to an availability subset), marked `indicative`
    when there are fewer than `cfg.min_videos_bootstrap` videos, and the effect size d_z of the
    per-seed and (one task) per-video differences."""
    d = np.subtract(own, ref)
    seeds_iv = _interval(paired_t(d, cfg.confidence)) if len(d) > 1 else None
    iv = bootstrap_videos(parts, n_boot=cfg.bootstrap, confidence=cfg.confidence)
    by_video = None
    if len(parts) == 1:
        diffs = video_differences(video_values(parts[0], "preds_a"), video_values(parts[0], "preds_b"))
        by_video = paired_effect(diffs[np.isfinite(diffs)], cfg.confidence)
    return {"per_seed": [round(float(x), 6) for x in d], "seeds": seeds_iv,
            # _draws: read and removed by verdicts.annotate (a p-value per interval), never written
            "videos": {**_interval(iv), "indicative": iv.n < cfg.min_videos_bootstrap, "_draws": iv.draws},
            "effect": {"seeds": _effect(paired_effect(d, cfg.confidence)), "videos": _effect(by_video)}}


def _values(x: np.ndarray) -> list:
    return [None if not np.isfinite(v) else round(float(v), 6) for v in x]


def per_video(own: Part) -> dict:
    """One head's per-video results on one split and task (`own.preds_a`: its seeds' outputs):
    the videos (sorted), each video's metric as the mean over seeds and per seed (None where
    undefined); with `own.preds_b` (the reference's) not empty, `vs_reference`: per video the
    difference own - reference and the wins, losses and ties (|difference| < TIE) over the videos
    where it is defined."""
    values = video_values(own, "preds_a")
    out = {"videos": sorted(own.labels), "values": _values(values.mean(0)), "per_seed": [_values(v) for v in values]}
    if own.preds_b:
        d = video_differences(values, video_values(own, "preds_b"))
        defined = d[np.isfinite(d)]
        out["vs_reference"] = {"difference": _values(d), "wins": int((defined >= TIE).sum()),
                               "losses": int((defined <= -TIE).sum()), "ties": int((np.abs(defined) < TIE).sum())}
    return out


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
    r["per_video"] = {}
    for split in labels:
        seeds_of = {h: [preds[h, s][split, "full"] for s in cfg.seeds] for h in (head, cfg.reference)}
        r["per_video"][split] = {
            t: per_video(Part(tasks[t], [{n: p[t] for n, p in x.items()} for x in seeds_of[head]],
                              [] if head == cfg.reference else
                              [{n: p[t] for n, p in x.items()} for x in seeds_of[cfg.reference]], labels[split][t]))
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
