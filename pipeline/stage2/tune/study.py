"""The searches of `jmt tune`: one Optuna study per head in one study database, and the schedule
that hands their trial steps to the engine with the same budget for every head.

Why Optuna's ask-and-tell with the trials as the engine's units, not Ray Tune: the studies live
in Optuna's RDB storage (SQLite in the tune folder, any SQLAlchemy URL for a cluster) and only
this process writes to it; each trial step is a stateless unit that `pipeline.engine` runs in
this process or as a Ray task with `run.compare`'s resources, retried when a worker dies, like a
`jmt compare` run. A killed search resumes from the database alone: finished trials are read
back, the trials that were in flight are marked failed and their configurations tried again.
(Ray Tune's Optuna searcher keeps its study in memory and resumes from Tune's own checkpoints,
and would add Ray's tune extra for nothing this needs.)

A study is named by the head and a hash of everything its trials' numbers depend on (space,
params, caches, code, folds, sampler, scheduler, seed): run again with the same setup, a search
continues its study (a larger budget adds trials); with another setup it starts a new one.

The budget (tune.trials, tune.epochs_budget or tune.seconds_budget) is per head. A step starts
only while its head has budget left, counting the steps in flight, so every head ends within one
step of the budget. Among the heads with work, the one that has spent the smallest share of its
budget goes first; within a head, ASHA's promotions go before new trials.

ASHA (tune.scheduler: asha; Li et al., "A System for Massively Parallel Hyperparameter Tuning",
2020) on the validation score of the checkpoint a run keeps: rungs at grace, grace x reduction,
... epochs. A new trial is trained to the first rung and waits there; whenever a worker is free,
the best waiting trial that is in the top 1/reduction of all trials that reached its rung (from
the highest rung down) is trained to the next rung, else a new trial starts. A trial is trained
to its next rung from the start again (`trial.py`). Optuna's own successive-halving pruner
cannot make a trial wait, so it promotes the first trials of a rung unseen; here no trial goes
on before `reduction` trials have reached its rung. When the budget is spent, the waiting trials
end as pruned. The first trial of every head is the params' own configuration (where the space
contains it), so the default is always among the candidates.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from pipeline.config import Params, TuneParams
from pipeline.engine import Unit
from pipeline.stage2.tune.space import distributions, fixed

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
RECORD = "jmt"   # a trial's record (config, values, epochs, seconds, ...): one user attribute, one write


def attrs(trial: optuna.trial.FrozenTrial) -> dict:
    """A trial's user attributes with its record's keys laid flat: `config`, `values`,
    `epochs`, `seconds`, `resource_seconds`, `rungs`, `nodes`, `stopped`; `default` and
    `retry_of` when it was queued as such."""
    return {**trial.user_attrs, **trial.user_attrs.get(RECORD, {})}

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def storage_url(cfg: TuneParams, out: Path) -> str:
    """tune.storage, or the SQLite file `study.db` in the tune folder."""
    return cfg.storage or f"sqlite:///{(out / 'study.db').resolve()}"


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage at `url` (SQLite waits for a lock instead of failing at once)."""
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def rung_caps(cfg: TuneParams, max_epochs: int) -> list[int]:
    """The epoch caps a trial is trained to, one per rung: grace, grace x reduction, ... below
    max_epochs, then max_epochs (scheduler none: max_epochs alone)."""
    caps = []
    if cfg.scheduler == "asha":
        cap = cfg.grace_epochs
        while cap < max_epochs:
            caps.append(cap)
            cap *= cfg.reduction
    return caps + [max_epochs]


def _seed(*parts: Any) -> int:
    return int(hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:8], 16)


def sampler_of(cfg: TuneParams, head: str, existing: int) -> optuna.samplers.BaseSampler:
    """The sampler of one head's study, seeded by tune.seed, the head and how many trials the
    study already holds (a resumed search draws on; it does not repeat the first draws)."""
    seed = _seed(cfg.seed, head, existing)
    if cfg.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=cfg.startup_trials, multivariate=True,
                                      constant_liar=True)


def _inside(dist: optuna.distributions.BaseDistribution, value: Any) -> bool:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return value in dist.choices
    return isinstance(value, (int, float)) and not isinstance(value, bool) and dist.low <= value <= dist.high


@dataclass
class Effort:
    """What a head's search has spent: finished trials, epochs trained, seconds (wall) and
    resource-seconds (wall x the CPUs, or GPUs, a step holds)."""

    trials: int = 0
    epochs: int = 0
    seconds: float = 0.0
    resource_seconds: float = 0.0

    def add(self, attrs: dict) -> None:
        self.trials += 1
        self.epochs += int(attrs.get("epochs", 0))
        self.seconds += float(attrs.get("seconds", 0.0))
        self.resource_seconds += float(attrs.get("resource_seconds", 0.0))


@dataclass
class Step:
    """A trial step in flight: its head, trial, epoch cap and rung."""

    head: str
    trial: optuna.Trial
    cap: int
    rung: int


@dataclass
class HeadSearch:
    """One head's study, its space and what it has spent."""

    head: str
    study: optuna.Study
    space: dict[str, Any]
    runs_of: Callable[[dict], list[Params]]   # a configuration -> the params of each fold's run
    effort: Effort = field(default_factory=Effort)
    active: dict[int, dict] = field(default_factory=dict)    # trial number -> its record so far
    waiting: dict[int, tuple[optuna.Trial, int]] = field(default_factory=dict)  # number -> (trial, its rung)
    rung_values: dict[int, dict[int, float]] = field(default_factory=dict)   # rung -> trial number -> value
    in_flight: list[Step] = field(default_factory=list)

    @property
    def searched(self) -> dict:
        return distributions(self.space)


def open_search(head: str, space: dict[str, Any], name: str, storage: optuna.storages.RDBStorage,
                cfg: TuneParams, defaults: dict[str, Any], runs_of: Callable[[dict], list[Params]]) -> HeadSearch:
    """The head's study `name` (created, or resumed: trials left running by a killed search are
    marked failed and their configurations queued again), with the effort its finished trials
    spent. A new study's first trial is the default configuration when the space holds it."""
    existing = sum(s.n_trials for s in optuna.get_all_study_summaries(storage) if s.study_name == name)
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True,
                                sampler=sampler_of(cfg, head, existing), pruner=optuna.pruners.NopPruner())
    search = HeadSearch(head, study, space, runs_of)
    dists = search.searched
    trials = study.get_trials(deepcopy=False)
    for t in trials:
        if t.state in FINISHED:
            search.effort.add(attrs(t))
            values = attrs(t).get("values", [])
            for rung, cap in enumerate(attrs(t).get("rungs", [])):  # ASHA's rung populations go on
                if values:
                    search.rung_values.setdefault(rung, {})[t.number] = values[min(cap, len(values)) - 1]
        elif t.state == TrialState.RUNNING:  # in flight when the last search was killed
            study.tell(t.number, state=TrialState.FAIL)
            # its configuration: the queued one (the default, a retry), else what was sampled, when
            # the driver was not killed while asking (a sampled trial then holds only some keys)
            config = t.system_attrs.get("fixed_params") or t.params
            if set(dists) <= set(config):
                study.enqueue_trial({k: config[k] for k in dists}, user_attrs={
                    "retry_of": t.number, **({"default": True} if t.user_attrs.get("default") else {})})
    if not trials and all(_inside(d, defaults.get(k)) for k, d in dists.items()):
        study.enqueue_trial({k: defaults[k] for k in dists}, user_attrs={"default": True})
    return search


class Schedule:
    """The engine's units for every head's search, made as slots free up (an iterator that says
    "nothing now" while steps are in flight), and their results told to the studies."""

    def __init__(self, searches: list[HeadSearch], cfg: TuneParams, max_epochs: int, folder: Path,
                 resources: float, extra: tuple = (), say: Callable[[str], None] = print) -> None:
        self.searches = {s.head: s for s in searches}
        self.cfg, self.caps, self.folder, self.resources = cfg, rung_caps(cfg, max_epochs), folder, resources
        self.extra, self.say = extra, say
        self.steps: dict[str, Step] = {}
        self.study_seconds = 0.0   # time spent in the study (asks, reports, pruning, tells): its overhead
        self.span: list[float] = []   # when the first step was handed out, when the last result came
        self.steps_done = 0

    def __iter__(self) -> Schedule:
        return self

    # ---- budget
    @staticmethod
    def _spent(s: HeadSearch) -> tuple[int, float]:
        """(epochs, resource-seconds) the head has spent: its finished trials' and the finished
        steps of its trials still going (ASHA: trained to a rung, promoted and not yet finished),
        which count from the moment they are trained, not only once their trial finishes."""
        active = s.active.values()
        return (s.effort.epochs + sum(r["epochs"] for r in active),
                s.effort.resource_seconds + sum(r["resource_seconds"] for r in active))

    def _reserved(self, s: HeadSearch) -> float:
        """What the head's steps in flight will spend, in the budget's unit."""
        if self.cfg.budget == "epochs":
            return sum(step.cap for step in s.in_flight)
        if self.cfg.budget == "seconds":
            epochs, seconds = self._spent(s)
            if not epochs:   # no step of the head measured yet: one at a time until one is
                return math.inf if s.in_flight else 0.0
            return seconds / epochs * sum(step.cap for step in s.in_flight)
        return 0.0

    def share(self, s: HeadSearch) -> float:
        """The share of its budget a head has spent or holds in flight."""
        if self.cfg.budget == "epochs":
            return (self._spent(s)[0] + self._reserved(s)) / self.cfg.epochs_budget
        if self.cfg.budget == "seconds":
            return (self._spent(s)[1] + self._reserved(s)) / self.cfg.seconds_budget
        return (s.effort.trials + len(s.active)) / self.cfg.trials

    def _budget_left(self, s: HeadSearch) -> bool:
        if self.cfg.budget == "trials":
            return True   # counted per trial (`_new_trial_allowed`): promotions always run
        return self.share(s) < 1.0

    def promotable(self, s: HeadSearch) -> tuple[optuna.Trial, int] | None:
        """ASHA's promotion: from the highest rung down, the best waiting trial among the top
        1/reduction of the trials that reached that rung (none before `reduction` have)."""
        for rung in reversed(range(len(self.caps) - 1)):
            values = s.rung_values.get(rung, {})
            top = sorted(values, key=lambda n: (-values[n], n))[:len(values) // self.cfg.reduction]
            waiting = [n for n in top if n in s.waiting and s.waiting[n][1] == rung]
            if waiting:
                return s.waiting.pop(waiting[0])
        return None

    def _new_trial_allowed(self, s: HeadSearch) -> bool:
        return s.effort.trials + len(s.active) < self.cfg.trials and (self.cfg.budget == "trials" or
                                                                     self.share(s) < 1.0)

    # ---- the units
    def __next__(self) -> Unit:
        for s in sorted(self.searches.values(), key=lambda s: (self.share(s), list(self.searches).index(s.head))):
            promoted = self.promotable(s) if self._budget_left(s) else None
            if promoted:
                trial, rung = promoted
                self.say(f"{s.head} trial {trial.number}: promoted to {self.caps[rung + 1]} epochs")
                return self._unit(s, trial, rung + 1)
            if self._new_trial_allowed(s):
                t0 = time.perf_counter()
                trial = s.study.ask(fixed_distributions=s.searched)
                self.study_seconds += time.perf_counter() - t0
                config = {**fixed(s.space), **trial.params}
                s.active[trial.number] = {"config": config, "values": [], "epochs": 0, "seconds": 0.0,
                                          "resource_seconds": 0.0, "rungs": [], "nodes": [], "stopped": None}
                return self._unit(s, trial, 0)
        if not self.steps:   # nothing in flight and nothing to start: the search is over
            for s in self.searches.values():
                for trial, _ in list(s.waiting.values()):   # never promoted: pruned at their rung
                    self._finish(s, trial, "pruned")
                s.waiting.clear()
        raise StopIteration

    def _unit(self, s: HeadSearch, trial: optuna.Trial, rung: int) -> Unit:
        self.span = self.span or [time.time(), time.time()]
        cap = self.caps[rung]
        step = Step(s.head, trial, cap, rung)
        s.in_flight.append(step)
        name = f"{s.head} trial {trial.number} ({cap} epochs)"
        self.steps[name] = step
        folder = self.folder / f"{s.head.replace(':', '_')}-{trial.number}-r{rung}"
        return Unit(name, (s.runs_of(s.active[trial.number]["config"]), folder, cap, *self.extra))

    # ---- the results
    def finished(self, unit: Unit, result: dict) -> None:
        """A step's result: reported to its trial (at its rungs); the trial then completes (its
        training ended, or it reached max epochs) or waits at its rung for ASHA's promotion."""
        step = self.steps.pop(unit.name)
        self.span[1] = time.time()
        self.steps_done += 1
        s = self.searches[step.head]
        s.in_flight.remove(step)
        record = s.active[step.trial.number]
        values = result["values"]
        t0 = time.perf_counter()
        # the pruner reads a trial's value at the rungs only: those (and the last epoch) go to the
        # study, one write each; the whole per-epoch curve is kept in the trial's record
        for epoch in range(len(record["values"]), len(values)):
            if epoch + 1 in self.caps or epoch + 1 == len(values):
                step.trial.report(values[epoch], step=epoch + 1)
        self.study_seconds += time.perf_counter() - t0
        record["values"] = [round(v, 6) for v in values]
        record["epochs"] += result["epochs"]
        record["seconds"] = round(record["seconds"] + result["seconds"], 3)
        record["resource_seconds"] = round(record["resource_seconds"] + result["seconds"] * self.resources, 3)
        record["rungs"].append(step.cap)
        record["nodes"] = sorted({*record["nodes"], result["node"]})
        s.rung_values.setdefault(step.rung, {})[step.trial.number] = values[-1]
        if result["stopped"] == "patience" or step.rung == len(self.caps) - 1:
            self._finish(s, step.trial, "patience" if result["stopped"] == "patience" else "max_epochs")
        else:
            s.waiting[step.trial.number] = (step.trial, step.rung)
            self.say(f"{step.head} trial {step.trial.number}: {values[-1]:.4f} after {len(values)} epochs, "
                     f"waits at rung {step.rung}")

    def _timed(self, fn: Callable[[], Any]) -> Any:
        """fn(), its time counted as the study's (`study_seconds`)."""
        t0 = time.perf_counter()
        try:
            return fn()
        finally:
            self.study_seconds += time.perf_counter() - t0

    def _finish(self, s: HeadSearch, trial: optuna.Trial, how: str) -> None:
        record = s.active.pop(trial.number)
        record["stopped"] = how

        def write() -> None:
            trial.set_user_attr(RECORD, record)
            if how in ("patience", "max_epochs"):
                s.study.tell(trial, max(record["values"]))
            else:   # not promoted by ASHA: its last value stands
                s.study.tell(trial, state=TrialState.PRUNED)

        self._timed(write)
        s.effort.add(record)
        self.say(f"{s.head} trial {trial.number}: {max(record['values']):.4f} after {len(record['values'])} epochs "
                 f"({how}); {s.head} has spent {s.effort.trials} trials, {s.effort.epochs} epochs, "
                 f"{s.effort.resource_seconds:.0f} resource-s")


def study_name(head: str, what: dict) -> str:
    """A head's study: its name and a hash of what its trials depend on."""
    digest = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{head}-{digest}"
