"""`jmt compare` on the tiny cache: real training of several heads over two seeds, the
aggregation checked against the per-run numbers, robustness masking, reuse and resumption."""

import json
import shutil

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import CompareParams, ReportParams
from pipeline.errors import JmtError
from pipeline.stage2.compare import CONDITIONS, METRICS, load_predictions, markdown, run_compare
from pipeline.stats import paired_t

from ..reference import split_ccc_np
from .test_train import stage2_params

HEADS = ["jmt", "concat", "audio_only"]


def compare_params(tiny_cache, folder, **train):
    params = stage2_params(tiny_cache, folder)
    compare = CompareParams(heads=HEADS, seeds=[0, 1], reference="jmt", runs=str(folder / "runs"),
                            metrics=str(folder / "compare.json"), table=str(folder / "compare.md"),
                            bootstrap=200, latency_repeats=1)
    update = {"compare": compare, "report": ReportParams(out=str(folder / "reports"), videos=1, dpi=60)}
    if train:
        update["train"] = params.train.model_copy(update=train)
    out = params.model_copy(update=update)
    out._root = params.root
    return out


def test_every_head_and_seed_is_trained_and_summarised(compared):
    params, result = compared
    assert result["timing"] == {**result["timing"], "trained": 6, "reused": 0}
    assert json.loads(params.path(params.compare.metrics).read_text())["results"].keys() == set(HEADS)
    for head in HEADS:
        runs = [r for r in result["runs"] if r["head"] == head]
        assert [r["seed"] for r in runs] == [0, 1]
        for split in ("validation", "test"):
            for condition in CONDITIONS:
                for k in METRICS:
                    values = [r[split][condition][k] for r in runs]
                    s = result["results"][head][split][condition][k]
                    assert s["n"] == 2
                    assert s["mean"] == pytest.approx(np.mean(values), abs=1e-5)
                    assert s["std"] == pytest.approx(np.std(values, ddof=1), abs=1e-5)
        assert result["results"][head]["parameters"] > 0 and result["results"][head]["mflops_per_frame"] > 0


def test_paired_differences_are_per_seed_and_use_the_t_interval(compared):
    _, result = compared
    assert "vs_reference" not in result["results"]["jmt"]
    for head in ("concat", "audio_only"):
        for split in ("validation", "test"):
            own = [r[split]["full"]["ccc_mean"] for r in result["runs"] if r["head"] == head]
            ref = [r[split]["full"]["ccc_mean"] for r in result["runs"] if r["head"] == "jmt"]
            v = result["results"][head]["vs_reference"][split]
            assert v["per_seed"] == pytest.approx(np.subtract(own, ref), abs=2e-6)
            iv = paired_t(np.array(v["per_seed"]))
            assert (v["seeds"]["low"], v["seeds"]["high"]) == pytest.approx((iv.low, iv.high), abs=1e-5)
            assert v["seeds"]["method"] == "paired t over seeds"
            # one video per split in the tiny corpus: every resample is the same video
            assert v["videos"]["n"] == 1 and v["videos"]["low"] == pytest.approx(v["videos"]["high"])


def test_stored_predictions_rescore_to_the_reported_numbers(compared, tiny_cache):
    """The stored predictions and the cache's labels, scored in numpy (valid frames of every
    video of the split concatenated), give the numbers the comparison reports."""
    params, result = compared
    folder = params.path(params.compare.runs) / "concat-seed1"
    preds = load_predictions(folder)
    assert set(preds) == {(s, c) for s in ("validation", "test") for c in CONDITIONS}
    ys, masks = {}, {}
    for path in sorted(params.path(params.embed.out).glob("*.h5")):
        with h5py.File(path) as f:
            if f.attrs["split"] in ("validation", "test"):
                ys[path.stem] = f["labels"][...]
                masks[path.stem] = (ys[path.stem] != -5).all(1)
    run = next(r for r in result["runs"] if r["head"] == "concat" and r["seed"] == 1)
    for split in ("validation", "test"):
        for condition in CONDITIONS:
            p = preds[split, condition]
            expected = split_ccc_np(p, {n: ys[n] for n in p}, {n: masks[n] for n in p})
            for k in METRICS:
                assert run[split][condition][k] == pytest.approx(expected[k], abs=1e-5), (split, condition, k)


def test_each_seed_is_its_own_run(compared):
    """Seeds 0 and 1 train different models (initialisation, batch order): different losses,
    weights and predictions, so the std over seeds and the t interval are not zero."""
    params, result = compared
    runs = params.path(params.compare.runs)
    for head in HEADS:
        info = [json.loads((runs / f"{head}-seed{s}/run.json").read_text()) for s in (0, 1)]
        assert [h["train_loss"] for h in info[0]["history"]] != [h["train_loss"] for h in info[1]["history"]], head
        ckpts = [torch.load(runs / f"{head}-seed{s}/model.pt", weights_only=True) for s in (0, 1)]
        assert [c["params"]["train"]["seed"] for c in ckpts] == [0, 1]
        assert any(not torch.equal(ckpts[0]["state_dict"][k], ckpts[1]["state_dict"][k])
                   for k in ckpts[0]["state_dict"]), head
        p0, p1 = (load_predictions(runs / f"{head}-seed{s}")["validation", "full"] for s in (0, 1))
        assert any(np.abs(p0[n] - p1[n]).max() > 1e-4 for n in p0), head
        assert result["results"][head]["validation"]["full"]["ccc_mean"]["std"] > 0, head
    for head in ("concat", "audio_only"):
        seeds = result["results"][head]["vs_reference"]["validation"]["seeds"]
        assert seeds["high"] - seeds["low"] > 1e-4, head


def test_masking_a_stream_reaches_the_model(compared):
    _, result = compared
    audio_only = [r for r in result["runs"] if r["head"] == "audio_only"]
    for r in audio_only:
        # without its only stream the head sees one learned "missing" vector on every frame:
        # its output is flat apart from the temporal encoder's edge effects, CCC about 0
        assert abs(r["validation"]["no_audio"]["ccc_mean"]) < 0.01
        assert r["validation"]["no_visual"] == r["validation"]["full"]  # the stream it never reads
    jmt = [r for r in result["runs"] if r["head"] == "jmt"]
    assert any(r["validation"]["no_visual"] != r["validation"]["full"] for r in jmt)


def test_markdown_tables_name_every_head_and_the_reference(compared):
    params, result = compared
    text = params.path(params.compare.table).read_text()
    assert text == markdown(result)
    for head in HEADS:
        assert f"`{head}`" in text
    assert "Paired difference from `jmt`" in text and "Robustness" in text and "MFLOPs / frame" in text
    assert "Seeds 0, 1 for every head" in text
    best = max(HEADS, key=lambda h: result["results"][h]["validation"]["full"]["ccc_mean"]["mean"])
    assert f"- Highest validation CCC mean: `{best}`" in text
    for split, name in (("validation", "Validation"), ("test", "Test")):
        below = [h for h in ("concat", "audio_only")
                 if result["results"][h]["vs_reference"][split]["seeds"]["high"] < 0]
        line = next(x for x in text.splitlines() if x.startswith(f"- {name}, t over seeds"))
        assert all(f"`{h}`" in line.split("below:")[1] for h in below)


def test_second_run_reuses_everything(compared, tmp_path):
    shared, first = compared
    # the same runs folder, but the tables go to tmp_path: the session's compare.json and
    # compare.md stay the fixture's (other tests compare them with its result)
    params = shared.model_copy(update={"compare": shared.compare.model_copy(update={
        "metrics": str(tmp_path / "compare.json"), "table": str(tmp_path / "compare.md")})})
    params._root = shared.root
    models = {p: p.stat().st_mtime_ns for p in params.path(params.compare.runs).glob("*/model.pt")}
    again = run_compare(params)
    assert again["timing"]["trained"] == 0 and again["timing"]["reused"] == 6
    assert {p: p.stat().st_mtime_ns for p in models} == models
    strip = ("seconds", "reused")
    assert [{k: v for k, v in r.items() if k not in strip} for r in again["runs"]] == \
        [{k: v for k, v in r.items() if k not in strip} for r in first["runs"]]
    for head in HEADS:
        assert again["results"][head]["validation"] == first["results"][head]["validation"]
        assert again["results"][head].get("vs_reference") == first["results"][head].get("vs_reference")


def test_changed_params_or_broken_runs_are_recomputed(tiny_cache, tmp_path, compared):
    params, _ = compared
    runs = tmp_path / "runs"
    shutil.copytree(params.path(params.compare.runs), runs)
    subset = compare_params(tiny_cache, tmp_path)
    subset = subset.model_copy(update={"compare": subset.compare.model_copy(update={"heads": ["jmt", "concat"]})})
    subset._root = params.root
    (runs / "concat-seed0" / "run.json").write_text("{ truncated")      # a damaged run
    # an interrupted run: no finished folder, a temporary one holding what the kill left
    shutil.rmtree(runs / "concat-seed1")
    (runs / ".concat-seed1.tmp").mkdir()
    (runs / ".concat-seed1.tmp" / "model.pt").write_bytes(b"half a checkpoint")
    (runs / ".concat-seed1.tmp" / "left-by-the-kill.txt").write_text("stale")
    result = run_compare(subset)
    assert result["timing"]["trained"] == 2 and result["timing"]["reused"] == 2
    assert not (runs / ".concat-seed1.tmp").exists() and not (runs / "concat-seed1/left-by-the-kill.txt").exists()
    redone = json.loads((runs / "concat-seed1/run.json").read_text())
    assert redone["seed"] == 1
    assert torch.load(runs / "concat-seed1/model.pt", weights_only=True)["head"]["name"] == "concat"
    assert sorted(p.name for p in runs.iterdir()) == ["audio_only-seed0", "audio_only-seed1", "concat-seed0",
                                                     "concat-seed1", "jmt-seed0", "jmt-seed1"]
    changed = compare_params(tiny_cache, tmp_path, epochs=2)
    changed = changed.model_copy(update={"compare": changed.compare.model_copy(update={"heads": ["jmt"],
                                                                                        "seeds": [0]})})
    changed._root = params.root
    result = run_compare(changed)
    assert result["timing"]["trained"] == 1 and result["runs"][0]["epochs"] == 2
    assert result["results"]["jmt"]["validation"]["full"]["ccc_mean"]["std"] is None


def test_unknown_head_fails_before_training(tiny_cache, tmp_path):
    params = compare_params(tiny_cache, tmp_path)
    bad = params.model_copy(update={"compare": params.compare.model_copy(update={"heads": ["jmt", "nope"]})})
    bad._root = params.root
    with pytest.raises(JmtError, match="unknown fusion head 'nope'"):
        run_compare(bad)
    assert not (tmp_path / "runs").exists()


def test_cli_show_prints_the_saved_table_and_checks_options(compared, tmp_path):
    params, _ = compared
    import yaml

    data = yaml.safe_load((params.root / "params.yaml").read_text())
    data["compare"] = {**data.get("compare", {}), "table": str(params.path(params.compare.table))}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    runner = CliRunner()
    shown = runner.invoke(app, ["compare", "--params", str(tmp_path / "params.yaml"), "--show"])
    assert shown.exit_code == 0, shown.output
    assert "Paired difference" in shown.output and "audio_only" in shown.output
    bad = runner.invoke(app, ["compare", "--params", str(tmp_path / "params.yaml"), "--seeds", "0,x"])
    assert bad.exit_code == 2 and "--seeds: expected comma-separated integers" in bad.output
    dup = runner.invoke(app, ["compare", "--params", str(tmp_path / "params.yaml"), "--seeds", "1,1"])
    assert dup.exit_code == 2 and "seeds has duplicates" in dup.output
