"""What `jmt tune` searches: a shared part for every head, each head's own part (`SEARCH_SPACE`
in the head's file, next to its constructor), and the params' overrides (`tune.space`).

A space maps a dotted params key to one of (the same form in Python and in params.yaml):
- a list: the choices (categorical);
- a mapping {low, high[, log][, step]}: a range, integers when both bounds are, log-uniform with
  `log: true`;
- anything else: a fixed value, set for every trial of the head and not searched.

The head's part is laid over the shared part, and `tune.space` over both, so a head or a user can
narrow, widen or fix any key. Ranges and their reasons: docs/compare.md, "Tuning".
"""

from __future__ import annotations

import sys
from typing import Any

import optuna

from pipeline.config import Params
from pipeline.errors import ParamsError
from pipeline.registry import RegistryError
from pipeline.stage2.heads import HEADS
from pipeline.stage2.layers import TEMPORAL

# The shared part: what every head's result depends on (docs/compare.md gives the reasons).
SHARED: dict[str, Any] = {
    "train.lr": {"low": 1e-4, "high": 3e-3, "log": True},
    "train.weight_decay": {"low": 1e-6, "high": 1e-2, "log": True},
    "model.dropout": {"low": 0.0, "high": 0.4},
    "model.d_model": [64, 128, 256],
    "train.window": [32, 64, 128],          # train.hop follows as window // 2 (the default's ratio)
    "model.temporal": ["tcn", "gru", "bilstm", "identity"],
    "train.modality_dropout": {"low": 0.0, "high": 0.3},
    "train.batch_size": [8, 16, 32],
}
# Keys a space may not hold: the trial step sets them, or they change what is compared.
NOT_TUNABLE = {
    "model.fusion": "the head is the study's, not a parameter of it",
    "train.tasks": "the objective every head is compared on",
    "train.epochs": "the step's epoch cap (tune.scheduler's rungs, else train.epochs)",
    "train.out": "where the step trains", "train.live_dir": "where the step trains",
}
REGISTRY_KEYS = {"model.temporal": TEMPORAL}   # names the params loader takes as plain strings


def head_space(head: str) -> dict[str, Any]:
    """The head's own part: `SEARCH_SPACE` of its module (`only:<stream>`: the unimodal head's),
    empty when the head has none."""
    module = sys.modules[HEADS.get(head.partition(":")[0]).__module__]
    return dict(getattr(module, "SEARCH_SPACE", {}))


def space_of(head: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The whole space of one head: shared, then the head's part, then the overrides."""
    return {**SHARED, **head_space(head), **(overrides or {})}


def distribution(key: str, spec: Any) -> optuna.distributions.BaseDistribution | None:
    """Optuna's distribution for one entry of a space; None for a fixed value."""
    if isinstance(spec, list):
        if not spec:
            raise ParamsError(f"tune.space: {key}: an empty list of choices")
        return optuna.distributions.CategoricalDistribution(spec)
    if isinstance(spec, dict):
        unknown = set(spec) - {"low", "high", "log", "step"}
        if unknown or not {"low", "high"} <= set(spec):
            raise ParamsError(f"tune.space: {key}: a range is {{low, high[, log][, step]}}, got {spec}")
        low, high, log, step = spec["low"], spec["high"], bool(spec.get("log", False)), spec.get("step")
        if not low < high or (log and low <= 0):
            raise ParamsError(f"tune.space: {key}: need low < high (and low > 0 with log), got {spec}")
        if isinstance(low, int) and isinstance(high, int) and not isinstance(low, bool):
            return optuna.distributions.IntDistribution(low, high, log=log, step=int(step or 1))
        return optuna.distributions.FloatDistribution(float(low), float(high), log=log,
                                                      step=None if step is None else float(step))
    return None


def distributions(space: dict[str, Any]) -> dict[str, optuna.distributions.BaseDistribution]:
    """The searched keys of a space with their distributions (fixed values left out)."""
    out = {}
    for key, spec in space.items():
        dist = distribution(key, spec)
        if dist is not None:
            out[key] = dist
    return out


def fixed(space: dict[str, Any]) -> dict[str, Any]:
    """The keys a space fixes (not searched) with their values."""
    return {k: v for k, v in space.items() if distribution(k, v) is None}


def configured(params: Params, config: dict[str, Any]) -> Params:
    """params with a configuration (dotted keys -> values) laid over `model` and `train`;
    `train.hop` follows `train.window` as window // 2 unless the configuration sets it."""
    sections: dict[str, dict] = {}
    for key, value in config.items():
        section, _, name = key.partition(".")
        if section not in ("model", "train") or not name:
            raise ParamsError(f"tune.space: {key}: only model.* and train.* keys can be tuned")
        sections.setdefault(section, {})[name] = value
    if "window" in sections.get("train", {}) and "hop" not in sections["train"]:
        sections["train"]["hop"] = max(1, int(sections["train"]["window"]) // 2)
    try:
        return params.updated(**sections)
    except (KeyError, TypeError):
        raise ParamsError(f"tune.space: a key names no params field: {sorted(config)}") from None


def check_space(params: Params, head: str, space: dict[str, Any]) -> None:
    """Fails early, naming the key, when a space names no params field or proposes a value the
    params loader rejects (tried with every choice's first value and each range's bounds)."""
    known = params.model_dump()
    for key, spec in space.items():
        section, _, name = key.partition(".")
        if section not in ("model", "train") or name not in known[section]:
            raise ParamsError(f"tune.space ({head}): {key}: not a model.* or train.* params key")
        if key in NOT_TUNABLE:
            raise ParamsError(f"tune.space ({head}): {key} cannot be searched: {NOT_TUNABLE[key]}")
        distribution(key, spec)   # a malformed range or an empty list, named
        samples = spec if isinstance(spec, list) else [spec["low"], spec["high"]] if isinstance(spec, dict) else [spec]
        for value in samples:
            configured(params, {key: value})  # raises ParamsError naming the bad value
            if key in REGISTRY_KEYS:   # else found only when a trial builds the head
                try:
                    REGISTRY_KEYS[key].get(value)
                except RegistryError as exc:
                    raise ParamsError(f"tune.space ({head}): {key}: {exc}") from None
