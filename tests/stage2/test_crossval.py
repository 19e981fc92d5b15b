"""Cross-validated `jmt compare` (`compare.folds: 2`, pipeline/stage2/compare/crossval.py): two
heads x two seeds x two folds really trained on the tiny cache (its training and validation
videos merged and split into two folds, pipeline/stage2/folds.py), the summary checked against
the fold comparisons' own files, every run's fold record against the fold's labels view and the
entries the run predicted, reuse on a second call, and `jmt report`'s refusal of the summary."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.errors import InputError
from pipeline.report import load_comparison
from pipeline.stage2 import folds
from pipeline.stage2.compare import collect_garbage, every_planned_run, run_compare
from pipeline.stage2.compare.crossval import fold_paths
from pipeline.stage2.compare.runs import load_predictions
from pipeline.stage2.data import load_splits

from .faked_compare import HEADS, params_for

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/stage2/conftest.py

K = 2
SEEDS = [0, 1]


@pytest.fixture(scope="module")
def crossval(tiny_cache, tmp_path_factory):
    """(params, summary) of the two-fold comparison, two epochs per run."""
    folder = tmp_path_factory.mktemp("crossval")
    params = params_for(tiny_cache, folder, folds=K, seeds=SEEDS).updated(train={"epochs": 2})
    return params, run_compare(params)


def fold_results(params) -> list[dict]:
    return [json.loads(params.path(fold_paths(params, i)["metrics"]).read_text()) for i in range(K)]


def values(result, head, split) -> list[float]:
    """A head's va CCC mean per seed (seed order) in one fold's comparison."""
    rows = sorted((r for r in result["runs"] if r["head"] == head), key=lambda r: r["seed"])
    assert [r["seed"] for r in rows] == SEEDS
    return [r[split]["full"]["va"]["ccc_mean"] for r in rows]


def test_the_summary_is_over_folds_and_seeds_of_the_fold_files(crossval):
    params, out = crossval
    assert json.loads(params.path(params.compare.metrics).read_text()) == json.loads(json.dumps(out))
    assert (out["folds"], out["heads"], out["seeds"], out["reference"]) == (K, HEADS, SEEDS, "concat")
    assert out["fold_metrics"] == [fold_paths(params, i)["metrics"] for i in range(K)]
    assert out["keys"] == ["va"] and out["splits"] == ["validation", "test"]
    per_fold = fold_results(params)
    for head in HEADS:
        for split in ("validation", "test"):
            s = out["results"][head][split]["va"]
            grid = [values(res, head, split) for res in per_fold]   # [fold][seed]
            assert s["n"] == K * len(SEEDS)
            assert s["mean"] == pytest.approx(np.mean(grid), abs=2e-6)
            assert s["std"] == pytest.approx(np.std(grid, ddof=1), abs=2e-6)
            assert s["per_fold"] == pytest.approx(np.mean(grid, axis=1), abs=2e-6)
            if head == "concat":
                assert s["difference"] is None
            else:
                ref = [values(res, "concat", split) for res in per_fold]
                d = np.subtract(grid, ref).ravel()
                assert s["difference"]["n"] == K * len(SEEDS)
                assert s["difference"]["mean"] == pytest.approx(d.mean(), abs=2e-6)
                assert s["difference"]["std"] == pytest.approx(d.std(ddof=1), abs=2e-6)
    # the folds validate on different videos: their validation numbers differ
    assert values(per_fold[0], "concat", "validation") != values(per_fold[1], "concat", "validation")
    # every fold model predicts the same test entries
    test = [sorted({k.split("/")[2] for k in np.load(params.path(params.compare.runs) / r["folder"] /
                                                      "predictions.npz").files if k.startswith("test/")})
            for r in out["runs"]]
    assert test[0] and all(t == test[0] for t in test)
    table = params.path(params.compare.table).read_text()
    assert f"## Cross-validated comparison: {K} folds" in table
    mine = next(line for line in table.splitlines() if line.startswith("| `only:audio` |"))
    s = out["results"]["only:audio"]["test"]["va"]
    assert ", ".join(f"{v:.3f}" for v in s["per_fold"]) in mine


def test_every_fold_is_a_complete_comparison_and_the_summary_lists_its_runs(crossval):
    params, out = crossval
    per_fold = fold_results(params)
    for i, res in enumerate(per_fold):
        assert params.path(fold_paths(params, i)["table"]).is_file()
        assert set(res["results"]) == set(HEADS) and "vs_reference" in res["results"]["only:audio"]
        assert "families" in res and res["timing"]["trained"] == len(HEADS) * len(SEEDS)
        assert [{**r, "fold": i} for r in res["runs"]] == [r for r in out["runs"] if r["fold"] == i]
    assert len(out["runs"]) == K * len(HEADS) * len(SEEDS)
    # each fold's labels view is in its runs' keys
    assert len({r["key"] for r in out["runs"]}) == len(out["runs"])
    assert per_fold[0]["fingerprints"]["labels"] != per_fold[1]["fingerprints"]["labels"]


def test_every_run_records_its_fold_and_scored_on_its_folds_validation_entries(crossval):
    params, out = crossval
    root = params.path(params.compare.runs)
    records = [folds.fold_record(params, K, i, root) for i in range(K)]
    assert records[0]["validation"]["va"] and records[1]["validation"]["va"]
    assert not set(records[0]["validation"]["va"]) & set(records[1]["validation"]["va"])
    official = load_splits(params)
    assert sorted(records[0]["validation"]["va"] + records[1]["validation"]["va"]) == sorted(
        e.name for e in official.train + official.union("validation"))   # every official train + val entry
    for r in out["runs"]:
        info = json.loads((root / r["folder"] / "run.json").read_text())
        record = records[r["fold"]]
        assert info["fold"] == record and record["fold"] == r["fold"] and record["k"] == K
        predicted = {name for name in load_predictions(root / r["folder"])["validation", "full"]}
        assert predicted == set(record["validation"]["va"])
        assert not predicted & set(record["train"]["va"])


def test_a_second_call_reuses_every_run(crossval):
    params, out = crossval
    root = params.path(params.compare.runs)
    before = {p: p.stat().st_mtime_ns for p in root.glob("*/run.json")}
    again = run_compare(params)
    for res in fold_results(params):
        assert res["timing"] == {**res["timing"], "trained": 0, "reused": len(HEADS) * len(SEEDS)}
    assert again["results"] == out["results"]
    assert [{k: v for k, v in r.items() if k != "reused"} for r in again["runs"]] == \
           [{k: v for k, v in r.items() if k != "reused"} for r in out["runs"]]
    assert {p: p.stat().st_mtime_ns for p in root.glob("*/run.json")} == before   # fold records not rewritten
    assert {r.key for r in every_planned_run(params)} == {r["key"] for r in out["runs"]}
    assert collect_garbage(params, [], dry_run=True) == []


def test_report_refuses_the_summary_and_names_the_file(crossval):
    params, _ = crossval
    path = params.path(params.compare.metrics)
    with pytest.raises(InputError, match=rf"{path}: a cross-validated comparison \({K} folds\)") as err:
        load_comparison(params)
    assert fold_paths(params, 0)["metrics"] in str(err.value)
    assert load_comparison(params, params.path(fold_paths(params, 0)["metrics"]))["heads"] == HEADS


def test_with_tuned_configurations_every_run_of_every_fold_records_its_fold(tiny_cache, tmp_path):
    """folds x configs tuned: each fold a tuned comparison with its default one beside it; the
    default runs (not in the summary's rows) record their fold too."""
    from .test_compare_tuned import write_tune

    base = params_for(tiny_cache, tmp_path, seeds=[0])
    write_tune(base, tmp_path / "tune.json", {"concat": {"model.d_model": 8}, "only:audio": {"model.d_model": 16}})
    params = params_for(tiny_cache, tmp_path, seeds=[0], folds=K, configs="tuned",
                        tuned=str(tmp_path / "tune.json")).updated(train={"epochs": 2})
    out = run_compare(params)
    root = params.path(params.compare.runs)
    by_fold = {}
    for i in range(K):
        tuned = json.loads(params.path(fold_paths(params, i)["metrics"]).read_text())
        default = json.loads(params.path(tuned["tuning"]["default_metrics"]).read_text())
        by_fold[i] = {r["folder"] for r in tuned["runs"] + default["runs"]}
        assert len(by_fold[i]) == 3   # concat default and tuned, only:audio once (its best is the default)
    assert not by_fold[0] & by_fold[1]
    assert {p.parent.name for p in root.glob("*/run.json")} == by_fold[0] | by_fold[1]
    for i, names in by_fold.items():
        record = folds.fold_record(params, K, i, root)
        for name in names:
            assert json.loads((root / name / "run.json").read_text())["fold"] == record, name
    assert {r["folder"] for r in out["runs"]} < by_fold[0] | by_fold[1]
