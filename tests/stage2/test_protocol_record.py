"""The training protocol record of `jmt compare`: per run the best epoch, the epochs run and how
training stopped (run.json and compare.json, as train.py said it); per head how many runs the
epoch cap stopped; the report naming the runs stopped by the cap while still improving; and, with
several tasks, the validation score early stopping used (the sum of the tasks' metrics)."""

import copy
import json

import pytest

from pipeline.report import readme_section
from pipeline.stage2.compare import markdown

from .faked_compare import HEADS, STOPPED, compared_small, run
from .multitask import compared_tasks

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/stage2/conftest.py


@pytest.fixture(scope="module")
def small(tiny_cache, tmp_path_factory):
    return compared_small(tiny_cache, tmp_path_factory)


def test_each_run_records_its_best_epoch_epochs_and_how_it_stopped(small):
    params, result = small
    for r in result["runs"]:
        stored = json.loads((params.path(params.compare.runs) / r["folder"] / "run.json").read_text())
        history = stored["history"]
        top = max(h["val_score"] for h in history)
        assert all(h["val_score"] == h["val_va_ccc_mean"] for h in history)    # one task: its metric
        assert stored["best_epoch"] == r["best_epoch"]
        assert history[r["best_epoch"]]["val_score"] >= top - params.train.min_delta
        assert stored["epochs"] == r["epochs"] == len(history)
        assert stored["stopped"] == r["stopped"] == STOPPED[r["head"], r["seed"]]
    # three epochs, patience (params) above 3: every run ends at the cap, its best within the last epochs
    assert {r["stopped"] for r in result["runs"]} == {"max_epochs"}
    for head in HEADS:
        mine = [r for r in result["runs"] if r["head"] == head]
        t = result["results"][head]["training"]
        assert t["runs"] == 2 and t["stopped_by_max"] == sum(r["stopped"] == "max_epochs" for r in mine) == 2
        assert t["epochs"]["mean"] == pytest.approx(sum(r["epochs"] for r in mine) / 2)
        assert t["best_epoch"]["mean"] == pytest.approx(sum(r["best_epoch"] for r in mine) / 2)


def test_the_report_names_the_runs_the_cap_stopped(small):
    params, result = small
    text = params.path(params.compare.table).read_text()
    line = next(x for x in text.splitlines() if x.startswith("- Stopped by the epoch cap (train.epochs = 3)"))
    for r in result["runs"]:
        assert f"`{r['head']}` seed {r['seed']} (best epoch {r['best_epoch'] + 1} of 3)" in line
    assert "| `only:audio` | 3.0 ± 0.0 |" in text and "| 2 of 2 |" in text
    assert line in readme_section(result)
    assert (f"at most 3 epochs with early stopping on the validation va CCC mean "
            f"(patience {params.train.patience})") in text


def test_without_capped_runs_the_report_says_every_run_stopped_early(small):
    params, result = small
    early = copy.deepcopy(result)
    for r in early["runs"]:
        r["stopped"] = "patience"
    for h in early["results"].values():
        h["training"]["stopped_by_max"] = 0
    text = markdown(early)
    assert (f"- Every run stopped early (no validation gain in {params.train.patience} epochs) "
            "before the cap of 3 epochs.") in text
    assert "Stopped by the epoch cap" not in text and "| 0 of 2 |" in text


def test_a_stored_run_without_the_record_is_trained_again(small, tiny_cache, tmp_path):
    import shutil

    from .faked_compare import params_for

    params, first = small
    shutil.copytree(params.path(params.compare.runs), tmp_path / "runs")
    folder = next(r["folder"] for r in first["runs"] if (r["head"], r["seed"]) == ("concat", 1))
    info = json.loads((tmp_path / "runs" / folder / "run.json").read_text())
    del info["stopped"]                                  # written before the record existed
    (tmp_path / "runs" / folder / "run.json").write_text(json.dumps(info))
    again = run(params_for(tiny_cache, tmp_path))
    assert again["timing"]["trained"] == 1 and again["timing"]["reused"] == 3
    redone = next(r for r in again["runs"] if r["folder"] == folder)
    assert not redone["reused"] and redone["stopped"] == "max_epochs" == STOPPED["concat", 1]
    assert redone["validation"] == next(r for r in first["runs"] if r["folder"] == folder)["validation"]


def test_with_several_tasks_early_stopping_reads_the_sum_of_their_metrics(tmp_path_factory):
    params, result = compared_tasks(tmp_path_factory)
    for r in result["runs"]:
        history = json.loads((params.path(params.compare.runs) / r["folder"] / "run.json").read_text())["history"]
        for h in history:
            assert h["val_score"] == pytest.approx(h["val_va_ccc_mean"] + h["val_expr_f1"] + h["val_au_f1"], abs=1e-12)
            assert {"val_va_ccc_valence", "val_va_ccc_arousal", "val_expr_accuracy"} <= set(h)
        top, best = float("-inf"), None      # the rule: a gain above train.min_delta makes a new best
        for i, h in enumerate(history):
            if h["val_score"] > top + params.train.min_delta:
                top, best = h["val_score"], i
        assert r["best_epoch"] == best, r["folder"]
    text = params.path(params.compare.table).read_text()
    assert "early stopping on the validation va CCC mean + expr F1 + au F1 (patience" in text
