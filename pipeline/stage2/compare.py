"""`jmt compare`: every head in `compare.heads` x every seed in `compare.seeds`, trained and
evaluated on the same cache, with numbers a reviewer can check.

Per (head, seed) run, in `<compare.runs>/<head>-seed<seed>/`: the best checkpoint, the
post-processed predictions of every validation and test frame under three conditions (both
streams; audio masked everywhere; visual masked everywhere: the same trained model, nothing
retrained) and `run.json` (scores, training history, timing, the run's key). The key hashes
everything that decides the run's numbers: the head's params, the train and evaluate params
(the seed included), the embeddings cache's fingerprint (the content hashes recorded with each entry), the stage-2 training code and the torch version.
A run whose folder holds the same key is reused, not recomputed; a run is written to a
temporary folder and renamed when complete, so an interrupted comparison resumes.

Then, per head: CCC valence/arousal/mean on validation and test as mean +- sample std over
seeds, for each condition; the paired difference from `compare.reference` (per-seed CCC mean
differences, Student t interval over seeds; and a percentile bootstrap over videos, paired by
video and seed; shown as indicative below `compare.min_videos_bootstrap` videos and then never
used in the findings); each difference's rerun margin and the verdict of each interval
(`verdicts.py`: above, below, includes 0, or within the noise a rerun on another machine makes,
then not stated); the same scores and differences restricted to the frames where both
streams are present, where the face is missing and where the audio is missing (the cache's own
masks, `protocol.score_subsets`); how each run stopped (early stopping or the epoch cap);
parameters, MFLOPs per frame and CPU latency per 1000 frames. Written to `compare.metrics`
(JSON) and `compare.table` (markdown), and printed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer
from rich.console import Console
from rich.markdown import Markdown

from pipeline import cache
from pipeline.config import DEFAULT_PARAMS, CompareParams, Params, load_params
from pipeline.console import console
from pipeline.device import resolve_device
from pipeline.engine import Unit, check_storage, run_units, shared_storage, threads_for, torch_threads
from pipeline.errors import InputError, ParamsError
from pipeline.stage2.cost import head_cost
from pipeline.stage2.data import Entry, corpus_names, dims, load_split
from pipeline.stage2 import checkpoints
from pipeline.stage2.evaluate import postprocess
from pipeline.stage2.heads import HEADS, build_head
from pipeline.stage2.protocol import (SUBSETS, availability_of, labels_of, predict_split, restrict, score,
                                      score_subsets)
from pipeline.stage2.train import head_kwargs, train_model
from pipeline.stage2.verdicts import VERDICTS, annotate
from pipeline.stats import bootstrap_videos, paired_t

SPLITS = ("validation", "test")
CONDITIONS = {"full": None, "no_audio": "audio", "no_visual": "visual"}  # name -> stream masked
METRICS = ("ccc_valence", "ccc_arousal", "ccc_mean")
SHORT = {"validation": "val", "test": "test"}  # column labels
RUN_FIELDS = ("key", "epochs", "best_epoch", "stopped", "scores", "history")  # a run.json lacking one is redone
# The code whose change changes a run's numbers (compare.py and the report are not in it).
_STAGE2 = Path(__file__).resolve().parent
TRAINING_CODE = sorted([*_STAGE2.glob("heads/*.py"), *(_STAGE2 / f for f in (
    "data.py", "layers.py", "protocol.py", "train.py", "evaluate.py")), _STAGE2.parent / "metrics.py"])


def files_fingerprint(paths: list[Path], root: Path | None = None) -> str:
    """sha256 over the names (relative to root) and bytes of files, in the given order."""
    h = hashlib.sha256()
    for path in paths:
        h.update(str(path.relative_to(root) if root else path.name).encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def run_params(params: Params, head: str, seed: int, folder: Path) -> Params:
    """params with model.fusion = head, train.seed = seed, outputs inside the run folder."""
    run = params.model_copy(update={
        "model": params.model.model_copy(update={"fusion": head}),
        "train": params.train.model_copy(update={"seed": seed, "out": str(folder / "model.pt"),
                                                 "live_dir": str(folder / "live")}),
    })
    run._root = params.root
    return run


def run_key(params: Params, head: str, seed: int, fingerprints: dict[str, str]) -> str:
    """The hash that decides whether a stored (head, seed) run can be reused."""
    train = params.train.model_dump(exclude={"out", "live_dir", "preload_max_mb"})
    what = {"model": {**params.model.model_dump(), "fusion": head}, "train": {**train, "seed": seed},
            "evaluate": params.evaluate.model_dump(exclude={"metrics", "out"}),
            "threads": threads_for(params.run.compare),  # the last bits depend on it (CPU)
            "torch": torch.__version__, **fingerprints}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def shared_params(params: Params) -> dict:
    """The model/train/evaluate params every run of a comparison shares (not the head, the seed
    or output paths)."""
    return {"model": params.model.model_dump(exclude={"fusion"}),
            "train": params.train.model_dump(exclude={"seed", "out", "live_dir", "preload_max_mb"}),
            "evaluate": params.evaluate.model_dump(exclude={"metrics", "out"}),
            "threads_per_run": threads_for(params.run.compare)}


def _load_run(folder: Path, key: str) -> dict | None:
    """A finished run with this key, or None."""
    try:
        info = json.loads((folder / "run.json").read_text())
    except (OSError, ValueError):
        return None
    if (info.get("key") != key or not all(k in info for k in RUN_FIELDS) or not (folder / "model.pt").is_file()
            or not (folder / "predictions.npz").is_file()):
        return None
    return info


def load_predictions(folder: Path) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """(split, condition) -> {entry name: predictions (n, 2)} of one run folder."""
    out: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    with np.load(folder / "predictions.npz") as z:
        for k in z.files:
            split, condition, name = k.split("/", 2)
            out.setdefault((split, condition), {})[name] = z[k]
    return out


def _execute_run(params: Params, head: str, seed: int, folder: Path, key: str,
                 splits: dict[str, list[Entry]], labels: dict[str, dict]) -> dict:
    """Trains one (head, seed), evaluates it under every condition, writes the run folder."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    run = run_params(params, head, seed, tmp)
    t0 = time.time()
    threads = threads_for(params.run.compare)
    with torch_threads(threads):  # both engines: the same threads give the same numbers
        info = _train_and_score(params, run, tmp, splits, labels)
    info.update({"head": head, "seed": seed, "key": key, "threads": threads, "seconds": round(time.time() - t0, 1)})
    (tmp / "run.json").write_text(json.dumps(info, indent=1) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return info


def _train_and_score(params: Params, run: Params, tmp: Path, splits: dict[str, list[Entry]],
                     labels: dict[str, dict]) -> dict:
    """Trains `run` into `tmp`, predicts every split under every condition (predictions.npz)."""
    trained = train_model(run, quiet=True)
    model, _ = checkpoints.load(tmp / "model.pt", params.path(params.embed.out))
    device = resolve_device(params.train.device)
    model.to(device)
    window = params.train.window
    scores: dict = {}
    arrays: dict[str, np.ndarray] = {}
    for split, entries in splits.items():
        scores[split] = {}
        for condition, drop in CONDITIONS.items():
            raw = predict_split(model, entries, window, window // 2, device, drop=drop)
            post = {n: postprocess(p, params.evaluate) for n, p in raw.items()}
            scores[split][condition] = score(post, labels[split], split)
            arrays.update({f"{split}/{condition}/{n}": p for n, p in post.items()})
    np.savez_compressed(tmp / "predictions.npz", **arrays)
    return {"epochs": len(trained.history), "best_epoch": trained.best_epoch, "stopped": trained.stopped,
            "parameters": trained.parameters, "train_frames_per_s": round(trained.frames_per_s, 1),
            "scores": scores, "history": trained.history}


def _summary(values: list[float]) -> dict:
    """mean and sample std (n - 1; None for one value) of per-seed values."""
    v = np.asarray(values, np.float64)
    return {"mean": round(float(v.mean()), 6), "std": round(float(v.std(ddof=1)), 6) if len(v) > 1 else None,
            "n": len(v)}


def _interval(iv) -> dict:
    return {"mean": round(iv.mean, 6), "low": round(iv.low, 6), "high": round(iv.high, 6), "n": iv.n,
            "method": iv.method, "excludes_zero": iv.excludes_zero}


def paired(own: list[float], ref: list[float], own_preds: list[dict], ref_preds: list[dict],
           labels: dict[str, tuple[np.ndarray, np.ndarray]], cfg: CompareParams) -> dict:
    """The paired difference own - ref of per-seed CCC means: the per-seed differences, the
    Student t interval over seeds (None with one seed) and the percentile bootstrap over the
    videos in `labels` (a split's, or its videos restricted to an availability subset), marked
    `indicative` when there are fewer than `cfg.min_videos_bootstrap` videos."""
    d = np.subtract(own, ref)
    seeds_iv = _interval(paired_t(d, cfg.confidence)) if len(d) > 1 else None
    iv = bootstrap_videos(own_preds, ref_preds, labels, n_boot=cfg.bootstrap, confidence=cfg.confidence)
    return {"per_seed": [round(float(x), 6) for x in d], "seeds": seeds_iv,
            "videos": {**_interval(iv), "indicative": iv.n < cfg.min_videos_bootstrap}}


def _subset_summary(rows: list[dict]) -> dict:
    """One availability subset of one head: frames, videos, and CCC mean +- std over seeds
    (rows: that subset's `score_subsets` row of every seed); unscored if any seed is."""
    out = {"frames": rows[0]["frames"], "videos": rows[0]["videos"], "scored": all(r["scored"] for r in rows)}
    if out["scored"]:
        out.update({k: _summary([r[k] for r in rows]) for k in METRICS})
    else:
        out["why"] = next(r["why"] for r in rows if not r["scored"])
    return out


def _corpus_facts(params: Params, splits: dict[str, list[Entry]], labels: dict[str, dict], folder: Path,
                  availability: dict[str, dict]) -> dict:
    frames = {s: int(sum(m.sum() for _, m in labels[s].values())) for s in splits}
    train = load_split(folder, "train", preload_max_mb=0)
    subsets = {s: {k: {"frames": int(sum(m.sum() for _, m in sub.values())), "videos": len(sub)}
                   for k, sub in ((k, restrict(labels[s], availability[s][k])) for k in SUBSETS)}
               for s in splits}
    return {"root": str(params.corpus.root), "layout": params.corpus.layout,
            "videos": {"train": len(train), **{s: len(e) for s, e in splits.items()}},
            "scored_frames": frames, "availability": subsets, "cache": checkpoints.provenance(folder)}


def _remote_run(params: Params, head: str, seed: int, folder: Path, key: str, split_names: list[str],
                marker: str) -> dict:
    """One (head, seed) run as a Ray task: reads the driver's splits from the shared cache, then
    trains and evaluates as the local engine does."""
    check_storage(folder.parent, marker)
    embeddings = params.path(params.embed.out)
    splits = {s: load_split(embeddings, s, preload_max_mb=params.train.preload_max_mb,
                            expected=corpus_names(params, s)) for s in split_names}
    return _execute_run(params, head, seed, folder, key, splits, {s: labels_of(e) for s, e in splits.items()})


def _said(info: dict, how: str, order: list, i: int) -> None:
    s = info["scores"]
    test = f", test {s['test']['full']['ccc_mean']:.4f}" if "test" in s else ""
    console.print(f"[{i}/{len(order)}] {info['head']} seed {info['seed']}: {how}, "
                  f"validation CCC mean {s['validation']['full']['ccc_mean']:.4f}{test}", highlight=False)


def run_compare(params: Params) -> dict:
    """Runs (or reuses) every (head, seed), aggregates, writes the JSON and markdown table."""
    cfg: CompareParams = params.compare
    for head in cfg.heads:
        HEADS.get(head)  # an unknown head fails before any training, listing the known ones
    t0 = time.time()
    folder = params.path(params.embed.out)
    splits: dict[str, list[Entry]] = {}
    for split in SPLITS:
        try:
            splits[split] = load_split(folder, split, preload_max_mb=params.train.preload_max_mb,
                                       expected=corpus_names(params, split))
        except InputError as exc:
            if split == "validation" or "lacks" in str(exc):
                raise
            console.print(f"[yellow]compare:[/] no test entries in {folder}; validation only", highlight=False)
    labels = {s: labels_of(e) for s, e in splits.items()}
    availability = {s: availability_of(e) for s, e in splits.items()}  # the corpus's own gaps
    fingerprints = {"cache": cache.fingerprint(folder),  # recorded content hashes, not every byte
                    "code": files_fingerprint(TRAINING_CODE, _STAGE2.parent)}
    runs_dir = params.path(cfg.runs)
    runs: dict[tuple[str, int], dict] = {}
    preds: dict[tuple[str, int], dict] = {}
    order = [(h, s) for h in cfg.heads for s in cfg.seeds]
    todo: list[Unit] = []
    for head, seed in order:
        run_dir = runs_dir / f"{head}-seed{seed}"
        key = run_key(params, head, seed, fingerprints)
        info = _load_run(run_dir, key)
        if info is None:
            todo.append(Unit(f"{head} seed {seed}", (params, head, seed, run_dir, key)))
        else:
            runs[head, seed] = {**info, "reused": True}
            _said(info, "reused", order, len(runs))

    def finished(unit: Unit, info: dict) -> None:
        head, seed = unit.args[1], unit.args[2]  # (params, head, seed, folder, key, ...)
        runs[head, seed] = {**info, "reused": False}
        _said(info, f"trained in {info['seconds']:.0f} s", order, len(runs))

    if params.run.engine == "local":  # in this process, on the splits loaded above
        run_units(lambda *args: _execute_run(*args, splits, labels), todo, cfg=params.run,
                  res=params.run.compare, on_result=finished)
    elif todo:  # each run a Ray task that reads the cache itself
        runs_dir.mkdir(parents=True, exist_ok=True)
        with shared_storage(runs_dir) as marker:
            run_units(_remote_run, (Unit(u.name, (*u.args, list(splits), marker)) for u in todo), cfg=params.run,
                      res=params.run.compare, on_result=finished)
    for head, seed in order:
        info = runs[head, seed]
        preds[head, seed] = load_predictions(runs_dir / f"{head}-seed{seed}")
        # scored here, not stored in the run: the masks are read from the cache at hand
        info["availability"] = {split: score_subsets(preds[head, seed][split, "full"], labels[split],
                                                     availability[split], min_frames=cfg.min_subset_frames)
                                for split in splits}

    audio_dim, visual_dim = dims(splits["validation"])
    results: dict = {}
    for head in cfg.heads:
        mine = [runs[head, s] for s in cfg.seeds]
        model = build_head(head, **head_kwargs(params.model.model_copy(update={"fusion": head}), audio_dim, visual_dim))
        r: dict = head_cost(model, audio_dim, visual_dim, params.train.window, repeats=cfg.latency_repeats)
        r["train_seconds"] = _summary([m["seconds"] for m in mine])
        r["training"] = {"epochs": _summary([m["epochs"] for m in mine]),
                         "best_epoch": _summary([m["best_epoch"] for m in mine]),
                         "stopped_by_max": sum(m["stopped"] == "max_epochs" for m in mine), "runs": len(mine)}
        r["availability"] = {}
        for split in splits:
            r[split] = {c: {k: _summary([m["scores"][split][c][k] for m in mine]) for k in METRICS}
                        for c in CONDITIONS}
            r["availability"][split] = {sub: _subset_summary([m["availability"][split][sub] for m in mine])
                                        for sub in SUBSETS}
        if head != cfg.reference:
            r["vs_reference"] = {}
            for split in splits:
                theirs = [runs[cfg.reference, s] for s in cfg.seeds]
                own_p = [preds[head, s][split, "full"] for s in cfg.seeds]
                ref_p = [preds[cfg.reference, s][split, "full"] for s in cfg.seeds]
                r["vs_reference"][split] = paired([m["scores"][split]["full"]["ccc_mean"] for m in mine],
                                                  [m["scores"][split]["full"]["ccc_mean"] for m in theirs],
                                                  own_p, ref_p, labels[split], cfg)
                for sub in SUBSETS:
                    if not all(m["availability"][split][sub]["scored"] for m in (*mine, *theirs)):
                        continue  # too few frames: said so in the tables, not scored
                    r["availability"][split][sub]["vs_reference"] = paired(
                        [m["availability"][split][sub]["ccc_mean"] for m in mine],
                        [m["availability"][split][sub]["ccc_mean"] for m in theirs],
                        own_p, ref_p, restrict(labels[split], availability[split][sub]), cfg)
        results[head] = r
    seconds = time.time() - t0
    out = {
        "corpus": _corpus_facts(params, splits, labels, folder, availability),
        "heads": list(cfg.heads), "seeds": list(cfg.seeds), "reference": cfg.reference,
        "confidence": cfg.confidence, "bootstrap": cfg.bootstrap, "min_videos_bootstrap": cfg.min_videos_bootstrap,
        "subsets": {k: what for k, (what, _) in SUBSETS.items()}, "min_subset_frames": cfg.min_subset_frames,
        "params": shared_params(params),
        "fingerprints": fingerprints,
        "results": results,
        "runs": [{"head": h, "seed": s, "folder": f"{h}-seed{s}", "reused": runs[h, s]["reused"],
                  "seconds": runs[h, s]["seconds"], "epochs": runs[h, s]["epochs"],
                  "best_epoch": runs[h, s]["best_epoch"], "stopped": runs[h, s]["stopped"],
                  **{split: {c: {k: round(v[k], 6) for k in METRICS} for c, v in sc.items()}
                     for split, sc in runs[h, s]["scores"].items()},
                  "availability": {split: {sub: {k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()}
                                           for sub, row in subs.items()}
                                   for split, subs in runs[h, s]["availability"].items()}}
                 for h in cfg.heads for s in cfg.seeds],
        "timing": {"seconds": round(seconds, 1), "trained": sum(not r["reused"] for r in runs.values()),
                   "reused": sum(r["reused"] for r in runs.values())},
    }
    annotate(out, cfg.rerun_margin)  # margins and verdicts: what the findings may state
    metrics_path, table_path = params.path(cfg.metrics), params.path(cfg.table)
    for path in (metrics_path, table_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    metrics_path.write_text(json.dumps(out, indent=1) + "\n")
    table_path.write_text(markdown(out))
    table_console().print(Markdown(markdown(out)))
    console.print(f"[green]compare[/]: {out['timing']['trained']} runs trained, {out['timing']['reused']} reused, "
                  f"{seconds:.0f} s -> {metrics_path}, {table_path}", highlight=False)
    return out


# ---------------------------------------------------------------------------------------------
# The markdown tables (compare.table, reports/index.md and README's results section).

def _pm(s: dict, digits: int = 3, shift: float = 0) -> str:
    """`mean ± std` of a summary (`shift` added to the mean: epochs counted from 1)."""
    return f"{s['mean'] + shift:.{digits}f}" + (f" ± {s['std']:.{digits}f}" if s.get("std") is not None else "")


def _iv(iv: dict | None) -> str:
    if iv is None:
        return "n/a (one seed)"
    mark = {"above": " *", "below": " *", "within noise": " ~"}.get(iv["verdict"], "")
    mark += " †" if iv.get("indicative") else ""
    return f"{iv['mean']:+.3f} [{iv['low']:+.3f}, {iv['high']:+.3f}]{mark}"


def describe(result: dict) -> str:
    """One paragraph: corpus, cache, seeds, params and how to read the numbers."""
    c, p = result["corpus"], result["params"]
    videos = ", ".join(f"{n} {s}" for s, n in c["videos"].items())  # entries: a two-person video has two
    frames = ", ".join(f"{n:,} {s}" for s, n in c["scored_frames"].items())
    train, model = p["train"], p["model"]
    seeds = ", ".join(map(str, result["seeds"]))
    n = len(result["seeds"])
    return (
        f"Corpus `{c['root']}` ({c['layout']} layout; entries: {videos}; valid frames scored: {frames}). "
        f"Cache: visual `{c['cache']['visual_backbone']}`, audio `{c['cache']['audio_backbone']}`. "
        f"Seeds {seeds} for every head. Params: d_model {model['d_model']}, temporal `{model['temporal']}`, "
        f"{model['layers']} layer(s), {model['heads']} attention head(s); {train['optimizer']} lr {train['lr']}, "
        f"at most {train['epochs']} epochs with early stopping on the validation CCC mean (patience "
        f"{train['patience']}), windows of {train['window']} frames, "
        f"modality dropout {train['modality_dropout']}; predictions clipped: {p['evaluate']['clip']}, "
        f"smoothing: {p['evaluate']['smooth_valence'] or 'off'}/{p['evaluate']['smooth_arousal'] or 'off'}. "
        f"CCC on all valid frames of a split (the official protocol); ± is the sample standard "
        f"deviation over the {n} seeds."
    )


def _table(columns: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table whose first column is the head."""
    out = ["| head | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    return out + ["| " + " | ".join(row) + " |" for row in rows]


def _names(heads: list[str]) -> str:
    return ", ".join(f"`{h}`" for h in heads) or "none"


def _videos(n: int) -> str:
    return f"{n} video" + ("" if n == 1 else "s")


def _subset_label(result: dict, split: str, subset: str) -> str:
    facts = result["corpus"]["availability"][split][subset]
    return f"{result['subsets'][subset]} ({facts['frames']:,} frames, {_videos(facts['videos'])})"


def _margin(vs: dict) -> str:
    return "" if vs.get("margin") is None else f" ±{vs['margin']:.3f}"


def _verdict_words(iv: dict, margin: float | None) -> str:
    """What an interval's verdict means, in the words the findings use."""
    beyond = "" if margin is None else f" by more than the rerun margin ±{margin:.3f}"
    return {"above": f"excludes 0{beyond}", "below": f"excludes 0{beyond}",
            "includes 0": "includes 0" + ("" if margin is None else f" and the whole rerun margin ±{margin:.3f}"),
            "within noise": f"within rerun noise: a bound within ±{margin or 0:.3f} of 0, no verdict"}[iv["verdict"]]


def _difference(vs: dict, ref: str, head: str) -> str:
    """`head − ref: <t interval> over seeds (<verdict>)[; <bootstrap> over videos (...)]`: the
    bootstrap only when it is not indicative (enough videos)."""
    parts = [f"{iv['mean']:+.3f} [{iv['low']:+.3f}, {iv['high']:+.3f}] {how} ({_verdict_words(iv, vs.get('margin'))})"
             for iv, how in _used(vs)]
    return f"`{head}` − `{ref}`: " + ("; ".join(parts) or "no usable interval (one seed, too few videos)")


def _availability_findings(result: dict, split: str) -> list[str]:
    """Per availability subset: the head with the highest CCC mean, with its paired difference
    from the reference (or, when the reference wins, the runner-up's); or why it is not scored."""
    res, ref = result["results"], result["reference"]
    lines = []
    for subset in result["subsets"]:
        label = _subset_label(result, split, subset)
        rows = {h: res[h]["availability"][split][subset] for h in result["heads"]}
        if not all(r["scored"] for r in rows.values()):
            why = next(r["why"] for r in rows.values() if not r["scored"])
            lines.append(f"- {split.capitalize()}, {label}: not scored: {why}.")
            continue
        ranked = sorted(rows, key=lambda h: -rows[h]["ccc_mean"]["mean"])
        best = ranked[0]
        text = f"- {split.capitalize()}, {label}: highest CCC mean `{best}` ({_pm(rows[best]['ccc_mean'])})"
        if best != ref:
            text += "; " + _difference(rows[best]["vs_reference"], ref, best)
            other, beaten = best, "above"
        elif len(ranked) > 1:
            other, beaten = ranked[1], "below"
            text += f", the reference; next `{other}` ({_pm(rows[other]['ccc_mean'])}); " + \
                _difference(rows[other]["vs_reference"], ref, other)
        else:
            lines.append(text + ".")
            continue
        if not any(iv["verdict"] == beaten for iv, _ in _used(rows[other]["vs_reference"])):
            beyond = "" if rows[other]["vs_reference"].get("margin") is None else " beyond the rerun margin"
            text += f". Not a verdict: no interval puts `{other}` {beaten} `{ref}`{beyond}"
        lines.append(text + ".")
    return lines


def _used(vs: dict) -> list[tuple[dict, str]]:
    """(interval, "over seeds" / "over videos") of a paired difference the findings may cite:
    the t interval when there is one, the bootstrap only when not indicative."""
    ivs = [(vs["seeds"], "over seeds"), (None if vs["videos"]["indicative"] else vs["videos"], "over videos")]
    return [(iv, how) for iv, how in ivs if iv]


def _findings(result: dict, order: list[str], splits: list[str]) -> list[str]:
    """A few generated sentences: the best head; which heads differ from the reference with
    intervals that exclude zero (the video bootstrap only with enough videos); the winner on
    each availability subset; how much of the reference's score survives a masked stream; and
    the runs the epoch cap stopped while they were still improving."""
    res, ref = result["results"], result["reference"]
    best = order[0]
    lines = [f"- Highest validation CCC mean: `{best}` ({res[best]['validation']['full']['ccc_mean']['mean']:.3f}); "
             f"reference `{ref}`: {res[ref]['validation']['full']['ccc_mean']['mean']:.3f}."]
    others = [h for h in order if h != ref]
    if len(result["seeds"]) < 2:
        lines.append("- One seed: no estimate of the noise a rerun makes (no rerun margin); the verdicts below "
                     "may not survive another machine.")
    for split in splits:
        for which, label in (("seeds", "t over seeds"), ("videos", "bootstrap over videos")):
            ivs = {h: res[h]["vs_reference"][split][which] for h in others}
            if all(iv is None for iv in ivs.values()):
                continue
            if any(iv and iv.get("indicative") for iv in ivs.values()):
                n = next(iv["n"] for iv in ivs.values() if iv)
                lines.append(f"- {split.capitalize()}, {label}: not used ({_videos(n)}, fewer than "
                             f"compare.min_videos_bootstrap = {result['min_videos_bootstrap']}; shown in the "
                             "table as indicative, †).")
                continue
            said = {v: [h for h, iv in ivs.items() if iv and iv["verdict"] == v] for v in VERDICTS}
            lines.append(f"- {split.capitalize()}, {label}: above `{ref}`: {_names(said['above'])}; below: "
                         f"{_names(said['below'])}; within rerun noise (no verdict): {_names(said['within noise'])}; "
                         "the other intervals include 0.")
        lines += _availability_findings(result, split)
    full = res[ref][splits[0]]["full"]["ccc_mean"]["mean"]
    if full > 0:
        kept = {c: res[ref][splits[0]][c]["ccc_mean"]["mean"] / full for c in ("no_audio", "no_visual")}
        lines.append(f"- `{ref}` keeps {kept['no_audio']:.0%} of its {splits[0]} CCC mean with the audio masked "
                     f"and {kept['no_visual']:.0%} with the visual stream masked.")
    train = result["params"]["train"]
    capped = [r for r in result["runs"] if r["stopped"] == "max_epochs"]
    if capped:
        runs = ", ".join(f"`{r['head']}` seed {r['seed']} (best epoch {r['best_epoch'] + 1} of {r['epochs']})"
                         for r in capped)
        lines.append(f"- Stopped by the epoch cap (train.epochs = {train['epochs']}) while still improving "
                     f"(a better validation CCC within the last {train['patience']} epochs): {runs}. "
                     "More epochs could change their numbers.")
    else:
        lines.append(f"- Every run stopped early (no validation gain in {train['patience']} epochs) "
                     f"before the cap of {train['epochs']} epochs.")
    return lines


def _availability_tables(result: dict, order: list[str], splits: list[str], name: dict[str, str]) -> list[str]:
    """CCC per axis and mean on each availability subset, one table per split; then the paired
    differences from the reference on each subset (one row per head and subset)."""
    res, ref = result["results"], result["reference"]
    subsets = list(result["subsets"])
    lines = []
    for split in splits:
        sizes = "; ".join(f"{_subset_label(result, split, s)}" for s in subsets)
        lines += ["", f"**By modality availability, {split}** (CCC, mean ± std over seeds, on the valid frames "
                  "where the cache's `visual_mask` / `audio_mask` say so, all such frames of the split "
                  f"concatenated; a frame with neither stream counts in both \"no\" columns; {sizes}; "
                  f"n/a: fewer than {result['min_subset_frames']} frames)", ""]
        cells = []
        for h in order:
            row = [name[h]]
            for s in subsets:
                a = res[h]["availability"][split][s]
                row += [_pm(a[k]) if a["scored"] else "n/a" for k in METRICS]
            cells.append(row)
        lines += _table([f"{s.replace('_', ' ')} {k.removeprefix('ccc_')}" for s in subsets for k in METRICS], cells)
    pairs = [(s, w) for s in splits for w in ("seeds", "videos")]
    rows = []
    for h in order:
        if h == ref:
            continue
        for s_ in subsets:
            row = [name[h], s_.replace("_", " ")]
            for split, which in pairs:
                vs = res[h]["availability"][split][s_].get("vs_reference")
                row.append(_iv(vs[which]) if vs else "n/a")
            rows.append(row)
    lines += ["", f"**Paired difference from `{ref}` by availability** (CCC mean on the subset, head − {ref}; "
              "as above, the bootstrap resamples the videos that have frames in the subset)", ""]
    lines += _table(["subset", *(f"{SHORT[s]} over {w}" for s, w in pairs)], rows)
    return lines


def markdown(result: dict) -> str:
    """The comparison as markdown tables (accuracy, paired differences, availability subsets,
    robustness, training protocol, cost)."""
    res, ref = result["results"], result["reference"]
    splits = [s for s in SPLITS if s in res[ref]]
    order = sorted(result["heads"], key=lambda h: -res[h]["validation"]["full"]["ccc_mean"]["mean"])
    name = {h: f"**`{h}`**" if h == ref else f"`{h}`" for h in order}
    conf = f"{result['confidence']:.0%}"
    lines = [describe(result), "", *_findings(result, order, splits), "",
             "**Accuracy** (CCC, mean ± std over seeds; sorted by validation mean)", ""]
    lines += _table([f"{SHORT[s]} {k.removeprefix('ccc_')}" for s in splits for k in METRICS],
                    [[name[h], *(_pm(res[h][s]["full"][k]) for s in splits for k in METRICS)] for h in order])
    lines += ["", f"**Paired difference from `{ref}`** (CCC mean, head − {ref}, {conf} intervals). "
              f"*Over seeds*: Student t on the per-seed differences (n = {len(result['seeds'])} seeds). "
              f"*Over videos*: percentile bootstrap, {result['bootstrap']} resamples of the split's videos, "
              "each scoring every seed of both heads on the same draw (n = videos). * = excludes 0 by more "
              "than the rerun margin; ~ = a bound within the margin of 0: within the noise a rerun on another "
              "machine makes, no verdict (the margin: compare.rerun_margin = "
              f"{result['rerun_margin']:g} sd of the change a rerun of every seed makes to the mean difference, "
              "`docs/compare.md`). † = indicative: fewer than "
              f"{result['min_videos_bootstrap']} videos (compare.min_videos_bootstrap), too few for the bootstrap "
              "to show video-to-video spread; never used in the findings.", ""]
    pairs = [(s, w) for s in splits for w in ("seeds", "videos")]
    lines += _table([*(f"{SHORT[s]} over {w}" for s, w in pairs), *(f"{SHORT[s]} margin" for s in splits)],
                    [[name[h], *(_iv(res[h]["vs_reference"][s][w]) for s, w in pairs),
                      *(_margin(res[h]["vs_reference"][s]).strip() or "n/a" for s in splits)]
                     for h in order if h != ref])
    lines += _availability_tables(result, order, splits, name)
    lines += ["", "**Robustness** (CCC mean ± std; the same trained models evaluated with one stream masked "
              "on every frame)", ""]
    lines += _table([f"{SHORT[s]} {c.replace('_', ' ')}" for s in splits for c in CONDITIONS],
                    [[name[h], *(_pm(res[h][s][c]["ccc_mean"]) for s in splits for c in CONDITIONS)] for h in order])
    train = result["params"]["train"]
    lines += ["", f"**Training protocol** (at most train.epochs = {train['epochs']} epochs, early stopping on "
              f"the validation CCC mean with patience {train['patience']}; epochs counted from 1; mean ± std "
              "over seeds; runs the cap stopped were still improving)", ""]
    lines += _table(["epochs run", "best epoch", "stopped by the cap"],
                    [[name[h], _pm(res[h]["training"]["epochs"], 1), _pm(res[h]["training"]["best_epoch"], 1, 1),
                      f"{res[h]['training']['stopped_by_max']} of {res[h]['training']['runs']}"] for h in order])
    lines += ["", f"**Cost** (parameters; MFLOPs per frame at the training window of {result['params']['train']['window']} "
              "frames, matmuls and convolutions; CPU latency per 1000 frames in batches of 16 windows; training "
              "time per run on this machine)", ""]
    lines += _table(["parameters", "MFLOPs / frame", "CPU ms / 1000 frames", "train s / run"],
                    [[name[h], f"{res[h]['parameters']:,}", f"{res[h]['mflops_per_frame']:.3f}",
                      f"{res[h]['cpu_ms_per_1000_frames']:.1f}", f"{res[h]['train_seconds']['mean']:.0f}"]
                     for h in order])
    return "\n".join(lines) + "\n"


def table_console() -> Console:
    """stdout, as wide as the terminal; 200 columns when not a terminal (logs, CI) so the
    tables do not wrap."""
    return Console() if sys.stdout.isatty() else Console(width=200)


def _override(cfg: CompareParams, heads: str | None, seeds: str | None, source: Path) -> CompareParams:
    data = cfg.model_dump()
    if heads:
        data["heads"] = [h.strip() for h in heads.split(",") if h.strip()]
        if data["reference"] not in data["heads"]:
            data["reference"] = data["heads"][0]
    if seeds:
        try:
            data["seeds"] = [int(s) for s in seeds.split(",")]
        except ValueError:
            raise ParamsError(f"--seeds: expected comma-separated integers, got {seeds!r}") from None
    try:
        return CompareParams.model_validate(data)
    except ValueError as exc:
        raise ParamsError(f"{source}: compare: {exc}") from None


def command(
    params: Annotated[Path, typer.Option(help="Params file.")] = DEFAULT_PARAMS,
    heads: Annotated[str | None, typer.Option(help="Comma-separated heads [default: compare.heads].")] = None,
    seeds: Annotated[str | None, typer.Option(help="Comma-separated seeds [default: compare.seeds].")] = None,
    show: Annotated[bool, typer.Option("--show", help="Only print the last comparison's table.")] = False,
    engine: Annotated[str | None, typer.Option(
        help="local | ray [default: run.engine]; `ray` with run.address null starts Ray on this "
             "machine. The numbers do not depend on it (each run uses run.compare.cpus threads).")] = None,
) -> None:
    """Train and evaluate several heads over several seeds on the same cache; compare them."""
    p = load_params(params)
    if show:
        table = p.path(p.compare.table)
        if not table.is_file():
            raise InputError(f"{table}: no comparison yet; run `jmt compare`")
        table_console().print(Markdown(table.read_text()))
        return
    root = p.root
    if heads or seeds:
        p = p.model_copy(update={"compare": _override(p.compare, heads, seeds, params)})
    if engine:
        if engine not in ("local", "ray"):
            raise ParamsError(f"--engine: expected local or ray, got {engine!r}")
        p = p.model_copy(update={"run": p.run.model_copy(update={"engine": engine})})
    p._root = root
    run_compare(p)
