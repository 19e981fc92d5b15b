"""`jmt tune`: real searches on the tiny demo cache (two heads, a tiny space, a few epochs): the
test split cannot move a search, the same seed proposes the same configurations, the first trial
is the default configuration and scores what `train_model` scores, ASHA prunes at its rungs,
every head gets the same budget (also with scripted step results through the scheduler itself),
a search killed with SIGKILL resumes from its study database, trials run on both nodes of a real
Ray cluster; and `best_configs` names the file and the head it cannot find."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml

from pipeline import cache, engine
from pipeline.config import TuneParams, load_params
from pipeline.errors import InputError, ParamsError
from pipeline.stage2.compare import comparison_fingerprints
from pipeline.stage2.train import train_model
from pipeline.stage2.tune import best_configs, run_tune
from pipeline.stage2.tune.study import FINISHED, Schedule, attrs, open_search, open_storage, rung_caps

from ..embeddings import random_labels
from ..stage1.helpers import params_at, write_params

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/stage2/conftest.py

HEADS = ["concat", "only:audio"]
# tiny models only; lr, weight decay, dropout and modality dropout keep the shared ranges
SPACE = {"model.d_model": [8, 16], "train.window": [16], "train.batch_size": [4], "model.temporal": ["identity", "tcn"]}
JMT = str(Path(sys.executable).with_name("jmt"))


def tune_sections(tiny_cache, folder, **sections) -> dict:
    """The params sections of a small search over the session's tiny caches: HEADS, three random
    trials each, no ASHA, four epochs (patience 2), d_model 16, windows of 16; outputs in `folder`;
    `sections` override keys."""
    params, _ = tiny_cache
    over = {"embed": {"out": str(params.path(params.embed.out))},
            "labels": {"out": str(params.path(params.labels.out))}, "model": {"d_model": 16},
            "train": {"epochs": 4, "patience": 2, "window": 16, "hop": 8, "batch_size": 4,
                      "out": str(folder / "model.pt"), "live_dir": str(folder / "live")},
            "compare": {"heads": HEADS, "reference": "concat", "seeds": [0]},
            "tune": {"trials": 3, "sampler": "random", "scheduler": "none", "space": SPACE, "seed": 0,
                     "out": str(folder / "tune"), "metrics": str(folder / "tune.json"), "table": str(folder / "tune.md")}}
    for section, values in sections.items():
        over[section] = {**over.get(section, {}), **values}
    return over


def tune_params(tiny_cache, folder, **sections):
    params, _ = tiny_cache
    return params_at(folder, params.path(params.corpus.root), **tune_sections(tiny_cache, folder, **sections))


def trials(result: dict, head: str) -> list[dict]:
    return result["results"][head]["trials"]


def numbers(result: dict) -> dict:
    """Per head, what each trial proposed and measured (not its timings)."""
    keys = ("number", "state", "config", "values", "value", "stopped", "epochs", "rungs")
    return {h: [{k: t[k] for k in keys} for t in trials(result, h)] for h in result["results"]}


@pytest.fixture(scope="module")
def searched(tiny_cache, tmp_path_factory):
    """The small search of `tune_params` (local engine): (params, result)."""
    params = tune_params(tiny_cache, tmp_path_factory.mktemp("searched"))
    return params, run_tune(params)


# ------------------------------------------------------------------- the test split is never read

OWN = {"schema", "stage", "entry", "config", "config_hash", "versions", cache.CONTENT_HASH}  # write_entry's own


def relabelled(params, out, split: str, seed: int = 1) -> list[tuple[str, str]]:
    """Copies the labels cache to `out` with every task's labels of the entries in `split` (for
    that task) replaced by random valid labels, through cache.write_entry (content hashes
    recorded, as `jmt labels` does); returns the (entry, dataset) pairs rewritten."""
    source = params.path(params.labels.out)
    rng = np.random.default_rng(seed)
    changed = []
    for name in cache.entries(source):
        with cache.open_entry(cache.entry_path(source, name)) as src:
            redo = {cache.label_key(r["task"]): r["task"] for r in cache.attrs_of(src)["tasks"] if r["split"] == split}
            datasets: list[str] = []
            src.visititems(lambda n, obj: datasets.append(n) if hasattr(obj, "dtype") else None)
            with cache.write_entry(out, name, stage="labels", config=json.loads(src.attrs["config"]),
                                   attrs={k: v for k, v in src.attrs.items() if k not in OWN},
                                   hash_=src.attrs["config_hash"]) as f:
                for d in sorted(datasets):
                    data = src[d][...]
                    if d in redo:
                        new = random_labels(redo[d], len(data), rng).astype(data.dtype).reshape(data.shape)
                        assert not np.array_equal(new, data)
                        data = new
                        changed.append((name, d))
                    f.create_dataset(d, data=data)
    return changed


def test_the_test_split_cannot_move_the_search(searched, tiny_cache, tmp_path):
    """Every test label rewritten at random: the same configurations and per-epoch validation
    values, trial by trial. Validation labels rewritten the same way do move it (the check sees
    a change where there is one)."""
    params, expected = searched
    rewritten = {}
    for split in ("test", "validation"):
        labels = tmp_path / f"labels-{split}"
        changed = relabelled(params, labels, split)
        if split == "test":
            assert changed and all(name == "demo_02" for name, _ in changed)   # the tiny corpus's test video
        else:
            assert ("demo_01", cache.label_key("va")) in changed
        p = tune_params(tiny_cache, tmp_path / split, labels={"out": str(labels)})
        assert comparison_fingerprints(p)["labels"] != comparison_fingerprints(params)["labels"]
        rewritten[split] = run_tune(p)
    assert rewritten["test"]["protocol"]["test_read"] is False
    assert numbers(rewritten["test"]) == numbers(expected)
    assert numbers(rewritten["validation"]) != numbers(expected)
    for head in HEADS:   # the configurations are the sampler's alone; the values moved
        assert [t["config"] for t in trials(rewritten["validation"], head)] == [t["config"] for t in trials(expected, head)]


# ------------------------------------------------------------------- sampler, default trial, scheduler none

def test_a_fixed_seed_proposes_the_same_configurations_in_a_fresh_folder(searched, tiny_cache, tmp_path):
    params, expected = searched
    again = run_tune(tune_params(tiny_cache, tmp_path / "again"))
    assert numbers(again) == numbers(expected)
    assert {h: r["study"] for h, r in again["results"].items()} == {h: r["study"] for h, r in expected["results"].items()}
    other = run_tune(tune_params(tiny_cache, tmp_path / "seed1", tune={"seed": 1, "trials": 2}))
    for head in HEADS:   # trial 0 is the default for every seed; the sampler's draws follow the seed
        assert trials(other, head)[0]["config"] == trials(expected, head)[0]["config"]
        assert trials(other, head)[1]["config"] != trials(expected, head)[1]["config"]


def test_the_first_trial_is_the_default_configuration_and_scores_what_train_scores(searched):
    params, result = searched
    defaults = {**{f"model.{k}": v for k, v in params.model.model_dump().items()},
                **{f"train.{k}": v for k, v in params.train.model_dump().items()}}
    for head in HEADS:
        first, *rest = trials(result, head)
        assert first["number"] == 0 and first.get("default") is True and not any("default" in t for t in rest)
        assert result["results"][head]["default"] == first
        assert first["config"] == {k: defaults[k] for k in result["results"][head]["space"]}
        assert first["state"] == "complete"
        plain = train_model(params.updated(model={"fusion": head}), quiet=True)   # threads: one_thread, as a step's
        assert first["value"] == pytest.approx(round(max(r["val_score"] for r in plain.history), 6), abs=1e-6)
        assert first["values"] == [round(v, 6) for v in np.maximum.accumulate([r["val_score"] for r in plain.history])]
        assert first["stopped"] == plain.stopped


def test_no_default_trial_when_the_space_leaves_the_default_out(tiny_cache, tmp_path):
    params = tune_params(tiny_cache, tmp_path, compare={"heads": ["concat"]},
                         tune={"trials": 1, "space": {**SPACE, "model.d_model": [8]}})
    result = run_tune(params)
    (only,) = trials(result, "concat")
    assert result["results"]["concat"]["default"] is None and "default" not in only
    assert only["config"]["model.d_model"] == 8


def test_without_a_scheduler_every_trial_trains_until_early_stopping_or_the_epoch_limit(searched):
    params, result = searched
    assert result["protocol"]["rungs"] == [params.train.epochs]
    for head in HEADS:
        rows = trials(result, head)
        assert len(rows) == params.tune.trials and all(t["state"] == "complete" for t in rows)
        for t in rows:
            assert t["rungs"] == [params.train.epochs] and t["epochs"] == len(t["values"])
            assert t["value"] == max(t["values"]) == t["values"][-1]
            assert t["values"] == sorted(t["values"])   # the best so far
            if t["stopped"] == "max_epochs":
                assert len(t["values"]) == params.train.epochs
            else:
                assert t["stopped"] == "patience" and params.train.patience < len(t["values"]) <= params.train.epochs
        effort = result["results"][head]["effort"]
        assert (effort["trials"], effort["complete"], effort["pruned"]) == (3, 3, 0)
        assert effort["epochs"] == sum(t["epochs"] for t in rows)
        best = max(rows, key=lambda t: t["value"])
        assert result["results"][head]["best"] == {"trial": best["number"], "value": best["value"], "config": best["config"],
                                                   "epochs": len(best["values"]), "complete": True}
    table = params.path(params.tune.table).read_text()
    assert all(f"| {head} | 3 (3 / 0) |" in table for head in HEADS)
    assert json.loads(params.path(params.tune.metrics).read_text()) == json.loads(json.dumps(result))


# ------------------------------------------------------------------- ASHA

@pytest.mark.parametrize(("scheduler", "grace", "reduction", "epochs", "caps"), [
    ("asha", 1, 2, 4, [1, 2, 4]), ("asha", 2, 2, 10, [2, 4, 8, 10]), ("asha", 2, 3, 6, [2, 6]),
    ("asha", 4, 3, 4, [4]), ("asha", 5, 3, 4, [4]), ("none", 1, 2, 10, [10])])
def test_rung_caps(scheduler, grace, reduction, epochs, caps):
    assert rung_caps(TuneParams(scheduler=scheduler, grace_epochs=grace, reduction=reduction), epochs) == caps


def test_asha_prunes_at_its_rungs_and_trains_the_rest_to_the_epoch_limit(tiny_cache, tmp_path):
    params = tune_params(tiny_cache, tmp_path, compare={"heads": ["concat"]}, train={"patience": 50},
                         tune={"trials": 6, "scheduler": "asha", "grace_epochs": 1, "reduction": 2})
    result = run_tune(params)
    caps = [1, 2, 4]
    assert result["protocol"]["rungs"] == caps
    rows = trials(result, "concat")
    assert len(rows) == 6 and {t["state"] for t in rows} == {"complete", "pruned"}
    for t in rows:
        assert t["rungs"] == caps[:len(t["rungs"])] and len(t["values"]) == t["rungs"][-1]
        assert t["epochs"] == sum(t["rungs"])   # each rung trained again from the start
        if t["state"] == "pruned":
            assert t["stopped"] == "pruned" and len(t["values"]) < params.train.epochs
        else:
            assert t["stopped"] == "max_epochs" and t["rungs"] == caps and len(t["values"]) == params.train.epochs
    # the rule of the ASHA paper: at most 1/reduction of the trials that reached a rung go on
    # (Optuna's pruner would promote the first trial of every rung unseen: 6 -> 3 -> 2 here)
    reached = [sum(len(t["rungs"]) > i for t in rows) for i in range(len(caps))]
    assert reached[0] == 6 and all(reached[i + 1] <= reached[i] // 2 for i in range(len(caps) - 1)), reached
    effort = result["results"]["concat"]["effort"]
    assert effort["pruned"] == sum(t["state"] == "pruned" for t in rows) and effort["epochs"] == sum(t["epochs"] for t in rows)


def test_asha_refuses_a_schedule_that_depends_on_the_epoch_cap(tiny_cache, tmp_path):
    params = tune_params(tiny_cache, tmp_path, train={"schedule": "warmup_cosine"}, tune={"scheduler": "asha"})
    with pytest.raises(ParamsError, match="warmup_cosine"):
        run_tune(params)


# ------------------------------------------------------------------- the same budget for every head

def scripted(tmp_path, cfg: TuneParams, cost: dict, max_epochs: int, slots: int):
    """Runs jmt's own `Schedule` as the engine does (at most `slots` steps in flight, results in
    the order the steps started) on real Optuna studies, with scripted step results instead of
    training: cost[head] = (seconds per epoch, the epoch early stopping ends a step at, or None).
    A trial's value is its number: ASHA promotes the later trials. Returns {head: HeadSearch}."""
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    searches = [open_search(h, {"train.lr": {"low": 1e-4, "high": 1e-2, "log": True}}, f"{h}-scripted", storage, cfg,
                            {"train.lr": 1e-3}, lambda config: [config]) for h in cost]
    schedule = Schedule(searches, cfg, max_epochs, tmp_path / "steps", 1.0, say=lambda line: None)
    pending: list = []

    def fill():
        while len(pending) < slots and (unit := next(schedule, None)) is not None:
            pending.append(unit)

    fill()
    while pending:
        unit = pending.pop(0)
        head, number = unit.name.split(" trial ")[0], int(unit.name.split(" trial ")[1].split()[0])
        cap = unit.args[2]
        per_epoch, stop = cost[head]
        n = cap if stop is None else min(cap, stop)
        schedule.finished(unit, {"values": [float(number)] * n, "stopped": "patience" if n < cap else "max_epochs",
                                 "epochs": n, "seconds": per_epoch * n, "node": "scripted"})
        fill()
    return {s.head: s for s in searches}


@pytest.mark.parametrize("slots", [1, 3])
@pytest.mark.parametrize(("budget", "scheduler", "trials"), [
    ({"epochs_budget": 19}, "asha", 20), ({"epochs_budget": 19}, "none", 20), ({"epochs_budget": 200}, "none", 4),
    ({"seconds_budget": 19.0}, "asha", 20), ({"seconds_budget": 3.0}, "none", 20), ({}, "asha", 5)])
def test_every_head_spends_the_budget_within_one_step(tmp_path, budget, scheduler, trials, slots):
    """`cheap` trials stop early (3 epochs) and cost a quarter of `dear`'s seconds per epoch: it
    gets more trials, never more than the budget plus one step's cost, and both spend at least
    the budget unless they reach tune.trials (the budget `trials`: exactly tune.trials each)."""
    cfg = TuneParams(trials=trials, sampler="random", scheduler=scheduler, grace_epochs=2, reduction=2, **budget)
    cost = {"cheap": (0.25, 3), "dear": (1.0, None)}
    max_epochs = 8
    caps = rung_caps(cfg, max_epochs)
    searches = scripted(tmp_path, cfg, cost, max_epochs, slots)
    done = {}
    for head, s in searches.items():
        finished = [t for t in s.study.get_trials() if t.state in FINISHED]
        assert not [t for t in s.study.get_trials() if t.state not in FINISHED]   # nothing left running
        done[head] = len(finished)
        assert s.effort.trials == len(finished) <= cfg.trials
        assert s.effort.epochs == sum(attrs(t)["epochs"] for t in finished)
        per_epoch, stop = cost[head]
        step = max(caps) if stop is None else min(max(caps), stop)   # the most one step trains
        if cfg.budget == "trials":
            assert len(finished) == cfg.trials
            continue
        spent, limit, step_cost = ((s.effort.epochs, cfg.epochs_budget, step) if cfg.budget == "epochs" else
                                   (s.effort.resource_seconds, cfg.seconds_budget, step * per_epoch))
        assert spent <= limit + step_cost, (head, spent)
        if len(finished) < cfg.trials:
            assert spent >= limit, (head, spent)
    if cfg.budget != "trials" and done["dear"] < cfg.trials:
        assert done["cheap"] > done["dear"]


def test_a_real_search_spends_the_same_seconds_per_head(tiny_cache, tmp_path):
    """seconds_budget on real training (measured resource-seconds): each head ends within one
    trial of the budget, and at or above it unless it reached tune.trials."""
    params = tune_params(tiny_cache, tmp_path, train={"epochs": 3, "patience": 50},
                         tune={"trials": 8, "seconds_budget": 1.0})
    result = run_tune(params)
    assert result["protocol"]["budget"] == "seconds"
    for head in HEADS:
        rows = trials(result, head)
        spent = sum(t["resource_seconds"] for t in rows)
        assert all(t["state"] == "complete" for t in rows) and len(rows) <= 8
        assert result["results"][head]["effort"]["resource_seconds"] == pytest.approx(spent, abs=0.06)
        assert spent <= 1.0 + max(t["resource_seconds"] for t in rows)
        assert len(rows) == 8 or spent >= 1.0
        assert result["results"][head]["effort"]["epochs"] == 3 * len(rows)


# ------------------------------------------------------------------- SIGKILL and resume

def _db_trials(db) -> list[tuple[str, int, str, int]]:
    """(study, number, state, parameters written) of every trial, read straight from the SQLite file."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
    try:
        return con.execute("SELECT s.study_name, t.number, t.state, (SELECT count(*) FROM trial_params p WHERE "
                           "p.trial_id = t.trial_id) FROM trials t JOIN studies s USING (study_id)").fetchall()
    finally:
        con.close()


def _ready(rows, first: str) -> bool:
    """>= 2 finished trials of the first head, and a trial in flight with its whole configuration
    written (as many parameters as its head's first, finished trial: the driver is not asking)."""
    whole = {s: n for s, number, state, n in rows if number == 0 and state == "COMPLETE"}
    return (sum(s.startswith(f"{first}-") and state in ("COMPLETE", "PRUNED") for s, _, state, _ in rows) >= 2
            and any(state == "RUNNING" and n == whole.get(s) for s, _, state, n in rows))


def _kill_mid_trial(proc, db, first: str, deadline_s: float = 240.0) -> None:
    """SIGKILLs the process group of `proc` while a trial is in flight, once the first head has
    finished two: stopped (SIGSTOP) first, so the database read decides on a still state."""
    t0 = time.time()
    while time.time() - t0 < deadline_s:
        assert proc.poll() is None, "the search ended before it could be killed"
        try:
            ready = db.is_file() and _ready(_db_trials(db), first)
        except sqlite3.OperationalError:
            ready = False
        if ready:
            os.killpg(proc.pid, signal.SIGSTOP)
            try:
                if _ready(_db_trials(db), first):
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=30)
                    return
            except sqlite3.OperationalError:
                pass
            os.killpg(proc.pid, signal.SIGCONT)
        time.sleep(0.05)
    raise AssertionError("no moment with two finished trials and one in flight")


def _trials_by_study(url: str) -> dict[str, list[optuna.trial.FrozenTrial]]:
    storage = open_storage(url)
    out = {s.study_name.rsplit("-", 1)[0]: storage.get_all_trials(s._study_id) for s in storage.get_all_studies()}
    storage.engine.dispose()
    return out


def test_a_search_killed_mid_trial_resumes_from_its_database(tiny_cache, tmp_path):
    """`jmt tune` (the CLI, a params file with `base:`) SIGKILLed while a trial trains: run again,
    the finished trials are kept as they were, the one in flight is marked failed and its
    configuration trained again, and each head ends with tune.trials finished trials, the
    numbers an uninterrupted search gets for the same configurations."""
    params, _ = tiny_cache
    base = write_params(tmp_path / "base", params.path(params.corpus.root),
                        **tune_sections(tiny_cache, tmp_path / "base", train={"epochs": 12, "patience": 50},
                                        tune={"trials": 4}))
    variants = {}
    for name in ("killed", "whole"):
        variants[name] = tmp_path / name / "params.yaml"
        variants[name].parent.mkdir()
        variants[name].write_text(yaml.safe_dump({"base": "../base/params.yaml",
                                                  "tune": {"out": "tune", "metrics": "tune.json", "table": "tune.md"}}))
    killed = load_params(variants["killed"])
    assert killed.path(killed.tune.out) == tmp_path / "killed" / "tune" and killed.tune.trials == 4
    db = tmp_path / "killed" / "tune" / "study.db"
    url = f"sqlite:///{db}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with (tmp_path / "first.log").open("w") as log:
        proc = subprocess.Popen([JMT, "tune", "--params", str(variants["killed"])], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, env=env)
        try:
            _kill_mid_trial(proc, db, "concat")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    before = _trials_by_study(url)
    in_flight = {(h, t.number): t for h, ts in before.items() for t in ts if t.state == optuna.trial.TrialState.RUNNING}
    done = {(h, t.number): t for h, ts in before.items() for t in ts if t.state in FINISHED}
    assert in_flight and sum(h == "concat" for h, _ in done) >= 2

    again = subprocess.run([JMT, "tune", "--params", str(variants["killed"])], capture_output=True, text=True,
                           timeout=400, env=env)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    result = json.loads((tmp_path / "killed" / "tune.json").read_text())
    assert not list((tmp_path / "killed" / "tune" / "trials").iterdir())   # no step left behind
    rows = {(h, t["number"]): t for h in HEADS for t in trials(result, h)}
    for (head, number), t in done.items():   # kept as they were
        row = rows[head, number]
        assert (row["state"], row["value"], row["config"], row["values"]) == (
            t.state.name.lower(), t.value, attrs(t)["config"], attrs(t)["values"])
    retried = {}
    for (head, number), t in in_flight.items():
        assert rows[head, number]["state"] == "fail" and rows[head, number]["stopped"] == "interrupted"
        (retry,) = [r for (h, _), r in rows.items() if h == head and r.get("retry_of") == number]
        assert sorted(t.params) == result["results"][head]["searched"]
        assert retry["state"] == "complete" and {k: retry["config"][k] for k in t.params} == t.params
        retried[head, number] = retry
    for head in HEADS:
        assert result["results"][head]["effort"]["trials"] == 4
        assert sum(t["state"] in ("complete", "pruned") for t in trials(result, head)) == 4
        assert result["results"][head]["default"] is not None

    whole = run_tune(load_params(variants["whole"]))   # the same search, never interrupted
    for head in HEADS:
        assert result["results"][head]["study"] == whole["results"][head]["study"]
        assert whole["results"][head]["effort"]["trials"] == 4
        theirs = {t["number"]: t for t in trials(whole, head)}
        for (h, number), t in done.items():
            if h == head:
                assert (theirs[number]["config"], theirs[number]["values"]) == (rows[h, number]["config"],
                                                                                rows[h, number]["values"])
        for (h, number), retry in retried.items():   # the retried configuration scores what it scores uninterrupted
            if h == head:
                assert theirs[number]["config"] == retry["config"] and theirs[number]["values"] == retry["values"]


def test_trials_in_flight_when_the_driver_died_are_failed_and_retried_when_their_configuration_is_known(tmp_path):
    """Reopened after a driver died: every running trial is marked failed; the default (even
    killed while it was being asked) is queued again as the default, a sampled trial with its
    whole configuration written is queued again, one killed while its parameters were being
    drawn (some written) is not, and no other trial is added."""
    cfg = TuneParams(trials=5, sampler="random", scheduler="none")
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    space = {"train.lr": {"low": 1e-4, "high": 1e-2, "log": True}, "model.d_model": [8, 16]}
    defaults = {"train.lr": 1e-3, "model.d_model": 16}
    first = open_search("concat", space, "concat-x", storage, cfg, defaults, lambda c: [c])
    default = first.study.ask()                                   # popped from the queue, no parameter written yet
    assert default.params == {} and default.user_attrs == {"default": True}
    whole = first.study.ask(fixed_distributions=first.searched)   # sampled, every parameter written
    partial = first.study.ask()                                   # sampled, killed after its first parameter
    partial.suggest_float("train.lr", 1e-4, 1e-2, log=True)
    again = open_search("concat", space, "concat-x", storage, cfg, defaults, lambda c: [c])
    states = [t.state for t in again.study.get_trials()]
    assert states == [optuna.trial.TrialState.FAIL] * 3 + [optuna.trial.TrialState.WAITING] * 2
    retries = [again.study.ask(fixed_distributions=again.searched) for _ in range(2)]
    assert [(r.params, r.user_attrs) for r in retries] == [(defaults, {"default": True, "retry_of": 0}),
                                                           (whole.params, {"retry_of": 1})]
    assert again.effort.trials == 0


# ------------------------------------------------------------------- Ray

def test_a_search_on_a_two_node_ray_cluster_runs_trials_on_both_nodes(searched, ray_cluster, tmp_path):
    """Trials as Ray tasks (one CPU each, two in flight): both nodes train trials, and each trial
    scores what the local engine's search scores for the same configuration."""
    local, expected = searched
    params = local.updated(compare={"heads": ["concat"]},
                           tune={"out": str(tmp_path / "tune"), "metrics": str(tmp_path / "tune.json"),
                                 "table": str(tmp_path / "tune.md")},
                           run={"engine": "ray", "address": ray_cluster.address, "max_retries": 1})
    try:
        result = run_tune(params)
    finally:
        engine.shutdown()
    rows = trials(result, "concat")
    assert len(rows) == 3 and all(len(t["nodes"]) == 1 for t in rows)
    assert len({t["nodes"][0] for t in rows}) == 2, [t["nodes"] for t in rows]
    assert numbers(result)["concat"] == numbers(expected)["concat"]


# ------------------------------------------------------------------- best_configs

def test_best_configs_reads_each_heads_best_and_names_the_file_and_the_missing_head(searched, tmp_path):
    params, result = searched
    tuned = params.updated(compare={"tuned": str(params.path(params.tune.metrics))})
    assert best_configs(tuned, HEADS) == {h: result["results"][h]["best"]["config"] for h in HEADS}
    partial = tmp_path / "tune.json"
    partial.write_text(json.dumps({**result, "results": {"concat": result["results"]["concat"]}}))
    with pytest.raises(InputError, match=rf"{partial}: no tuned configuration for head only:audio"):
        best_configs(params.updated(compare={"tuned": str(partial)}), HEADS)
    missing = tmp_path / "none.json"
    with pytest.raises(InputError, match=rf"{missing}: no tuning result"):
        best_configs(params.updated(compare={"tuned": str(missing)}), ["concat"])
