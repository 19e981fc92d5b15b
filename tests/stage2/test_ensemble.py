"""`jmt ensemble` on the session's real comparison (`compared`: three heads x two seeds on the tiny
cache): the mean of the runs' stored outputs, scored exactly as a run is, the top-k chosen on
validation only, the submission files, and clear errors for rows that name no run folder or runs
that predicted different entries. Crafted comparisons (compare.json rows, copied run folders with
edited predictions) live under tmp_path; the session's runs are only read.

Then a real cross-validated comparison (`cross_validated`: 2 folds x concat, only:audio x one seed
on the tiny cache): validation out of fold over the merged training and validation entries, test
the mean of every fold run, and the errors for runs that do not match the folds."""

import json
import re
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import InputError
from pipeline.stage2.compare import load_predictions, run_compare
from pipeline.stage2.data import load_entries
from pipeline.stage2.ensemble import ensembles, read_inputs, run_ensemble
from pipeline.stage2.protocol import labels_of, score
from pipeline.tasks import tasks_of

from ..stage1.helpers import write_params
from .faked_compare import params_for

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/stage2/conftest.py


def _files(folder) -> dict:
    """path -> (size, mtime_ns) of every file under folder."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def _params(params, tmp_path, runs=None, **ensemble):
    """params reading compare.json from tmp_path (and runs from `runs`, default the session's) and
    writing the ensemble under tmp_path/out."""
    out = tmp_path / "out"
    return params.updated(compare={"metrics": str(tmp_path / "compare.json"),
                                   **({"runs": str(runs)} if runs else {})},
                          ensemble={"out": str(out / "submissions"), "metrics": str(out / "ensemble.json"),
                                    "table": str(out / "ensemble.md"), **ensemble})


def _write(tmp_path, result, rows):
    (tmp_path / "compare.json").write_text(json.dumps({**result, "runs": rows}))


def _row(result, head, seed):
    return next(r for r in result["runs"] if r["head"] == head and r["seed"] == seed)


def _full(params, row):
    preds = load_predictions(params.path(params.compare.runs) / row["folder"])
    return {s: preds[s, "full"] for s in ("validation", "test") if (s, "full") in preds}


def test_each_head_is_the_mean_of_its_runs_and_the_top_k_the_mean_of_the_best_heads(compared, tmp_path):
    params, result = compared
    p = _params(params, tmp_path)
    shutil.copy(params.path(params.compare.metrics), tmp_path / "compare.json")
    res, tasks, _, labels = read_inputs(p)
    built = {e.name: e for e in ensembles(p, res, labels, tasks)}
    heads = list(dict.fromkeys(r["head"] for r in result["runs"]))
    assert list(built) == [*heads, "top3"]
    for head in heads:
        runs = [_full(params, r) for r in result["runs"] if r["head"] == head]
        assert len(runs) == 2
        e = built[head]
        assert set(e.outputs) == {"validation", "test"} and e.outputs.keys() == runs[0].keys()
        for split, entries in runs[0].items():
            assert e.outputs[split].keys() == entries.keys()
            for name, by in entries.items():
                for t, a in by.items():
                    got = e.outputs[split][name][t]
                    assert got.dtype == a.dtype and got.shape == a.shape
                    np.testing.assert_allclose(got, np.mean([r[split][name][t] for r in runs], axis=0),
                                               rtol=1e-6, atol=1e-7)
        # beside it: the mean of the runs' own scores, as compare scored them (run.json)
        stored = [json.loads((params.path(params.compare.runs) / r["folder"] / "run.json").read_text())["scores"]
                  for r in result["runs"] if r["head"] == head]
        for split in ("validation", "test"):
            want = np.mean([s[split]["full"]["score"] for s in stored])
            assert e.single_runs[split]["score"] == pytest.approx(want, rel=1e-9)
    order = sorted(heads, key=lambda h: -built[h].scores["validation"]["score"])
    top = built["top3"]
    assert top.heads == order and len(top.members) == 6
    for name, by in top.outputs["validation"].items():
        for t, got in by.items():
            want = np.mean([built[h].outputs["validation"][name][t] for h in heads], axis=0)
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_an_ensemble_of_one_run_twice_is_that_run_exactly(compared, tmp_path):
    """Two rows (as two folds would be) of one run, one pointing at a copy of its folder: the
    ensemble's outputs, scores and submission are the run's own, to the bit."""
    params, result = compared
    runs = tmp_path / "runs"
    r0 = _row(result, "jmt", 0)
    src = params.path(params.compare.runs) / r0["folder"]
    shutil.copytree(src, runs / r0["folder"])
    shutil.copytree(src, runs / "copy")
    rows = [{**r0, "fold": 0}, {**r0, "fold": 1, "folder": "copy"}]
    for r in result["runs"]:
        if r["head"] != "jmt":
            shutil.copytree(params.path(params.compare.runs) / r["folder"], runs / r["folder"])
            rows.append(r)
    _write(tmp_path, result, rows)
    p = _params(params, tmp_path, runs=runs)
    res, tasks, _, labels = read_inputs(p)
    e = next(e for e in ensembles(p, res, labels, tasks) if e.name == "jmt")
    one = _full(params, r0)
    for split, entries in one.items():
        for name, by in entries.items():
            for t, a in by.items():
                assert np.array_equal(e.outputs[split][name][t], a)
    out = run_ensemble(p)
    stored = json.loads((src / "run.json").read_text())["scores"]
    jmt = out["ensembles"]["jmt"]
    for split in ("validation", "test"):
        assert jmt["scores"][split] == stored[split]["full"]  # scored exactly as compare/execute.py scores a run
        assert jmt["single_runs"][split] == stored[split]["full"]
    assert [m["fold"] for m in jmt["members"]] == [0, 1]
    assert [m["folder"] for m in jmt["members"]] == [r0["folder"], "copy"]


def _perfect(labels, worst=False):
    """va outputs on a split's valid frames (0 elsewhere): the labels (CCC 1) or, worst, the labels
    mirrored about their split mean (the same mean and variance, correlation -1: CCC -1)."""
    mean = np.concatenate([y[valid] for y, valid in labels.values()]).mean(axis=0)
    return {n: np.where(valid[:, None], 2 * mean - y if worst else y, 0).astype(np.float32)
            for n, (y, valid) in labels.items()}


def test_top_k_is_chosen_on_validation_never_on_test(compared, tmp_path):
    """concat's predictions replaced: the labels mirrored on validation (CCC -1, last there), the
    labels themselves on test (CCC 1, first there): the top 2 leave it out."""
    params, result = compared
    runs = tmp_path / "runs"
    for r in result["runs"]:
        shutil.copytree(params.path(params.compare.runs) / r["folder"], runs / r["folder"])
    shutil.copy(params.path(params.compare.metrics), tmp_path / "compare.json")
    p = _params(params, tmp_path, runs=runs, top_k=2)
    res, tasks, _, labels = read_inputs(p)
    assert list(tasks) == ["va"]
    fake = {"validation": _perfect(labels["validation"]["va"], worst=True), "test": _perfect(labels["test"]["va"])}
    for r in result["runs"]:
        if r["head"] == "concat":
            path = runs / r["folder"] / "predictions.npz"
            with np.load(path) as z:
                arrays = {k: z[k] for k in z.files}
            for k in arrays:
                split, condition, name, task = k.split("/")
                if condition == "full" and name in fake[split]:
                    arrays[k] = fake[split][name]
            np.savez_compressed(path, **arrays)
    out = run_ensemble(p)
    concat = out["ensembles"]["concat"]["scores"]
    assert concat["validation"]["va"]["ccc_mean"] == pytest.approx(-1)
    assert concat["test"]["va"]["ccc_mean"] == pytest.approx(1)
    assert out["ranking"][-1] == "concat"
    assert out["top"] == "top2" and "concat" not in out["ensembles"]["top2"]["heads"]
    assert out["ensembles"]["top2"]["heads"] == out["ranking"][:2]
    assert max(out["ensembles"][h]["scores"]["test"]["score"] for h in out["ranking"]) == concat["test"]["score"]


def test_writes_submissions_json_and_table_and_nothing_else(compared, tmp_path):
    params, result = compared
    shutil.copy(params.path(params.compare.metrics), tmp_path / "compare.json")
    p = _params(params, tmp_path)
    res, tasks, splits, labels = read_inputs(p)
    before = _files(params.path("."))
    out = run_ensemble(p)
    assert _files(params.path(".")) == before  # the comparison's folder (runs, compare.json, caches) untouched
    written = {str(f.relative_to(tmp_path)) for f in tmp_path.rglob("*") if f.is_file()}
    assert written == {"compare.json", "out/ensemble.json", "out/ensemble.md",
                       *(f"out/submissions/{n}/va/{e.name}.txt" for n in ("jmt", "concat", "only_audio", "top3")
                         for e in splits.test["va"])}
    sub = tmp_path / "out" / "submissions"
    built = {e.name: e for e in ensembles(p, res, labels, tasks)}
    for name in ("jmt", "only:audio", "top3"):
        for e in splits.test["va"]:
            lines = (sub / name.replace(":", "_") / "va" / f"{e.name}.txt").read_text().splitlines()
            assert lines[0] == "image_location,valence,arousal"
            rows = [line.split(",") for line in lines[1:]]
            want = built[name].outputs["test"][e.name]["va"]
            assert len(rows) == e.n == len(want)
            assert [r[0] for r in rows] == [f"{e.name}/{i + 1:05d}.jpg" for i in range(e.n)]
            np.testing.assert_allclose(np.array([[float(v) for v in r[1:]] for r in rows]), want, atol=5e-5)
    saved = json.loads((tmp_path / "out" / "ensemble.json").read_text())
    assert saved == json.loads(json.dumps(out))
    assert set(saved["ensembles"]) == {"jmt", "concat", "only:audio", "top3"}
    assert {m["folder"] for m in saved["ensembles"]["top3"]["members"]} == {r["folder"] for r in result["runs"]}
    table = (tmp_path / "out" / "ensemble.md").read_text()
    for name, e in saved["ensembles"].items():
        row = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == str(len(e["members"]))
        assert cells[2:] == [f"{e[w][s]['score']:.4f}" for s in ("validation", "test")
                             for w in ("single_runs", "scores")]


@pytest.mark.parametrize("folder, says", [("../x", "is not a folder name"), ("a/b", "is not a folder name"),
                                          ("", "is not a folder name"), ("no-such-run", "run `jmt compare` again")])
def test_a_row_naming_no_run_folder_is_a_clear_error(compared, tmp_path, folder, says):
    params, result = compared
    _write(tmp_path, result, [*result["runs"][:-1], {**result["runs"][-1], "folder": folder}])
    with pytest.raises(InputError, match=says):
        run_ensemble(_params(params, tmp_path))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("edit, says", [("extra", "test entry 'extra', which not"), ("drop", "no test entry '{name}'"),
                                        ("cut", "test entry '{name}' va outputs")])
def test_runs_predicting_different_entries_are_a_clear_error(compared, tmp_path, edit, says):
    params, result = compared
    runs = tmp_path / "runs"
    r0, r1 = _row(result, "jmt", 0), _row(result, "jmt", 1)
    for r in (r0, r1):
        shutil.copytree(params.path(params.compare.runs) / r["folder"], runs / r["folder"])
    path = runs / r1["folder"] / "predictions.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    name = sorted(k.split("/")[2] for k in arrays if k.startswith("test/full/"))[0]
    key = f"test/full/{name}/va"
    if edit == "extra":
        arrays["test/full/extra/va"] = arrays[key]
    elif edit == "drop":  # renamed: the split keeps an entry (the tiny cache tests on one)
        arrays["test/full/zzz_renamed/va"] = arrays.pop(key)
    else:
        arrays[key] = arrays[key][:-1]
    np.savez_compressed(path, **arrays)
    _write(tmp_path, result, [r0, r1])
    with pytest.raises(InputError, match=re.escape(says.format(name=name))) as err:
        run_ensemble(_params(params, tmp_path, runs=runs))
    assert r1["folder"] in str(err.value)
    assert not (tmp_path / "out").exists()


def test_cli_without_a_comparison_says_run_compare(compared, tmp_path):
    params, _ = compared
    file = write_params(tmp_path, params.path(params.corpus.root), compare={"metrics": str(tmp_path / "compare.json")})
    result = CliRunner().invoke(app, ["ensemble", "--params", str(file)])
    assert result.exit_code == 2
    assert "run `jmt compare`" in result.output and "compare.json" in result.output


# ---- a cross-validated comparison --------------------------------------------------------------

@pytest.fixture(scope="module")
def cross_validated(tiny_cache, tmp_path_factory):
    """`jmt compare` with `compare.folds: 2`: concat and only:audio x seed 0 x two folds, two
    epochs, on the tiny cache: (params, summary compare.json)."""
    folder = tmp_path_factory.mktemp("compare_cv")
    params = params_for(tiny_cache, folder, folds=2, seeds=[0]).updated(train={"epochs": 2})
    return params, run_compare(params)


def _folds_json(result) -> list[dict]:
    """folds.json's folds (written by compare): per fold, the entries each task validates."""
    return json.loads(open(result["folds_json"]).read())["folds"]


def _merged(params, task="va") -> dict:
    """The official training and validation entries' labels of one task, read straight from the caches."""
    entries = load_entries(params.path(params.embed.out), params.path(params.labels.out), [task])
    return labels_of([e for e in entries if e.splits.get(task) in ("train", "validation")], task)


def _second_seed(params, result, tmp_path):
    """The comparison's runs copied under tmp_path/runs (its fold views too), each with a twin
    (seed 7, same fold) whose outputs are the run's halved plus 0.1: a fold's ensemble now means
    two different runs. Returns (params reading them, the rows)."""
    src, runs = params.path(params.compare.runs), tmp_path / "runs"
    shutil.copytree(src, runs)
    rows = []
    for r in result["runs"]:
        twin = {**r, "seed": 7, "folder": r["folder"] + "-twin"}
        shutil.copytree(src / r["folder"], runs / twin["folder"])
        path = runs / twin["folder"] / "predictions.npz"
        with np.load(path) as z:
            np.savez_compressed(path, **{k: (z[k] * 0.5 + 0.1).astype(z[k].dtype) for k in z.files})
        rows += [r, twin]
    _write(tmp_path, result, rows)
    return _params(params, tmp_path, runs=runs), rows


def test_cross_validated_validation_is_out_of_fold_and_test_the_mean_of_every_fold_run(cross_validated, tmp_path):
    params, result = cross_validated
    assert result["folds"] == 2 and {r["fold"] for r in result["runs"]} == {0, 1}
    p, rows = _second_seed(params, result, tmp_path)
    res, tasks, _, labels = read_inputs(p)
    built = {e.name: e for e in ensembles(p, res, labels, tasks)}
    assert list(built) == ["concat", "only:audio", "top2"]

    # the merged set: every official training and validation entry, each validated by one fold
    validates = [set(f["validation"]["va"]) for f in _folds_json(result)]
    assert not validates[0] & validates[1]
    merged = _merged(params)
    assert validates[0] | validates[1] == set(merged) and len(merged) == 3
    assert list(labels["validation"]["va"]) == sorted(merged)
    for n, (y, valid) in merged.items():
        assert np.array_equal(labels["validation"]["va"][n][0], y)
        assert np.array_equal(labels["validation"]["va"][n][1], valid)

    runs = {r["folder"]: _full(p, r) for r in rows}
    for head in ("concat", "only:audio"):
        e = built[head]
        mine = [r for r in rows if r["head"] == head]
        assert len(mine) == 4 and e.members == mine
        assert list(e.outputs["validation"]) == sorted(merged)  # every merged entry, once
        for fold, entries in enumerate(validates):
            own = [runs[r["folder"]] for r in mine if r["fold"] == fold]
            assert len(own) == 2
            for run in own:  # a fold's runs predict exactly the entries it validates, never the others
                assert set(run["validation"]) == entries
            for n in entries:  # out of fold: the mean of its own fold's two runs only
                for t, got in e.outputs["validation"][n].items():
                    want = np.mean([run["validation"][n][t] for run in own], axis=0)
                    assert got.dtype == own[0]["validation"][n][t].dtype
                    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
        # test: every fold model predicts the same test entries; the mean of all four
        assert e.outputs["test"].keys() == runs[mine[0]["folder"]]["test"].keys()
        for n, by in e.outputs["test"].items():
            for t, got in by.items():
                want = np.mean([runs[r["folder"]]["test"][n][t] for r in mine], axis=0)
                np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
        # scored once over the merged set, against the merged labels
        task = tasks_of(["va"])["va"]
        oof = score({n: e.outputs["validation"][n]["va"] for n in merged}, merged, task, "validation")
        assert e.scores["validation"]["va"] == pytest.approx(oof, rel=1e-9)
    # the top k: ranked on the out-of-fold validation score, the mean of the head ensembles
    order = sorted(("concat", "only:audio"), key=lambda h: -built[h].scores["validation"]["score"])
    assert built["top2"].heads == order and len(built["top2"].members) == 8
    for n, by in built["top2"].outputs["validation"].items():
        np.testing.assert_allclose(by["va"], np.mean([built[h].outputs["validation"][n]["va"] for h in order], axis=0),
                                   rtol=1e-6, atol=1e-7)


def test_cross_validated_json_table_and_single_runs_on_their_own_fold(cross_validated, tmp_path):
    params, result = cross_validated
    shutil.copy(params.path(params.compare.metrics), tmp_path / "compare.json")
    p = _params(params, tmp_path)
    before = _files(params.path("."))
    out = run_ensemble(p)
    assert _files(params.path(".")) == before  # the runs and their fold views only read
    assert out["folds"] == 2 and out["folds_json"] == result["folds_json"]
    assert out["validation"].startswith("out of fold over the merged training+validation entries")
    assert out["validation_entries"] == {"va": 3} and out["splits"] == ["validation", "test"]
    val = {h: out["ensembles"][h]["scores"]["validation"]["score"] for h in ("concat", "only:audio")}
    assert out["ranking"] == sorted(val, key=lambda h: -val[h])  # on the out-of-fold score
    for head in ("concat", "only:audio"):
        e = out["ensembles"][head]
        assert [(m["fold"], m["seed"]) for m in e["members"]] == [(0, 0), (1, 0)]
        stored = [json.loads((params.path(params.compare.runs) / r["folder"] / "run.json").read_text())["scores"]
                  for r in result["runs"] if r["head"] == head]
        for split in ("validation", "test"):  # each run scored as compare scored it: validation on its own fold
            want = np.mean([s[split]["full"]["score"] for s in stored])
            assert e["single_runs"][split]["score"] == pytest.approx(want, rel=1e-9)
    table = (tmp_path / "out" / "ensemble.md").read_text()
    assert "Cross-validated (2 folds" in table and "validation is out of fold over the merged" in table
    sub = tmp_path / "out" / "submissions"
    subs = {str(f.relative_to(sub)) for f in sub.rglob("*.txt")}
    assert subs == {f"{n}/va/demo_02.txt" for n in ("concat", "only_audio", "top2")}


@pytest.mark.parametrize("edit, says", [("record", "validated on other entries than fold 1 of 2"),
                                        ("fold", "fold None is not one of 0..1"),
                                        ("missing", "has no run of fold 1"),
                                        ("view", "no labels view of fold 1 of 2")])
def test_cross_validated_runs_not_matching_the_folds_are_a_clear_error(cross_validated, tmp_path, edit, says):
    params, result = cross_validated
    runs = tmp_path / "runs"
    shutil.copytree(params.path(params.compare.runs), runs)
    rows = [dict(r) for r in result["runs"]]
    last = rows[-1]
    assert last["fold"] == 1
    if edit == "record":  # its run.json says it validated on the other fold's entries
        info = json.loads((runs / last["folder"] / "run.json").read_text())
        other = next(f for f in _folds_json(result) if f["fold"] == 0)
        info["fold"]["validation"]["va"] = other["validation"]["va"]
        (runs / last["folder"] / "run.json").write_text(json.dumps(info))
    elif edit == "fold":
        del last["fold"]
    elif edit == "missing":
        rows = [r for r in rows if not (r["head"] == last["head"] and r["fold"] == 1)]
    else:  # read, never rebuilt: the labels the runs were trained and scored on
        shutil.rmtree(runs / "folds-k2" / "fold1")
    _write(tmp_path, result, rows)
    with pytest.raises(InputError, match=re.escape(says)):
        run_ensemble(_params(params, tmp_path, runs=runs))
    assert not (tmp_path / "out").exists()
