"""One small real `jmt compare` (concat and audio_only, two seeds, three epochs) on the tiny
cache, shared by test_availability.py and test_protocol_record.py.

Training is real. The only fake is `stopped` on the training result, filled in (from the
history, as train.py's early stopping decides it) only while train.py does not return it yet;
when it does, its own value passes through unchanged."""

from __future__ import annotations

import pytest

from pipeline.config import CompareParams, ReportParams
from pipeline.stage2 import compare
from pipeline.stage2.train import train_model

from .test_train import stage2_params

HEADS = ["concat", "audio_only"]
_RUNS: dict = {}
STOPPED: dict[tuple[str, int], str] = {}  # (head, seed) -> what the training said


def _train_with_stopped(params, **kwargs):
    result = train_model(params, **kwargs)
    cfg = params.train
    stale = len(result.history) - 1 - result.best_epoch
    result.stopped = getattr(result, "stopped",
                             "max_epochs" if len(result.history) == cfg.epochs and stale < cfg.patience
                             else "patience")
    STOPPED[params.model.fusion, cfg.seed] = result.stopped
    return result


def params_for(tiny_cache, folder, **compare_update):
    """Params of the small comparison in `folder` (runs in folder/runs), compare keys overridden."""
    params = stage2_params(tiny_cache, folder)
    cfg = CompareParams(heads=HEADS, seeds=[0, 1], reference="concat", runs=str(folder / "runs"),
                        metrics=str(folder / "compare.json"), table=str(folder / "compare.md"),
                        bootstrap=200, latency_repeats=1, min_subset_frames=10)
    out = params.model_copy(update={"compare": cfg.model_copy(update=compare_update),
                                    "report": ReportParams(out=str(folder / "reports"), videos=1, dpi=60)})
    out._root = params.root
    return out


def run(params) -> dict:
    """run_compare with the training result's `stopped` filled in when train.py lacks it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(compare, "train_model", _train_with_stopped)
        return compare.run_compare(params)


def compared_small(tiny_cache, tmp_path_factory):
    """(params, result) of the small comparison, run once per session."""
    if "first" not in _RUNS:
        params = params_for(tiny_cache, tmp_path_factory.mktemp("small_compare"))
        _RUNS["first"] = (params, run(params))
    return _RUNS["first"]
