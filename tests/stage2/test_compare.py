"""`jmt compare`: real training of several heads over two seeds, the aggregation checked against
the per-run numbers and the runs' stored predictions, robustness masking, reuse by run key and
resumption; on the tiny demo cache (va, two streams) and on synthetic caches with every task
(va + expr + au: tables, paired intervals and availability per task and for the multi-task
score, the entry left out of training) and with three streams (tests/stage2/multitask.py)."""

import json
import shutil

import h5py
import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score
from typer.testing import CliRunner

from pipeline import cache
from pipeline.cli import app
from pipeline.errors import JmtError, ParamsError
from pipeline.stage2.compare import comparison_fingerprints, load_predictions, markdown, run_compare, run_folder
from pipeline.stage2.compare.runs import folder_name, run_key
from pipeline.stage2.heads import head_names
from pipeline.stats import paired_t
from pipeline.tasks import TASKS

from ..reference import split_ccc_np
from ..stage1.helpers import params_at
from .multitask import LEFT_OUT, PLAN, compared_tasks, compared_three_streams

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/stage2/conftest.py

HEADS = ["jmt", "concat", "only:audio"]
VA = ("ccc_valence", "ccc_arousal", "ccc_mean")
CONDITIONS = ["full", "no_visual", "no_audio"]
SUBSETS = {"all_streams": "every stream present", "no_visual": "no visual", "no_audio": "no audio"}


def tiny_params(tiny_cache, folder, **sections):
    """Params over the session's tiny demo caches (embeddings and labels), a small model and
    three epochs, every output in `folder`; `sections` override keys."""
    params, _ = tiny_cache
    over = {"embed": {"out": str(params.path(params.embed.out))},
            "labels": {"out": str(params.path(params.labels.out))}, "model": {"d_model": 16},
            "train": {"epochs": 3, "window": 16, "hop": 8, "batch_size": 4, "out": str(folder / "model.pt"),
                      "live_dir": str(folder / "live")}}
    for section, values in sections.items():
        over[section] = {**over.get(section, {}), **values}
    return params_at(folder, params.path(params.corpus.root), **over)


def compare_params(tiny_cache, folder, **train):
    """The session's comparison (the `compared` fixture): HEADS x seeds 0, 1 on the tiny cache."""
    return tiny_params(tiny_cache, folder, train=train, report={"out": str(folder / "reports"), "videos": 1, "dpi": 60},
                       compare={"heads": HEADS, "seeds": [0, 1], "reference": "jmt", "runs": str(folder / "runs"),
                                "metrics": str(folder / "compare.json"), "table": str(folder / "compare.md"),
                                "bootstrap": 200, "latency_repeats": 1})


def split_of(params, name, task="va"):
    """An entry's split for a task, from its labels file."""
    with cache.open_entry(cache.entry_path(params.path(params.labels.out), name)) as f:
        return next((t["split"] for t in cache.attrs_of(f)["tasks"] if t["task"] == task), None)


def cached(params, name, what):
    """A dataset of an entry, straight from the cache files: `labels/<task>` or `streams/<s>/mask`."""
    folder = params.path(params.labels.out if what.startswith("labels/") else params.embed.out)
    with h5py.File(cache.entry_path(folder, name)) as f:
        return f[what][...]


def runs_of(result, head):
    return [r for r in result["runs"] if r["head"] == head]


def table_after(text, title):
    """The rows (cells) of the markdown table that follows the line starting with `title`."""
    lines = text.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith(title))
    rows = []
    for line in lines[i + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows[0], {r[0]: r[1:] for r in rows[2:]}


def pm(s):
    return f"{s['mean']:.3f}" + (f" ± {s['std']:.3f}" if s["std"] is not None else "")


# ---------------------------------------------------------------- va on the tiny demo cache

def test_every_head_and_seed_is_trained_and_summarised(compared):
    params, result = compared
    assert result["timing"] == {**result["timing"], "trained": 6, "reused": 0}
    stored = json.loads(params.path(params.compare.metrics).read_text())
    assert stored == json.loads(json.dumps(result)) and stored["results"].keys() == set(HEADS)
    assert (stored["tasks"], stored["streams"], stored["conditions"]) == (["va"], ["visual", "audio"], CONDITIONS)
    assert stored["metrics"] == {"va": list(VA)} and stored["main_metric"] == {"va": "ccc_mean"}
    assert stored["subsets"] == SUBSETS
    for head in HEADS:
        runs = runs_of(result, head)
        assert [(r["seed"], r["folder"]) for r in runs] == [(s, folder_name(head, s, r["key"])) for s, r in zip((0, 1), runs)]
        for r in runs:
            assert json.loads((params.path(params.compare.runs) / r["folder"] / "run.json").read_text())["key"] == r["key"]
        for split in ("validation", "test"):
            assert set(result["results"][head][split]) == {"va"}     # one task: no multi-task score
            for condition in CONDITIONS:
                for k in VA:
                    values = [r[split][condition]["va"][k] for r in runs]
                    s = result["results"][head][split]["va"][condition][k]
                    assert s["n"] == 2
                    assert s["mean"] == pytest.approx(np.mean(values), abs=1e-5)
                    assert s["std"] == pytest.approx(np.std(values, ddof=1), abs=1e-5)
        assert result["results"][head]["parameters"] > 0 and result["results"][head]["mflops_per_frame"] > 0
    assert folder_name("only:audio", 1, "0123456789abcdef" * 4) == "only_audio-seed1-0123456789ab"
    assert sorted(p.name for p in params.path(params.compare.runs).iterdir()) == sorted(r["folder"] for r in result["runs"])


def test_paired_differences_are_per_seed_and_use_the_t_interval(compared):
    _, result = compared
    assert "vs_reference" not in result["results"]["jmt"]
    for head in ("concat", "only:audio"):
        for split in ("validation", "test"):
            own = [r[split]["full"]["va"]["ccc_mean"] for r in runs_of(result, head)]
            ref = [r[split]["full"]["va"]["ccc_mean"] for r in runs_of(result, "jmt")]
            v = result["results"][head]["vs_reference"][split]["va"]
            assert set(result["results"][head]["vs_reference"][split]) == {"va"}
            assert v["per_seed"] == pytest.approx(np.subtract(own, ref), abs=2e-6)
            iv = paired_t(np.array(v["per_seed"]))
            assert (v["seeds"]["low"], v["seeds"]["high"]) == pytest.approx((iv.low, iv.high), abs=1e-5)
            assert v["seeds"]["method"] == "paired t over seeds"
            # one video per split in the tiny corpus: every resample is the same video
            assert v["videos"]["n"] == 1 and v["videos"]["low"] == pytest.approx(v["videos"]["high"])
            assert v["videos"]["mean"] == pytest.approx(np.mean(v["per_seed"]), abs=1e-5)


def test_stored_predictions_rescore_to_the_reported_numbers(compared):
    """The stored predictions and the labels cache, scored in numpy (valid frames of every
    video of the split concatenated), give the numbers the comparison reports."""
    params, result = compared
    for head in ("concat", "only:audio"):
        preds = load_predictions(run_folder(params, result, head, 1))
        assert set(preds) == {(s, c) for s in ("validation", "test") for c in CONDITIONS}
        run = next(r for r in runs_of(result, head) if r["seed"] == 1)
        for (split, condition), p in preds.items():
            assert {split_of(params, n) for n in p} == {split}
            ys = {n: cached(params, n, "labels/va") for n in p}
            valid = {n: (y != -5).all(1) for n, y in ys.items()}
            expected = split_ccc_np({n: x["va"] for n, x in p.items()}, ys, valid)
            for k in VA:
                assert run[split][condition]["va"][k] == pytest.approx(expected[k], abs=1e-5), (split, condition, k)


def test_each_seed_is_its_own_run(compared):
    """Seeds 0 and 1 train different models (initialisation, batch order): different losses,
    weights and predictions, so the std over seeds and the t interval are not zero."""
    params, result = compared
    for head in HEADS:
        info = [json.loads((run_folder(params, result, head, s) / "run.json").read_text()) for s in (0, 1)]
        assert [h["train_loss"] for h in info[0]["history"]] != [h["train_loss"] for h in info[1]["history"]], head
        ckpts = [torch.load(run_folder(params, result, head, s) / "model.pt", weights_only=True) for s in (0, 1)]
        assert [c["params"]["train"]["seed"] for c in ckpts] == [0, 1]
        assert [c["head"]["name"] for c in ckpts] == [head, head]
        assert any(not torch.equal(ckpts[0]["state_dict"][k], ckpts[1]["state_dict"][k])
                   for k in ckpts[0]["state_dict"]), head
        p0, p1 = (load_predictions(run_folder(params, result, head, s))["validation", "full"] for s in (0, 1))
        assert any(np.abs(p0[n]["va"] - p1[n]["va"]).max() > 1e-4 for n in p0), head
        assert result["results"][head]["validation"]["va"]["full"]["ccc_mean"]["std"] > 0, head
    for head in ("concat", "only:audio"):
        seeds = result["results"][head]["vs_reference"]["validation"]["va"]["seeds"]
        assert seeds["high"] - seeds["low"] > 1e-4, head


def test_masking_a_stream_reaches_the_model(compared):
    _, result = compared
    for r in runs_of(result, "only:audio"):
        # without its only stream the head sees one learned "missing" vector on every frame:
        # its output is flat apart from the temporal encoder's edge effects, CCC about 0
        assert abs(r["validation"]["no_audio"]["va"]["ccc_mean"]) < 0.01
        assert r["validation"]["no_visual"] == r["validation"]["full"]  # the stream it never reads
    assert any(r["validation"]["no_visual"] != r["validation"]["full"] for r in runs_of(result, "jmt"))


def test_markdown_tables_name_every_head_and_the_reference(compared):
    params, result = compared
    text = params.path(params.compare.table).read_text()
    assert text == markdown(result)
    for head in HEADS:
        assert f"`{head}`" in text
    assert "Paired difference from `jmt`" in text and "Robustness, va CCC mean" in text and "MFLOPs / frame" in text
    assert "Seeds 0, 1 for every head" in text and "Multi-task score" not in text
    best = max(HEADS, key=lambda h: result["results"][h]["validation"]["va"]["full"]["ccc_mean"]["mean"])
    assert f"- Highest validation va CCC mean: `{best}`" in text
    for split, name in (("validation", "Validation"), ("test", "Test")):
        below = [h for h in ("concat", "only:audio")
                 if result["results"][h]["vs_reference"][split]["va"]["seeds"]["verdict"] == "worse"]
        line = next(x for x in text.splitlines() if x.startswith(f"- {name}, va CCC mean, t over seeds"))
        assert all(f"`{h}`" in line.split("worse:")[1].split(";")[0] for h in below)
    header, rows = table_after(text, "**Valence-arousal (CCC)**")
    assert header[1:] == [f"{s} {k}" for s in ("val", "test") for k in ("valence", "arousal", "mean")]
    for head in HEADS:
        name = f"**`{head}`**" if head == "jmt" else f"`{head}`"
        res = result["results"][head]
        assert rows[name] == [pm(res[s]["va"]["full"][k]) for s in ("validation", "test") for k in VA]


def test_second_run_reuses_everything(compared, tmp_path):
    shared, first = compared
    # the same runs folder, but the tables go to tmp_path: the session's compare.json and
    # compare.md stay the fixture's (other tests compare them with its result)
    params = shared.updated(compare={"metrics": str(tmp_path / "compare.json"), "table": str(tmp_path / "compare.md")})
    models = {p: p.stat().st_mtime_ns for p in params.path(params.compare.runs).glob("*/model.pt")}
    again = run_compare(params)
    assert again["timing"]["trained"] == 0 and again["timing"]["reused"] == 6
    assert {p: p.stat().st_mtime_ns for p in models} == models
    strip = ("seconds", "reused")
    assert [{k: v for k, v in r.items() if k not in strip} for r in again["runs"]] == \
        [{k: v for k, v in r.items() if k not in strip} for r in first["runs"]]
    for head in HEADS:
        assert again["results"][head]["validation"] == first["results"][head]["validation"]
        assert again["results"][head]["availability"] == first["results"][head]["availability"]
        assert again["results"][head].get("vs_reference") == first["results"][head].get("vs_reference")


def test_run_key_changes_with_what_decides_the_numbers_only(compared):
    params, result = compared
    fp = comparison_fingerprints(params)
    assert fp == {k: v for k, v in result["fingerprints"].items() if k != "code"}
    key = run_key(params, "concat", 0, fp)
    assert key == next(r["key"] for r in result["runs"] if (r["head"], r["seed"]) == ("concat", 0))
    assert run_key(params, "concat", 0, dict(fp)) == key
    same = [params.updated(train={"out": "elsewhere.pt", "live_dir": "elsewhere", "preload_max_mb": 1.0}),
            params.updated(compare={"heads": ["concat"], "reference": "concat", "runs": "elsewhere"})]
    assert all(run_key(p, "concat", 0, fp) == key for p in same)
    other = [run_key(params, "jmt", 0, fp), run_key(params, "concat", 1, fp),
             run_key(params, "concat", 0, {**fp, "labels": "0" * 64}),
             run_key(params, "concat", 0, {**fp, "cache": "x"}),
             *(run_key(params.updated(**change), "concat", 0, fp) for change in (
                 {"train": {"tasks": ["va", "expr"]}}, {"train": {"task_weights": {"va": 2.0}}},
                 {"tasks": {"va.clip": False}}, {"tasks": {"au.pos_weight": True}}, {"model": {"d_model": 8}},
                 {"train": {"epochs": 4}}, {"run": {"compare.cpus": 2}}))]
    assert key not in other and len(set(other)) == len(other)


def test_changed_params_or_broken_runs_are_recomputed(tiny_cache, tmp_path, compared):
    params, first = compared
    runs = tmp_path / "runs"
    shutil.copytree(params.path(params.compare.runs), runs)
    subset = compare_params(tiny_cache, tmp_path).updated(compare={"heads": ["jmt", "concat"]})
    folder = {(r["head"], r["seed"]): r["folder"] for r in first["runs"]}
    (runs / folder["concat", 0] / "run.json").write_text("{ truncated")      # a damaged run
    # an interrupted run: no finished folder, a temporary one holding what the kill left
    shutil.rmtree(runs / folder["concat", 1])
    tmp = runs / f".{folder['concat', 1]}.tmp"
    tmp.mkdir()
    (tmp / "model.pt").write_bytes(b"half a checkpoint")
    (tmp / "left-by-the-kill.txt").write_text("stale")
    result = run_compare(subset)
    assert result["timing"]["trained"] == 2 and result["timing"]["reused"] == 2
    assert [r["folder"] for r in result["runs"]] == [folder[h, s] for h in ("jmt", "concat") for s in (0, 1)]
    assert not tmp.exists() and not (runs / folder["concat", 1] / "left-by-the-kill.txt").exists()
    redone = json.loads((runs / folder["concat", 1] / "run.json").read_text())
    assert redone["seed"] == 1
    assert torch.load(runs / folder["concat", 1] / "model.pt", weights_only=True)["head"]["name"] == "concat"
    assert sorted(p.name for p in runs.iterdir()) == sorted(folder.values())
    changed = compare_params(tiny_cache, tmp_path, epochs=2).updated(compare={"heads": ["jmt"], "seeds": [0]})
    result = run_compare(changed)
    assert result["timing"]["trained"] == 1 and result["runs"][0]["epochs"] == 2
    assert result["runs"][0]["folder"] != folder["jmt", 0]       # a folder of its own, beside the other
    assert result["results"]["jmt"]["validation"]["va"]["full"]["ccc_mean"]["std"] is None
    options = compare_params(tiny_cache, tmp_path).updated(compare={"heads": ["jmt"], "seeds": [0]},
                                                           tasks={"va.clip": False})
    assert run_compare(options)["timing"]["trained"] == 1     # a task option is part of the run key
    assert len(list(runs.iterdir())) == 6 + 2                 # every configuration kept its runs


def test_a_param_flipped_and_back_retrains_nothing_the_second_time(tiny_cache, tmp_path, compared):
    """Runs are keyed by content: lr 0.0005 trains its own runs beside the first ones; going back
    to the first lr reuses the first runs (nothing trained), then 0.0005 again reuses its own."""
    params, first = compared
    runs = tmp_path / "runs"
    shutil.copytree(params.path(params.compare.runs), runs)
    base = compare_params(tiny_cache, tmp_path).updated(compare={"heads": ["jmt", "concat"], "seeds": [0]})
    lr = base.updated(train={"lr": 0.0005})
    steps = [run_compare(p)["timing"] for p in (lr, base, lr)]
    assert [(t["trained"], t["reused"]) for t in steps] == [(2, 0), (0, 2), (0, 2)]
    assert len(list(runs.iterdir())) == 6 + 2


def test_adding_a_head_or_a_seed_trains_only_the_new_runs(tiny_cache, tmp_path, compared):
    params, first = compared
    runs = tmp_path / "runs"
    shutil.copytree(params.path(params.compare.runs), runs)
    grown = compare_params(tiny_cache, tmp_path).updated(compare={"heads": [*HEADS, "late"]})
    result = run_compare(grown)
    assert (result["timing"]["trained"], result["timing"]["reused"]) == (2, 6)
    assert [r["head"] for r in result["runs"] if not r["reused"]] == ["late", "late"]
    more = compare_params(tiny_cache, tmp_path).updated(compare={"heads": ["jmt", "late"], "seeds": [0, 1, 2]})
    result = run_compare(more)
    assert [(r["head"], r["seed"]) for r in result["runs"] if not r["reused"]] == [("jmt", 2), ("late", 2)]
    assert {r["key"] for r in first["runs"]} <= {json.loads((p / "run.json").read_text())["key"] for p in runs.iterdir()}

def test_unknown_heads_fail_before_training(tiny_cache, tmp_path):
    params = compare_params(tiny_cache, tmp_path)
    with pytest.raises(JmtError, match="unknown fusion head 'nope'"):
        run_compare(params.updated(compare={"heads": ["jmt", "nope"]}))
    with pytest.raises(ParamsError, match=r"compare.heads: head 'only:voice': no stream 'voice' in the cache "
                                          r"\(streams: visual, audio\)"):
        run_compare(params.updated(compare={"heads": ["jmt", "only:voice"]}))
    assert not (tmp_path / "runs").exists()


def test_cli_show_prints_the_saved_table_and_checks_options(compared, tmp_path):
    params, _ = compared
    import yaml

    data = yaml.safe_load((params.root / "params.yaml").read_text())
    data["compare"] = {**data.get("compare", {}), "table": str(params.path(params.compare.table))}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    args = ["compare", "--params", str(tmp_path / "params.yaml")]
    runner = CliRunner()
    shown = runner.invoke(app, [*args, "--show"])
    assert shown.exit_code == 0, shown.output
    assert "Paired difference" in shown.output and "only:audio" in shown.output
    bad = runner.invoke(app, [*args, "--seeds", "0,x"])
    assert bad.exit_code == 2 and "--seeds: expected comma-separated integers" in bad.output
    dup = runner.invoke(app, [*args, "--seeds", "1,1"])
    assert dup.exit_code == 2 and "seeds has duplicates" in dup.output
    task = runner.invoke(app, [*args, "--tasks", "va,nope"])
    assert task.exit_code == 2 and "unknown task 'nope'" in task.output
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- va + expr + au

@pytest.fixture(scope="module")
def tasks_run(tmp_path_factory):
    return compared_tasks(tmp_path_factory)


KEYS = ("va", "expr", "au", "score")
MAIN = {"va": "ccc_mean", "expr": "f1", "au": "f1", "score": "score"}


def members(split, task):
    return sorted(n for n, s in PLAN.items() if s.get(task) == split)


def value(run, split, key, condition="full"):
    row = run[split][condition]
    return row["score"] if key == "score" else row[key][MAIN[key]]


def test_multi_task_runs_score_each_task_on_its_split_and_their_sum(tasks_run):
    params, result = tasks_run
    assert result["tasks"] == ["va", "expr", "au"]
    assert result["main_metric"] == {t: MAIN[t] for t in ("va", "expr", "au")}
    assert result["metrics"] == {t: list(TASKS.get(t).metrics) for t in ("va", "expr", "au")}
    assert result["heads"] == ["jmt", "concat", "only:visual", "only:audio"]     # only:* -> one per stream
    assert result["corpus"]["videos"] == {"train": 3, "validation": {t: len(members("validation", t)) for t in
                                                                     ("va", "expr", "au")},
                                          "test": {t: len(members("test", t)) for t in ("va", "expr", "au")}}
    for r in result["runs"]:
        for split in ("validation", "test"):
            for condition in CONDITIONS:
                row = r[split][condition]
                assert set(row) == set(KEYS)
                assert row["score"] == pytest.approx(sum(row[t][MAIN[t]] for t in ("va", "expr", "au")), abs=3e-6)
    for head in result["heads"]:
        res = result["results"][head]
        for split in ("validation", "test"):
            assert set(res[split]) == set(KEYS)
            for key in KEYS:
                metrics = ("score",) if key == "score" else TASKS.get(key).metrics
                assert set(res[split][key]) == set(CONDITIONS) and set(res[split][key]["full"]) == set(metrics)
                values = [value(r, split, key) for r in runs_of(result, head)]
                assert res[split][key]["full"][MAIN[key]]["mean"] == pytest.approx(np.mean(values), abs=2e-6)


def test_multi_task_run_predictions_rescore_per_task(tasks_run):
    """A run's stored outputs (every task, every entry of a split's union) and the labels cache
    give each task's metric on its own split's valid frames: CCC in numpy, scikit-learn's F1."""
    params, result = tasks_run
    run = next(r for r in runs_of(result, "concat") if r["seed"] == 0)
    preds = load_predictions(params.path(params.compare.runs) / run["folder"])
    for (split, condition), p in preds.items():
        assert sorted(p) == sorted({n for t in ("va", "expr", "au") for n in members(split, t)})
        assert all(set(x) == {"va", "expr", "au"} for x in p.values())
        names = members(split, "va")
        ys = {n: cached(params, n, "labels/va") for n in names}
        va = split_ccc_np({n: p[n]["va"] for n in names}, ys, {n: (y != -5).all(1) for n, y in ys.items()})
        assert run[split][condition]["va"]["ccc_mean"] == pytest.approx(va["ccc_mean"], abs=2e-6)
        names = members(split, "expr")
        y = np.concatenate([cached(params, n, "labels/expr")[:, 0] for n in names])
        x = np.concatenate([p[n]["expr"] for n in names])
        keep = y >= 0
        assert np.allclose(x.sum(1), 1, atol=1e-5)                     # stored as probabilities
        f1 = f1_score(y[keep], x[keep].argmax(1), average="macro", labels=range(8), zero_division=0)
        assert run[split][condition]["expr"]["f1"] == pytest.approx(f1, abs=2e-6)
        names = members(split, "au")
        y = np.concatenate([cached(params, n, "labels/au") for n in names])
        x = np.concatenate([p[n]["au"] for n in names])
        keep = (y >= 0).all(1)
        f1 = np.mean([f1_score(y[keep, k], x[keep, k] >= 0.5, zero_division=0) for k in range(12)])
        assert run[split][condition]["au"]["f1"] == pytest.approx(f1, abs=2e-6), (split, condition)


def test_multi_task_paired_differences_per_task_and_score(tasks_run):
    _, result = tasks_run
    for head in ("concat", "only:visual", "only:audio"):
        for split in ("validation", "test"):
            by_key = result["results"][head]["vs_reference"][split]
            assert set(by_key) == set(KEYS)
            for key, vs in by_key.items():
                own = [value(r, split, key) for r in runs_of(result, head)]
                ref = [value(r, split, key) for r in runs_of(result, "jmt")]
                assert vs["per_seed"] == pytest.approx(np.subtract(own, ref), abs=4e-6), (head, split, key)
                iv = paired_t(np.array(vs["per_seed"]))
                assert (vs["seeds"]["low"], vs["seeds"]["high"]) == pytest.approx((iv.low, iv.high), abs=1e-5)
                # the bootstrap resamples the videos the key scores: a task's own, all of them for the score
                videos = {n for t in (("va", "expr", "au") if key == "score" else (key,)) for n in members(split, t)}
                assert vs["videos"]["n"] == len(videos) and vs["videos"]["indicative"] is True
                assert vs["videos"]["mean"] == pytest.approx(np.mean(vs["per_seed"]), abs=1e-5)
                assert vs["videos"]["low"] <= vs["videos"]["high"]


def test_multi_task_availability_per_task_and_stream(tasks_run):
    """Subsets `all_streams` and `no_<stream>` per task, sizes from the cache's own masks and
    each task's valid frames; a run's subset metric recomputed from its predictions."""
    params, result = tasks_run
    assert result["subsets"] == SUBSETS
    pick = {"all_streams": lambda m: m["visual"] & m["audio"], "no_visual": lambda m: ~m["visual"],
            "no_audio": lambda m: ~m["audio"]}
    run = next(r for r in runs_of(result, "only:visual") if r["seed"] == 1)
    preds = load_predictions(params.path(params.compare.runs) / run["folder"])
    for split in ("validation", "test"):
        for task in ("va", "expr", "au"):
            t = TASKS.get(task)()
            for subset, keep_of in pick.items():
                frames, videos, p, y = 0, 0, [], []
                for name in members(split, task):
                    masks = {s: cached(params, name, f"streams/{s}/mask") for s in ("visual", "audio")}
                    labels = cached(params, name, f"labels/{task}")
                    keep = keep_of(masks) & t.valid(labels)
                    frames, videos = frames + int(keep.sum()), videos + bool(keep.any())
                    p.append(preds[split, "full"][name][task][keep])
                    y.append(labels[keep])
                facts = result["corpus"]["availability"][split][task][subset]
                assert facts == {"frames": frames, "videos": videos}, (split, task, subset)
                row = run["availability"][split][task][subset]
                assert (row["frames"], row["videos"], row["scored"]) == (frames, videos, frames >= 10)
                if row["scored"]:
                    assert row[t.metric] == pytest.approx(t.score(np.concatenate(p), np.concatenate(y))[t.metric],
                                                          abs=2e-6)
                for head in result["heads"]:
                    summary = result["results"][head]["availability"][split][task][subset]
                    assert (summary["frames"], summary["videos"]) == (frames, videos)
                    assert ("vs_reference" in summary) == (head != "jmt" and summary["scored"])
    assert set(result["results"]["jmt"]["availability"]["validation"]) == {"va", "expr", "au"}


def test_multi_task_tables_per_task_and_for_the_score(tasks_run):
    params, result = tasks_run
    text = params.path(params.compare.table).read_text()
    assert text == markdown(result)
    titles = {"va": "**Valence-arousal (CCC)**", "expr": "**Expression (macro F1 over 8 classes; accuracy)**",
              "au": "**Action units (mean F1 over 12 AUs at 0.5)**",
              "score": "**Multi-task score (the sum of the tasks' metrics)**"}
    words = {"va": "va CCC mean", "expr": "expr F1", "au": "au F1", "score": "score"}
    res = result["results"]
    name = {h: f"**`{h}`**" if h == "jmt" else f"`{h}`" for h in result["heads"]}
    for key, title in titles.items():
        metrics = ("score",) if key == "score" else TASKS.get(key).metrics
        header, rows = table_after(text, title)
        assert header[1:] == [f"{s} {m.removeprefix('ccc_')}" for s in ("val", "test") for m in metrics]
        for head in result["heads"]:
            cells = [pm(res[head][s][key]["full"][m]) for s in ("validation", "test") for m in metrics]
            assert rows[name[head]] == cells
        header, rows = table_after(text, f"Paired difference from `jmt` ({words[key]}, head − jmt")
        assert set(rows) == {name[h] for h in result["heads"] if h != "jmt"}
        for head, cells in rows.items():
            vs = res[head.strip("`")]["vs_reference"]["validation"][key]
            assert cells[0].startswith(f"{vs['seeds']['mean']:+.3f} [{vs['seeds']['low']:+.3f}, ")
            assert cells[1].startswith(f"{vs['videos']['mean']:+.3f} [") and cells[1].endswith("†")
        assert f"**Robustness, {words[key]}**" in text
        assert f"- Validation, {words[key]}, t over seeds: better than `jmt`: " in text
    for task in ("va", "expr", "au"):
        assert f"**By stream availability, {task}, validation**" in text
    order = sorted(result["heads"], key=lambda h: -res[h]["validation"]["score"]["full"]["score"]["mean"])
    assert f"- Highest validation score: `{order[0]}`" in text                   # ranked by the multi-task score
    assert "early stopping on the validation va CCC mean + expr F1 + au F1" in text


def test_entries_in_two_tasks_splits_are_left_out_of_training_and_said_so(tasks_run):
    params, result = tasks_run
    assert result["corpus"]["left_out"] == LEFT_OUT
    for r in result["runs"]:
        assert r["left_out"] == LEFT_OUT
        stored = json.loads((params.path(params.compare.runs) / r["folder"] / "run.json").read_text())
        assert stored["left_out"] == LEFT_OUT
    assert "2 entries in a training split were left out" in params.path(params.compare.table).read_text()
    # never trained on: the standardisation statistics are those of t0, t1, t2 alone (mixed2 is
    # in va's training split, but also in expr's validation split)
    trained_on = [n for n, splits in PLAN.items() if set(splits.values()) == {"train"}]
    assert trained_on == ["t0", "t1", "t2"]
    ckpt = torch.load(run_folder(params, result, "concat", 0) / "model.pt", weights_only=True)
    for stream in ("visual", "audio"):
        x = np.concatenate([cached(params, n, f"streams/{stream}/features")[cached(params, n, f"streams/{stream}/mask")]
                            for n in trained_on]).astype(np.float64)
        np.testing.assert_allclose(ckpt["state_dict"][f"inputs.{stream}.mean"].numpy(), x.mean(0), atol=1e-5)
        np.testing.assert_allclose(ckpt["state_dict"][f"inputs.{stream}.std"].numpy(), x.std(0), atol=1e-5)
    # ... and scored where they belong: `mixed` for va, `mixed2` for expr and au
    assert members("validation", "va") == ["mixed", "v0", "v1"]
    assert members("validation", "expr") == members("validation", "au") == ["mixed2", "v0", "v1"]
    assert result["corpus"]["scored_frames"]["validation"] == {"va": 3 * 55, "expr": 3 * 55, "au": 3 * 55}


def test_only_star_expands_to_one_unimodal_head_per_stream():
    assert head_names(["jmt", "only:*"], ["visual", "audio"]) == ["jmt", "only:visual", "only:audio"]
    assert head_names(["only:audio", "only:*"], ["visual", "audio", "prosody"]) == \
        ["only:audio", "only:visual", "only:prosody"]
    with pytest.raises(ValueError, match="no stream 'face'"):
        head_names(["only:face"], ["visual", "audio"])


def test_three_streams_give_three_references_and_a_condition_per_stream(tmp_path_factory):
    params, result = compared_three_streams(tmp_path_factory)
    streams = ["visual", "audio", "prosody"]
    assert result["streams"] == streams and result["heads"] == ["concat", *(f"only:{s}" for s in streams)]
    assert result["conditions"] == ["full", *(f"no_{s}" for s in streams)]
    assert result["subsets"] == {"all_streams": "every stream present", **{f"no_{s}": f"no {s}" for s in streams}}
    assert sorted(p.name for p in params.path(params.compare.runs).iterdir()) == sorted(
        r["folder"] for r in result["runs"])
    for stream in streams:
        (run,) = runs_of(result, f"only:{stream}")
        for other in streams:
            if other != stream:   # masking a stream the head never reads changes nothing
                assert run["validation"][f"no_{other}"] == run["validation"]["full"], (stream, other)
        assert run["validation"][f"no_{stream}"] != run["validation"]["full"], stream
    (concat,) = runs_of(result, "concat")
    assert all(concat["validation"][f"no_{s}"] != concat["validation"]["full"] for s in streams)
    for split in ("validation", "test"):
        for subset in result["subsets"]:
            frames = 0
            for name in members(split, "va"):
                masks = {s: cached(params, name, f"streams/{s}/mask") for s in streams}
                keep = ((masks["visual"] & masks["audio"] & masks["prosody"]) if subset == "all_streams"
                        else ~masks[subset.removeprefix("no_")])
                frames += int((keep & (cached(params, name, "labels/va") != -5).all(1)).sum())
            assert result["corpus"]["availability"][split]["va"][subset]["frames"] == frames, (split, subset)
    text = markdown(result)
    assert "| head | val full | val no visual | val no audio | val no prosody |" in text
    assert "Streams: visual `test` (6-d), audio `test` (4-d), prosody `test` (3-d)." in text
