"""One small real `jmt compare` (concat and only:audio, two seeds, three epochs) on the tiny
cache, shared by test_availability.py, test_protocol_record.py and test_verdicts.py.

Nothing is faked any more: train.py returns how each run stopped (`TrainResult.stopped`). The
runs' training is wrapped only to record what it said (`STOPPED`), so the tests can check that
run.json and compare.json carry the training's own word, not one recomputed from the history."""

from __future__ import annotations

import pytest

from pipeline.stage2 import compare
from pipeline.stage2.compare import execute as compare_execute

from .test_compare import tiny_params

HEADS = ["concat", "only:audio"]
_RUNS: dict = {}
STOPPED: dict[tuple[str, int], str] = {}  # (head, seed) -> what the training said


def _recording(train_model):
    def train(params, **kwargs):
        result = train_model(params, **kwargs)
        STOPPED[params.model.fusion, params.train.seed] = result.stopped
        return result
    return train


def params_for(tiny_cache, folder, **compare_update):
    """Params of the small comparison in `folder` (runs in folder/runs), compare keys overridden."""
    cfg = {"heads": HEADS, "seeds": [0, 1], "reference": "concat", "runs": str(folder / "runs"),
           "metrics": str(folder / "compare.json"), "table": str(folder / "compare.md"),
           "bootstrap": 200, "latency_repeats": 1, "min_subset_frames": 10}
    return tiny_params(tiny_cache, folder, compare={**cfg, **compare_update},
                       report={"out": str(folder / "reports"), "videos": 1, "dpi": 60})


def run(params) -> dict:
    """run_compare, each run's `stopped` recorded as train.py returned it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(compare_execute, "train_model", _recording(compare_execute.train_model))
        return compare.run_compare(params)


def compared_small(tiny_cache, tmp_path_factory):
    """(params, result) of the small comparison, run once per session."""
    if "first" not in _RUNS:
        params = params_for(tiny_cache, tmp_path_factory.mktemp("small_compare"))
        _RUNS["first"] = (params, run(params))
    return _RUNS["first"]
