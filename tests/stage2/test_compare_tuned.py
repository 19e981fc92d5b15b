"""`jmt compare` with `compare.configs: tuned` (pipeline/stage2/compare/__init__.py, tuned.py): a
real comparison of two heads x two seeds on the tiny cache, each head with the best configuration
of a hand-written tune.json (concat: a smaller d_model and another lr; only:audio: exactly the
defaults), beside the default comparison of the same heads and seeds. The tune.json's protocol is
what `jmt tune`'s `summary` writes for these params; its results are set by hand so the test knows
which head must retrain and which must reuse."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pipeline.errors import InputError
from pipeline.stage2 import checkpoints
from pipeline.stage2.compare import collect_garbage, comparison_fingerprints, every_planned_run, run_compare
from pipeline.stage2.compare.runs import run_key
from pipeline.stage2.compare.survival import STATUSES, flat_verdicts
from pipeline.stage2.compare.tuned import default_paths
from pipeline.stage2.tune import best_configs, summary
from pipeline.stage2.tune.space import configured

from .faked_compare import HEADS, params_for

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/stage2/conftest.py

LR = 0.002
EFFORT = {"concat": {"trials": 3, "complete": 3, "pruned": 0, "epochs": 9, "seconds": 4.0, "resource_seconds": 4.0},
          "only:audio": {"trials": 3, "complete": 2, "pruned": 1, "epochs": 7, "seconds": 3.0,
                         "resource_seconds": 3.0}}
COST = ("cpu_ms_per_1000_frames",)  # measured latency: differs between two calls of the same comparison


def write_tune(params, path, configs: dict[str, dict]) -> dict:
    """A tune.json for `configs` (head -> best configuration): the protocol and layout of
    `jmt tune`'s `summary` (no search behind it), each head's best, effort and search score."""
    out = summary(params, list(configs), [], {}, "sqlite:///unused.db")
    for i, (head, config) in enumerate(configs.items()):
        out["results"][head] = {"effort": EFFORT[head], "best": {"trial": 1, "value": 0.1 + i, "config": config}}
    path.write_text(json.dumps(out, indent=1) + "\n")
    return out


@pytest.fixture(scope="module")
def tuned(tiny_cache, tmp_path_factory):
    """(params, result, tune.json, plain default comparison) in one runs folder: the tuned
    comparison first (it runs the default one beside it), then a plain `configs: default` one."""
    folder = tmp_path_factory.mktemp("tuned")
    base = params_for(tiny_cache, folder)
    configs = {"concat": {"model.d_model": 8, "train.lr": LR},
               "only:audio": {"model.d_model": base.model.d_model, "train.lr": base.train.lr}}  # the defaults
    assert base.model.d_model != 8 and base.train.lr != LR
    tune = write_tune(base, folder / "tune.json", configs)
    params = params_for(tiny_cache, folder, configs="tuned", tuned=str(folder / "tune.json"))
    result = run_compare(params)
    plain = run_compare(params_for(tiny_cache, folder, metrics=str(folder / "plain.json"),
                                   table=str(folder / "plain.md")))
    return params, result, tune, plain


def rows(result, head):
    return sorted((r for r in result["runs"] if r["head"] == head), key=lambda r: r["seed"])


def run_json(params, row):
    return json.loads((params.path(params.compare.runs) / row["folder"] / "run.json").read_text())


def default_of(params):
    return json.loads(params.path(default_paths(params)["metrics"]).read_text())


def without_cost(result):
    return {h: {k: v for k, v in r.items() if k not in COST} for h, r in result["results"].items()}


def test_tuned_runs_have_their_own_keys_and_train_with_the_tuned_values(tuned):
    params, result, tune, _ = tuned
    default = default_of(params)
    runs = params.path(params.compare.runs)
    fingerprints = comparison_fingerprints(params)
    own = configured(params, tune["results"]["concat"]["best"]["config"])
    for t, d in zip(rows(result, "concat"), rows(default, "concat")):
        assert t["seed"] == d["seed"] and t["key"] != d["key"] and t["folder"] != d["folder"]
        assert t["key"] == run_key(own, "concat", t["seed"], fingerprints) == run_json(params, t)["key"]
        assert d["key"] == run_key(params, "concat", d["seed"], fingerprints)
        tuned_ckpt = checkpoints.read(runs / t["folder"] / "model.pt")
        default_ckpt = checkpoints.read(runs / d["folder"] / "model.pt")
        assert tuned_ckpt.head_kwargs["d_model"] == tuned_ckpt.params.model.d_model == 8
        assert default_ckpt.head_kwargs["d_model"] == default_ckpt.params.model.d_model == 16
        assert tuned_ckpt.params.train.lr == LR and default_ckpt.params.train.lr == params.train.lr
        # the optimiser's lr per epoch: the schedule (warm-up, plateau) scales the configured one alike
        lrs = [[row["lr"] for row in run_json(params, r)["history"]] for r in (t, d)]
        assert np.allclose(np.divide(lrs[0], LR), np.divide(lrs[1], params.train.lr))
        size = lambda ckpt: sum(v.numel() for v in ckpt.build().state_dict().values())  # noqa: E731
        assert size(tuned_ckpt) < size(default_ckpt)
        assert run_json(params, t)["parameters"] == result["results"]["concat"]["parameters"]
    # the cost columns are of the head each side trained
    assert result["results"]["concat"]["parameters"] < default["results"]["concat"]["parameters"]
    assert result["results"]["only:audio"]["parameters"] == default["results"]["only:audio"]["parameters"]


def test_a_head_whose_best_configuration_is_the_default_reuses_the_default_runs(tuned):
    params, result, _, _ = tuned
    default = default_of(params)
    assert default["timing"]["trained"] == 4 and default["timing"]["reused"] == 0
    assert result["timing"] == {**result["timing"], "trained": 2, "reused": 2}   # concat's two seeds trained
    for t, d in zip(rows(result, "only:audio"), rows(default, "only:audio")):
        assert (t["key"], t["folder"], t["reused"]) == (d["key"], d["folder"], True)
        assert t["validation"] == d["validation"] and t["test"] == d["test"]
    assert all(not r["reused"] for r in rows(result, "concat"))
    names = {r["folder"] for res in (result, default) for r in res["runs"]}
    assert len(names) == 6
    assert sorted(p.name for p in params.path(params.compare.runs).iterdir()) == sorted(names)


def test_the_default_comparison_beside_is_the_plain_default_comparison(tuned):
    params, result, _, plain = tuned
    paths = default_paths(params)
    assert paths["metrics"].endswith("compare-default.json") and paths["table"].endswith("compare-default.md")
    default = default_of(params)
    assert params.path(paths["table"]).is_file()
    assert "configs" not in default and "tuning" not in default
    assert plain["timing"] == {**plain["timing"], "trained": 0, "reused": 4}   # the same runs folder: reused
    assert without_cost(default) == without_cost(plain)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "reused"} for r in rs]  # noqa: E731
    assert strip(default["runs"]) == strip(plain["runs"])
    # and the tuned one does differ where it trained something else
    assert without_cost(result)["concat"] != without_cost(default)["concat"]


def test_the_tuning_block_holds_each_heads_config_scores_and_effort(tuned):
    params, result, tune, _ = tuned
    stored = json.loads(params.path(params.compare.metrics).read_text())
    assert stored["configs"] == "tuned" and stored["tuning"] == json.loads(json.dumps(result["tuning"]))
    t = result["tuning"]
    default = default_of(params)
    assert (t["key"], t["metric"], t["protocol"]) == ("va", "ccc_mean", tune["protocol"])
    assert t["source"] == params.compare.tuned and t["default_metrics"] == default_paths(params)["metrics"]
    assert set(t["heads"]) == set(HEADS)
    for head in HEADS:
        h = t["heads"][head]
        assert h["config"] == tune["results"][head]["best"]["config"]
        assert h["effort"] == EFFORT[head] and h["search_best"] == tune["results"][head]["best"]["value"]
        for side, res in (("tuned", result), ("default", default)):
            assert set(h[side]) == {"validation", "test"}
            for split in ("validation", "test"):
                own = [r[split]["full"]["va"]["ccc_mean"] for r in rows(res, head)]
                assert h[side][split] == pytest.approx(np.mean(own), abs=2e-6)
                assert h[side][split] == round(res["results"][head][split]["va"]["full"]["ccc_mean"]["mean"], 6)
    assert t["heads"]["only:audio"]["tuned"] == t["heads"]["only:audio"]["default"]   # the same runs
    assert t["heads"]["concat"]["tuned"] != t["heads"]["concat"]["default"]


def test_survival_counts_every_used_interval_row_once(tuned):
    params, result, _, _ = tuned
    s = result["tuning"]["survival"]
    fa, fb = flat_verdicts(default_of(params)), flat_verdicts(result)
    used = [k for k in fa.keys() & fb.keys() if fa[k]["kind"] == "interval" and (fa[k]["used"] or fb[k]["used"])]
    assert used and set(s["counts"]) == set(STATUSES)
    assert sum(s["counts"].values()) == len(used)
    assert len(s["rows"]) == len(used) - s["counts"]["same"]
    assert {r["key"] for r in s["rows"]} <= set(used)
    for r in s["rows"]:
        assert (r["default"], r["tuned"]) == (fa[r["key"]]["verdict"], fb[r["key"]]["verdict"])
    assert set(s["rankings"]) == {k for k in fa.keys() & fb.keys() if k.endswith("/ranking")}


def test_the_markdown_adds_the_tuned_section(tuned):
    params, result, tune, _ = tuned
    text = params.path(params.compare.table).read_text()
    assert "**Tuned vs default configuration**" in text
    assert f"{tune['protocol']['trials']} trials per head" in text
    assert "Which of the default comparison's interval verdicts survive tuning" in text
    assert "Configurations: `concat` d_model 8, lr 0.002; `only:audio` d_model 16, lr" in text
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| head | default val | tuned val"))
    table = {}
    for line in lines[header + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        table[cells[0]] = cells[1:]
    assert set(table) == {"**`concat`**", "`only:audio`"}
    for head, name in (("concat", "**`concat`**"), ("only:audio", "`only:audio`")):
        h = result["tuning"]["heads"][head]
        assert table[name][:6] == [f"{h['default']['validation']:.3f}", f"{h['tuned']['validation']:.3f}",
                                   f"{h['default']['test']:.3f}", f"{h['tuned']['test']:.3f}",
                                   str(EFFORT[head]["trials"]), str(EFFORT[head]["epochs"])]
    # the default comparison's own table has no tuned section
    assert "Tuned vs default" not in params.path(default_paths(params)["table"]).read_text()


@pytest.mark.parametrize("budget, text", [({"epochs_budget": 12}, "12 epochs per head"),
                                           ({"seconds_budget": 30.0}, "30 CPU-s per head")])
def test_the_tuned_section_states_the_searchs_budget(tuned, tiny_cache, tmp_path, budget, text):
    """A search with an epoch or a seconds budget: the section names it (the same runs, all reused)."""
    params, result, tune, _ = tuned
    path = tmp_path / "tune.json"
    write_tune(params.updated(tune=budget), path, {h: tune["results"][h]["best"]["config"] for h in HEADS})
    again = run_compare(params.updated(compare={"tuned": str(path), "metrics": str(tmp_path / "compare.json"),
                                                "table": str(tmp_path / "compare.md")}))
    assert again["timing"] == {**again["timing"], "trained": 0, "reused": 4}
    assert again["tuning"]["heads"] == result["tuning"]["heads"]
    assert f"every head searched with the same budget: **{text}**" in (tmp_path / "compare.md").read_text()


def test_best_configs_names_the_file_and_the_head_without_a_configuration(tuned, tmp_path):
    params, _, tune, _ = tuned
    assert best_configs(params, HEADS) == {h: tune["results"][h]["best"]["config"] for h in HEADS}
    partial = tmp_path / "tune.json"
    partial.write_text(json.dumps({**tune, "results": {"concat": tune["results"]["concat"],
                                                       "only:audio": {**tune["results"]["only:audio"], "best": None}}}))
    copy = tmp_path / "runs"
    shutil.copytree(params.path(params.compare.runs), copy)
    before = sorted(p.name for p in copy.iterdir())
    broken = params.updated(compare={"tuned": str(partial), "runs": str(copy), "metrics": str(tmp_path / "c.json"),
                                     "table": str(tmp_path / "c.md")})
    with pytest.raises(InputError, match=rf"{partial}: no tuned configuration for head only:audio"):
        best_configs(broken, HEADS)
    with pytest.raises(InputError, match="no tuned configuration for head only:audio"):
        run_compare(broken)   # before anything trains or is written
    assert sorted(p.name for p in copy.iterdir()) == before and not (tmp_path / "c.json").exists()


def test_gc_keeps_both_the_default_and_the_tuned_runs(tuned, capsys):
    params, result, _, plain = tuned
    runs = params.path(params.compare.runs)
    before = sorted(p.name for p in runs.iterdir())
    keys = {r.key for r in every_planned_run(params)}
    assert keys == {r["key"] for res in (result, default_of(params)) for r in res["runs"]}
    assert collect_garbage(params, [], dry_run=True) == []
    # the default params alone would remove the tuned concat runs, and only those (dry run)
    default_params = params.updated(compare={"configs": "default"})
    would = collect_garbage(default_params, [], dry_run=True)
    assert sorted(f.name for f, _ in would) == sorted(r["folder"] for r in rows(result, "concat"))
    assert collect_garbage(default_params, [params], dry_run=True) == []
    assert sorted(p.name for p in runs.iterdir()) == before
    assert "would remove" in capsys.readouterr().err   # the console writes to stderr
