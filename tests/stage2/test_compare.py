"""`jmt compare` on the tiny cache: real training of several heads over two seeds, the
aggregation checked against the per-run numbers, robustness masking, reuse and resumption."""

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import CompareParams, ReportParams
from pipeline.errors import JmtError
from pipeline.stage2.compare import CONDITIONS, METRICS, load_predictions, markdown, run_compare
from pipeline.stage2.data import load_split
from pipeline.stage2.protocol import labels_of, score
from pipeline.stats import paired_t

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
    params, result = compared
    folder = params.path(params.compare.runs) / "concat-seed1"
    preds = load_predictions(folder)
    assert set(preds) == {(s, c) for s in ("validation", "test") for c in CONDITIONS}
    entries = load_split(params.path(params.embed.out), "validation", preload_max_mb=100)
    labels = labels_of(entries)
    run = next(r for r in result["runs"] if r["head"] == "concat" and r["seed"] == 1)
    for condition in CONDITIONS:
        got = score(preds["validation", condition], labels)["ccc_mean"]
        assert got == pytest.approx(run["validation"][condition]["ccc_mean"], abs=1e-5)


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


def test_second_run_reuses_everything(compared):
    params, first = compared
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
    (runs / ".jmt-seed1.tmp").mkdir()                                   # an interrupted one
    result = run_compare(subset)
    assert result["timing"]["trained"] == 1 and result["timing"]["reused"] == 3
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
