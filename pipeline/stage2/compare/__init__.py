"""`jmt compare`: every head in `compare.heads` x every seed in `compare.seeds`, trained and
evaluated on the same caches, for every task of `train.tasks`, with numbers a reviewer can check.

The job is split by part: `runs.py` trains and evaluates one (head, seed) in its folder (or
reuses it when its key matches); `aggregate.py` turns the runs into per-head summaries over
seeds, paired differences from `compare.reference` on each task's metric (and on their sum with
several tasks) with rerun margins and verdicts (`verdicts.py`), availability subsets, training
protocol and cost; `tables.py` writes the markdown tables and findings. Written to
`compare.metrics` (JSON) and `compare.table` (markdown), and printed. `only:*` in compare.heads
stands for the unimodal reference of every stream of the cache.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markdown import Markdown

from pipeline import cache
from pipeline.config import DEFAULT_PARAMS, CompareParams, Params, load_params
from pipeline.console import console
from pipeline.engine import Unit, run_units, shared_storage
from pipeline.errors import InputError, ParamsError
from pipeline.stage2 import checkpoints
from pipeline.stage2.causal import protocol_paths
from pipeline.stage2.windows import PROTOCOLS
from pipeline.stage2.compare.aggregate import SCORE, corpus_facts, head_results, run_availability
from pipeline.stage2.compare.execute import execute_run, remote_run
from pipeline.stage2.compare.runs import (SPLITS, code_fingerprint, folder_name, garbage, load_predictions, load_run,
                                          planned_runs, remove, shared_params)
from pipeline.stage2.compare import crossval, tuned
from pipeline.stage2.compare.tables import markdown
from pipeline.stage2.cost import head_cost
from pipeline.stage2.data import load_splits, stream_widths
from pipeline.stage2.heads import build_head, head_names
from pipeline.stage2.protocol import availability_of, conditions_of, labels_of, subsets_of
from pipeline.stage2.train import head_kwargs
from pipeline.stage2.verdicts import annotate
from pipeline.tasks import tasks_of

__all__ = ["SPLITS", "load_predictions", "markdown", "run_compare", "command", "folder_name", "run_folder"]


def _said(info: dict, how: str, order: list, i: int) -> None:
    s = info["scores"]
    test = f", test {s['test']['full'][SCORE]:.4f}" if "test" in s else ""
    console.print(f"[{i}/{len(order)}] {info['head']} seed {info['seed']}: {how}, "
                  f"validation score {s['validation']['full'][SCORE]:.4f}{test}", highlight=False)


def comparison_fingerprints(params: Params) -> dict[str, str]:
    """What every run key of a comparison shares beyond its params: the embeddings and labels
    caches' fingerprints (recorded content hashes, not every byte) and, when not offline, the
    prediction protocol. The code's fingerprint is per run (`runs.run_key`)."""
    out = {"cache": cache.folder_fingerprint(params.path(params.embed.out)),
           "labels": cache.folder_fingerprint(params.path(params.labels.out))}
    if params.compare.protocol != "offline":  # in the key only when set: offline runs keep theirs
        out["protocol"] = params.compare.protocol
    return out


def expanded_heads(params: Params, streams: list[str]) -> list[str]:
    """compare.heads with `only:*` as one head per stream; an unknown head fails here."""
    try:
        return head_names(params.compare.heads, streams)
    except ValueError as exc:
        raise ParamsError(f"compare.heads: {exc}") from None


def run_folder(params: Params, result: dict, head: str, seed: int) -> Path:
    """The folder of a comparison's (head, seed) run, as its compare.json names it."""
    row = next((r for r in result["runs"] if r["head"] == head and r["seed"] == seed), None)
    if row is None:
        raise InputError(f"{params.path(params.compare.metrics)}: no run of {head} seed {seed}")
    name = str(row.get("folder", ""))
    if not name or name in (".", "..") or Path(name).name != name or "\\" in name:  # read from a file: a plain name
        raise InputError(f"{params.path(params.compare.metrics)}: run {head} seed {seed}: folder {name!r} is not "
                         "a folder name inside compare.runs")
    folder = params.path(params.compare.runs) / name
    if not (folder / "run.json").is_file():
        raise InputError(f"{folder}: run missing; run `jmt compare` again to rebuild it")
    return folder


def every_planned_run(params: Params) -> list:
    """Every run a params file's comparison needs: with folds, each fold's; with tuned configs,
    the tuned runs and the default ones beside them (their views and tune output as they are now)."""
    if params.compare.folds >= 2:
        from pipeline.stage2 import folds

        k, root = params.compare.folds, params.path(params.compare.runs)
        return [r for i in range(k) for r in every_planned_run(params.updated(
            labels={"out": str(folds.fold_labels(params, k, i, root))}, compare={"folds": 0}))]
    streams = [s["name"] for s in checkpoints.provenance(params.path(params.embed.out))["streams"]]
    heads = expanded_heads(params, streams)
    runs = planned_runs(params, heads, comparison_fingerprints(params))
    if params.compare.configs == "tuned":
        from pipeline.stage2.tune import best_configs
        from pipeline.stage2.tune.space import configured

        own = {h: configured(params, c) for h, c in best_configs(params, heads).items()}
        runs += planned_runs(params, heads, comparison_fingerprints(params), own)
    return runs


def collect_garbage(params: Params, keep: list[Params], dry_run: bool = False) -> list[tuple[Path, int]]:
    """Removes from `params`' runs folder every run that neither `params` nor any of `keep`
    names (their comparisons' run keys with the caches and code at hand); returns what it
    removed (or would, with dry_run)."""
    keys: set[str] = {r.key for p in (params, *keep) for r in every_planned_run(p)}
    found = garbage(params.path(params.compare.runs), keys)
    if not dry_run:
        remove(found)
    for folder, size in found:
        console.print(f"{'would remove' if dry_run else 'removed'} {folder} ({size / 1e6:.1f} MB)", highlight=False)
    console.print(f"[green]compare --gc[/]: {len(found)} run folder(s), {sum(s for _, s in found) / 1e6:.1f} MB "
                  f"{'to free' if dry_run else 'freed'}; {len(keys)} run(s) named by the params kept", highlight=False)
    return found


def run_compare(params: Params) -> dict:
    """Runs (or reuses) every (head, seed), aggregates, writes the JSON and markdown table."""
    cfg: CompareParams = params.compare
    if cfg.folds >= 2:  # one comparison per fold, then the summary over folds x seeds
        return crossval.run_crossval(params, run_compare)
    t0 = time.time()
    folder = params.path(params.embed.out)
    tasks = tasks_of(params.train.tasks, params.tasks)
    splits = load_splits(params)
    scored = {s: {t: e for t, e in splits.of(s).items() if e} for s in SPLITS}
    if not scored["validation"]:
        raise InputError(f"{params.path(params.labels.out)}: no validation entries for {', '.join(tasks)}")
    if not scored["test"]:
        console.print(f"[yellow]compare:[/] no test entries in {folder}; validation only", highlight=False)
    scored = {s: by for s, by in scored.items() if by}
    streams = stream_widths(splits.train + splits.union("validation"))
    heads = expanded_heads(params, list(streams))
    if cfg.reference not in heads:
        raise ParamsError(f"compare.reference {cfg.reference!r} is not among the heads {heads}")
    cfg = cfg.model_copy(update={"heads": heads})
    configs, default = {}, None
    if cfg.configs == "tuned":  # each head with its own best configuration; the default comparison beside it
        from pipeline.stage2.tune import best_configs  # tune imports this package: here, not at the top
        from pipeline.stage2.tune.space import configured

        configs = {h: configured(params, c) for h, c in best_configs(params, heads).items()}
        console.print("[cyan]compare[/]: the default configuration first (the same heads and seeds)", highlight=False)
        default = run_compare(params.updated(compare={"configs": "default", **tuned.default_paths(params)}))
    params_of = {h: configs.get(h, params) for h in heads}
    labels = {s: {t: labels_of(e, t) for t, e in by.items()} for s, by in scored.items()}
    availability = {s: {t: availability_of(e) for t, e in by.items()} for s, by in scored.items()}
    fingerprints = comparison_fingerprints(params)
    runs_dir = params.path(cfg.runs)
    runs: dict[tuple[str, int], dict] = {}
    planned = planned_runs(params, heads, fingerprints, params_of)
    folders = {(r.head, r.seed): r.folder for r in planned}
    order = [(r.head, r.seed) for r in planned]
    todo: list[Unit] = []
    for r in planned:
        info = load_run(r.folder, r.key)
        if info is None:
            todo.append(Unit(f"{r.head} seed {r.seed}", (params_of[r.head], r.head, r.seed, r.folder, r.key)))
        else:
            runs[r.head, r.seed] = {**info, "reused": True}
            _said(info, "reused", order, len(runs))

    def finished(unit: Unit, info: dict) -> None:
        head, seed = unit.args[1], unit.args[2]  # (params, head, seed, folder, key, ...)
        runs[head, seed] = {**info, "reused": False}
        _said(info, f"trained in {info['seconds']:.0f} s", order, len(runs))

    if params.run.engine == "local":  # in this process, on the splits loaded above
        run_units(lambda *args: execute_run(*args, splits), todo, cfg=params.run,
                  res=params.run.compare, on_result=finished)
    elif todo:  # each run a Ray task that reads the caches itself
        runs_dir.mkdir(parents=True, exist_ok=True)
        with shared_storage(runs_dir) as marker:
            run_units(remote_run, (Unit(u.name, (*u.args, marker)) for u in todo), cfg=params.run,
                      res=params.run.compare, on_result=finished)
    preds = {}
    for head, seed in order:
        preds[head, seed] = load_predictions(folders[head, seed])
        # scored here, not stored in the run: the masks are read from the cache at hand
        runs[head, seed]["availability"] = run_availability(preds[head, seed], labels, availability, tasks,
                                                            cfg.min_subset_frames)
    conditions = list(conditions_of(list(streams)))
    results: dict = {}
    for head in cfg.heads:
        own = params_of[head]
        model = build_head(head, **head_kwargs(own.model.model_copy(update={"fusion": head}), streams,
                                               params.train.tasks))
        r = head_cost(model, streams, own.train.window, repeats=cfg.latency_repeats)
        r.update(head_results(head, runs, preds, labels, availability, tasks, conditions, cfg))
        results[head] = r
    seconds = time.time() - t0
    subsets = subsets_of(list(streams))
    out = {
        "corpus": corpus_facts(params, splits, labels, availability, subsets, checkpoints.provenance(folder)),
        "tasks": list(tasks), "streams": list(streams), "metrics": {t: list(task.metrics) for t, task in tasks.items()},
        "main_metric": {t: task.metric for t, task in tasks.items()},
        "heads": list(cfg.heads), "seeds": list(cfg.seeds), "reference": cfg.reference,
        "confidence": cfg.confidence, "bootstrap": cfg.bootstrap, "min_videos_bootstrap": cfg.min_videos_bootstrap,
        "subsets": subsets, "conditions": conditions, "min_subset_frames": cfg.min_subset_frames,
        # recorded when not the default, so an offline comparison's file is as before
        **({"protocol": cfg.protocol} if cfg.protocol != "offline" else {}),
        "params": shared_params(params),
        "fingerprints": {**fingerprints, "code": {h: code_fingerprint(h, params.train.tasks) for h in cfg.heads}},
        "results": results,
        "runs": [_run_row(h, s, runs[h, s], folders[h, s]) for h in cfg.heads for s in cfg.seeds],
        "timing": {"seconds": round(seconds, 1), "trained": sum(not r["reused"] for r in runs.values()),
                   "reused": sum(r["reused"] for r in runs.values())},
    }
    annotate(out, cfg.rerun_margin)  # margins and verdicts: what the findings may state
    if default is not None:
        out["configs"] = "tuned"
        out["tuning"] = tuned.tuning_block(params, default, out, best_configs(params, heads))
    metrics_path, table_path = params.path(cfg.metrics), params.path(cfg.table)
    write_outputs(metrics_path, table_path, out, markdown(out))
    console.print(f"[green]compare[/]: {out['timing']['trained']} runs trained, {out['timing']['reused']} reused, "
                  f"{seconds:.0f} s -> {metrics_path}, {table_path}", highlight=False)
    return out


def _rounded(value):
    return round(value, 6) if isinstance(value, float) else value


def _run_row(head: str, seed: int, run: dict, folder: Path) -> dict:
    """One run as compare.json lists it: its folder (under compare.runs) and key, how it trained
    and every score, rounded."""
    return {"head": head, "seed": seed, "folder": folder.name, "key": run["key"], "reused": run["reused"],
            "seconds": run["seconds"], "epochs": run["epochs"], "best_epoch": run["best_epoch"],
            "stopped": run["stopped"], "left_out": run.get("left_out", []),
            **{split: {c: {k: ({m: _rounded(x) for m, x in v.items() if m != "frames"} if isinstance(v, dict)
                               else _rounded(v)) for k, v in row.items()}
                       for c, row in sc.items()}
               for split, sc in run["scores"].items()},
            "availability": {split: {t: {sub: {k: _rounded(v) for k, v in row.items()} for sub, row in subs.items()}
                                     for t, subs in by.items()}
                             for split, by in run["availability"].items()}}


def write_outputs(metrics: Path, table: Path, result: dict, text: str) -> None:
    """Writes a result's JSON and its markdown table (folders made) and prints the table."""
    for path in (metrics, table):
        path.parent.mkdir(parents=True, exist_ok=True)
    metrics.write_text(json.dumps(result, indent=1) + "\n")
    table.write_text(text)
    table_console().print(Markdown(text))


def table_console() -> Console:
    """stdout, as wide as the terminal; 200 columns when not a terminal (logs, CI) so the
    tables do not wrap."""
    return Console() if sys.stdout.isatty() else Console(width=200)


def print_table(table: Path, missing: str) -> None:
    """Prints a markdown table file (`--show`), or an error naming it and what to run."""
    if not table.is_file():
        raise InputError(f"{table}: {missing}")
    table_console().print(Markdown(table.read_text()))


def engine_override(engine: str | None) -> dict:
    """`--engine`'s change to params (none when not given)."""
    if not engine:
        return {}
    if engine not in ("local", "ray"):
        raise ParamsError(f"--engine: expected local or ray, got {engine!r}")
    return {"run": {"engine": engine}}


def heads_override(cfg: CompareParams, heads: str | None, seeds: str | None, source: Path) -> dict:
    """`--heads`/`--seeds`' change to params (none when neither is given)."""
    return {"compare": _override(cfg, heads, seeds, source)} if heads or seeds else {}


def _override(cfg: CompareParams, heads: str | None, seeds: str | None, source: Path) -> dict:
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
        CompareParams.model_validate(data)
    except ValueError as exc:
        raise ParamsError(f"{source}: compare: {exc}") from None
    return data


def command(
    params: Annotated[Path, typer.Option(help="Params file.")] = DEFAULT_PARAMS,
    heads: Annotated[str | None, typer.Option(help="Comma-separated heads (default: compare.heads); "
                                                   "only:<stream>, only:* for every stream.")] = None,
    seeds: Annotated[str | None, typer.Option(help="Comma-separated seeds (default: compare.seeds).")] = None,
    tasks: Annotated[str | None, typer.Option(help="Comma-separated tasks (default: train.tasks), e.g. va.")] = None,
    show: Annotated[bool, typer.Option("--show", help="Only print the last comparison's table.")] = False,
    gc: Annotated[bool, typer.Option("--gc", help="Train nothing: remove from compare.runs every run that neither "
                                      "these params nor a --keep file names (older configurations, older code).")
                  ] = False,
    keep: Annotated[list[Path] | None, typer.Option(help="With --gc: another params file whose runs stay "
                                                         "(repeatable; for params files sharing a runs folder).")
                    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="With --gc: only list what would go.")] = False,
    engine: Annotated[str | None, typer.Option(
        help="local | ray (default: run.engine); `ray` with run.address null starts Ray on this "
             "machine. The numbers do not depend on it (each run uses run.compare.cpus threads).")] = None,
    protocol: Annotated[str | None, typer.Option(
        help="offline | causal (default: compare.protocol): how each run predicts validation and test. "
             "Another than the params' uses <runs>-<protocol>, <metrics>-<protocol>.json, "
             "<table>-<protocol>.md.")] = None,
) -> None:
    """Train and evaluate several heads over several seeds on the same cache; compare them."""
    p = load_params(params)
    if show:
        print_table(p.path(p.compare.table), "no comparison yet; run `jmt compare`")
        return
    if gc:
        collect_garbage(p, [load_params(k) for k in keep or []], dry_run)
        return
    changes: dict = {**heads_override(p.compare, heads, seeds, params), **engine_override(engine)}
    if tasks:
        changes["train"] = {"tasks": [t.strip() for t in tasks.split(",") if t.strip()], "task_weights": {}}
    if protocol is not None and protocol not in PROTOCOLS:
        raise ParamsError(f"--protocol: one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if protocol and protocol != p.compare.protocol:
        changes["compare"] = {**changes.get("compare", {}), "protocol": protocol, **protocol_paths(
            {"runs": p.compare.runs, "metrics": p.compare.metrics, "table": p.compare.table}, protocol)}
    run_compare(p.updated(**changes) if changes else p)
