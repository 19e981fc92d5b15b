"""`jmt tune`: every head of `compare.heads` (`only:*` included: the tuned unimodal baseline is
the row the literature says matters most) searched over its own space with the same budget and
the same algorithm, on validation only; the test split is never read.

Parts: `space.py` (the shared space, each head's part, overrides), `study.py` (one Optuna study
per head in the study database, the budget and ASHA schedule), `trial.py` (one trial step on
the engine). Written: `tune.metrics` (every trial: configuration, per-epoch validation score,
how it stopped, epochs, seconds; per head the effort spent, the best configuration and the
parameter importances) and `tune.table`. `jmt compare` with `compare.configs: tuned` trains each
head with its best configuration (docs/compare.md, "Tuning").
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Annotated, Any

import optuna
import typer
from optuna.trial import TrialState

from pipeline.config import DEFAULT_PARAMS, Params, load_params
from pipeline.console import console
from pipeline.engine import run_units, shared_storage, threads_for
from pipeline.errors import InputError, ParamsError
from pipeline.stage2 import checkpoints
from pipeline.stage2.compare import (comparison_fingerprints, engine_override, expanded_heads, heads_override,
                                     print_table, write_outputs)
from pipeline.stage2.compare.runs import code_fingerprint, shared_params
from pipeline.stage2.tune.space import check_space, configured, distributions, space_of
from pipeline.stage2.tune.study import (FINISHED, Schedule, attrs, open_search, open_storage, rung_caps, storage_url,
                                        study_name)
from pipeline.stage2.tune.tables import markdown
from pipeline.stage2.tune.trial import run_step

__all__ = ["run_tune", "best_configs", "command"]

CAP_FREE_SCHEDULES = ("warmup_plateau", "plateau", "none")  # ASHA's rungs need a schedule blind to train.epochs


def _streams(params: Params) -> list[str]:
    return [s["name"] for s in checkpoints.provenance(params.path(params.embed.out))["streams"]]


def fold_views(params: Params) -> list[Path]:
    """The labels folder of each run a trial trains: none (the official splits), or each fold's
    labels view (tune.folds = k >= 2, pipeline/stage2/folds.py), built once before any trial."""
    k = params.tune.folds
    if k < 2:
        return []
    from pipeline.stage2 import folds

    return [folds.fold_labels(params, k, i, params.path(params.tune.out)) for i in range(k)]


def trial_runs(head_params: Params, views: list[Path], config: dict) -> list[Params]:
    """The params of each run of one trial: the head's params with the configuration, once per
    fold view (or once)."""
    run = configured(head_params, config)
    return [run.updated(labels={"out": str(v)}) for v in views] or [run]


def run_tune(params: Params) -> dict:
    """Runs (or resumes) every head's search; writes tune.metrics and tune.table."""
    cfg = params.tune
    t0 = time.time()
    if cfg.scheduler == "asha" and params.train.schedule not in CAP_FREE_SCHEDULES:
        raise ParamsError(f"tune.scheduler asha trains each rung to a larger train.epochs, which train.schedule "
                          f"{params.train.schedule!r} depends on: use one of {', '.join(CAP_FREE_SCHEDULES)} "
                          "or tune.scheduler: none")
    heads = expanded_heads(params, _streams(params))
    out = params.path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    steps_dir = out / "trials"
    shutil.rmtree(steps_dir, ignore_errors=True)   # steps of a killed search: their trials are retried
    steps_dir.mkdir()
    url = storage_url(cfg, out)
    storage = open_storage(url)
    fingerprints = comparison_fingerprints(params)
    views = fold_views(params)
    defaults = {**{f"model.{k}": v for k, v in params.model.model_dump().items()},
                **{f"train.{k}": v for k, v in params.train.model_dump().items()}}
    searches, names = [], {}
    for head in heads:
        space = space_of(head, cfg.space)
        check_space(params, head, space)
        head_params = params.updated(model={"fusion": head})
        what = {"space": space, "params": shared_params(head_params), "fingerprints": fingerprints,
                "code": code_fingerprint(head, params.train.tasks), "folds": cfg.folds, "sampler": cfg.sampler,
                "startup_trials": cfg.startup_trials, "scheduler": cfg.scheduler, "grace": cfg.grace_epochs,
                "reduction": cfg.reduction, "seed": cfg.seed, "train_seed": params.train.seed,
                "threads": threads_for(params.run.compare)}
        names[head] = study_name(head, what)
        searches.append(open_search(head, space, names[head], storage, cfg, defaults,
                                    lambda config, hp=head_params: trial_runs(hp, views, config)))
    res = params.run.compare
    resources = res.gpus or res.cpus
    say = lambda line: console.print(f"[cyan]tune[/] {line}", highlight=False)  # noqa: E731
    console.print(f"[cyan]tune[/]: {len(heads)} heads, budget {_budget_text(cfg)} per head, sampler {cfg.sampler}, "
                  f"scheduler {cfg.scheduler}; study {url}", highlight=False)
    if params.run.engine == "local":
        schedule = Schedule(searches, cfg, params.train.epochs, steps_dir, resources, say=say)
        run_units(run_step, schedule, cfg=params.run, res=res, on_result=schedule.finished)
    else:
        with shared_storage(steps_dir) as marker:
            schedule = Schedule(searches, cfg, params.train.epochs, steps_dir, resources, (marker,), say)
            run_units(run_step, schedule, cfg=params.run, res=res, on_result=schedule.finished, queued=1)
    result = summary(params, heads, searches, names, url)
    # this invocation alone (a resumed search that had nothing left to do: zeros); the search's
    # whole effort is each head's `effort`, summed over its trials
    result["this_run"] = {
        "seconds": round(time.time() - t0, 1),
        "steps": schedule.steps_done,
        # from the first step handed out to the last result: the search without start-up
        "search_span_s": round(schedule.span[1] - schedule.span[0], 1) if schedule.span else 0.0,
        # in the study database (asks, rung reports, tells), in the driver, beside the trials' own seconds
        "study_seconds": round(schedule.study_seconds, 3)}
    metrics, table = params.path(cfg.metrics), params.path(cfg.table)
    write_outputs(metrics, table, result, markdown(result))
    console.print(f"[green]tune[/]: {time.time() - t0:.0f} s -> {metrics}, {table}", highlight=False)
    return result


def _budget_text(cfg) -> str:
    if cfg.budget == "epochs":
        return f"{cfg.epochs_budget} epochs (at most {cfg.trials} trials)"
    if cfg.budget == "seconds":
        return f"{cfg.seconds_budget:g} resource-seconds (at most {cfg.trials} trials)"
    return f"{cfg.trials} trials"


def _importances(study: optuna.Study) -> dict[str, float] | str:
    """Optuna's parameter importances (fANOVA) over the completed trials; why not, when not."""
    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if len(done) < 2:
        return "fewer than 2 completed trials"
    try:
        return {k: round(v, 4) for k, v in optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)).items()}
    except (RuntimeError, ValueError) as exc:
        return f"not computed: {exc}"


def _trial_row(t: optuna.trial.FrozenTrial) -> dict:
    a = attrs(t)
    return {"number": t.number, "state": t.state.name.lower(), "value": None if t.value is None else round(t.value, 6),
            "config": a.get("config", t.params), "stopped": a.get("stopped", "interrupted"),
            "values": a.get("values", []), "epochs": a.get("epochs", 0), "seconds": a.get("seconds", 0.0),
            "resource_seconds": a.get("resource_seconds", 0.0), "rungs": a.get("rungs", []), "nodes": a.get("nodes", []),
            **({"default": True} if a.get("default") else {}), **({"retry_of": a["retry_of"]} if "retry_of" in a else {})}


def best_trial(finished: list[optuna.trial.FrozenTrial]) -> optuna.trial.FrozenTrial | None:
    """The best configuration of a search: the completed trial (trained until early stopping or
    train.epochs) with the highest value; when none completed (a budget too small for any trial
    to climb every rung), the highest value among the trials trained furthest."""
    complete = [t for t in finished if t.state == TrialState.COMPLETE and t.value is not None]
    if complete:
        return max(complete, key=lambda t: t.value)
    ranked = [t for t in finished if t.value is not None]
    return max(ranked, key=lambda t: (len(attrs(t).get("values", [])), t.value), default=None)


def summary(params: Params, heads: list[str], searches, names: dict[str, str], url: str) -> dict:
    """tune.json: the protocol, and per head its study, space, effort, trials and best config."""
    cfg = params.tune
    res = params.run.compare
    out: dict[str, Any] = {
        "heads": heads, "tasks": list(params.train.tasks),
        "protocol": {"budget": cfg.budget, "trials": cfg.trials, "epochs_budget": cfg.epochs_budget,
                     "seconds_budget": cfg.seconds_budget, "sampler": cfg.sampler, "startup_trials": cfg.startup_trials,
                     "scheduler": cfg.scheduler, "grace_epochs": cfg.grace_epochs, "reduction": cfg.reduction,
                     "rungs": rung_caps(cfg, params.train.epochs), "seed": cfg.seed, "folds": cfg.folds,
                     "train_seed": params.train.seed, "objective": "best validation score over epochs "
                     "(the sum of the tasks' metrics), official validation split" if cfg.folds < 2 else
                     f"mean over {cfg.folds} folds of the best validation score",
                     "resource": "GPU" if res.gpus else "CPU", "resources_per_step": res.gpus or res.cpus,
                     "test_read": False},
        "storage": url if params.tune.storage else "study.db in tune.out",
        "params": shared_params(params), "results": {},
    }
    for s in searches:
        trials = s.study.get_trials(deepcopy=False)
        finished = [t for t in trials if t.state in FINISHED]
        complete = [t for t in finished if t.state == TrialState.COMPLETE]
        best = best_trial(finished)
        out["results"][s.head] = {
            "study": names[s.head], "space": s.space, "searched": sorted(distributions(s.space)),
            "effort": {"trials": len(finished), "complete": len(complete),
                       "pruned": sum(t.state == TrialState.PRUNED for t in finished),
                       "epochs": s.effort.epochs, "seconds": round(s.effort.seconds, 1),
                       "resource_seconds": round(s.effort.resource_seconds, 1)},
            "best": None if best is None else {"trial": best.number, "value": round(best.value, 6),
                                               "config": attrs(best)["config"],
                                               "epochs": len(attrs(best).get("values", [])),
                                               "complete": best.state == TrialState.COMPLETE},
            "default": next((_trial_row(t) for t in finished if t.user_attrs.get("default")), None),
            "importances": _importances(s.study),
            "trials": [_trial_row(t) for t in trials],
        }
    return out


def best_configs(params: Params, heads: list[str]) -> dict[str, dict]:
    """head -> its best configuration, from the tune output `compare.tuned` names; an error
    naming the file and the head when a head was not tuned or has no completed trial."""
    path = params.path(params.compare.tuned)
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: no tuning result to read ({exc}); run `jmt tune` first") from None
    out = {}
    for head in heads:
        best = (result.get("results", {}).get(head) or {}).get("best")
        if not isinstance(best, dict) or not isinstance(best.get("config"), dict):
            raise InputError(f"{path}: no tuned configuration for head {head}; run `jmt tune` with it in compare.heads")
        out[head] = best["config"]
    return out


def command(
    params: Annotated[Path, typer.Option(help="Params file.")] = DEFAULT_PARAMS,
    heads: Annotated[str | None, typer.Option(help="Comma-separated heads (default: compare.heads).")] = None,
    trials: Annotated[int | None, typer.Option(help="Trials per head (default: tune.trials).")] = None,
    engine: Annotated[str | None, typer.Option(help="local | ray (default: run.engine).")] = None,
    show: Annotated[bool, typer.Option("--show", help="Only print the last search's table.")] = False,
) -> None:
    """Search every head's configuration with the same budget, on validation only (Optuna)."""
    p = load_params(params)
    if show:
        print_table(p.path(p.tune.table), "no search yet; run `jmt tune`")
        return
    changes: dict = {**heads_override(p.compare, heads, None, params), **engine_override(engine)}
    if trials is not None:
        changes["tune"] = {"trials": trials}
    run_tune(p.updated(**changes) if changes else p)
