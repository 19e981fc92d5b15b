"""`jmt compare` on a real two-node Ray cluster: each (head, seed) run a task; on CPU the same
seed gives the local engine's numbers (one task or several); reuse by run key works across engines."""

from __future__ import annotations

import numpy as np

from pipeline import engine
from pipeline.stage2.compare import load_predictions, run_compare


def _on_ray(params, folder, address, **compare):
    return params.updated(compare={"runs": str(folder / "runs"), "metrics": str(folder / "compare.json"),
                                   "table": str(folder / "compare.md"), **compare},
                          run={"engine": "ray", "address": address, "max_retries": 1})


def test_ray_runs_give_the_local_engines_numbers(compared, ray_cluster, tmp_path):
    local, expected = compared
    params = _on_ray(local, tmp_path, ray_cluster.address)
    try:
        result = run_compare(params)
    finally:
        engine.shutdown()
    assert result["timing"]["trained"] == len(expected["runs"]) and result["timing"]["reused"] == 0
    runs = {(r["head"], r["seed"]): r for r in result["runs"]}
    for ref in expected["runs"]:
        got = runs[ref["head"], ref["seed"]]
        for split in ("validation", "test"):
            assert got[split] == ref[split], (ref["head"], ref["seed"], split)
            assert got["availability"][split] == ref["availability"][split]
        ours = load_predictions(params.path(params.compare.runs) / ref["folder"])
        theirs = load_predictions(local.path(local.compare.runs) / ref["folder"])
        assert ours.keys() == theirs.keys()
        for k in ours:
            for name in ours[k]:
                assert ours[k][name].keys() == theirs[k][name].keys() == {"va"}
                for task in ours[k][name]:
                    np.testing.assert_array_equal(ours[k][name][task], theirs[k][name][task],
                                                  err_msg=f"{ref['folder']} {k} {name} {task}")
    assert result["results"].keys() == expected["results"].keys()
    for head, res in result["results"].items():   # the aggregates too (not the timings)
        for key in ("validation", "test", "availability", "vs_reference"):
            assert res.get(key) == expected["results"][head].get(key), (head, key)


def test_a_multi_task_run_on_ray_gives_the_local_engines_numbers(ray_cluster, tmp_path_factory, tmp_path):
    """va + expr + au on the synthetic caches (tests/stage2/multitask.py): the Ray task loads its
    splits itself (the entry left out of training included) and gets the local run's numbers."""
    from .multitask import compared_tasks

    local, expected = compared_tasks(tmp_path_factory)
    params = _on_ray(local, tmp_path, ray_cluster.address, heads=["concat"], seeds=[0], reference="concat")
    try:
        result = run_compare(params)
    finally:
        engine.shutdown()
    (got,) = result["runs"]
    ref = next(r for r in expected["runs"] if (r["head"], r["seed"]) == ("concat", 0))
    assert result["timing"]["trained"] == 1 and got["left_out"] == ref["left_out"] != []
    for key in ("validation", "test", "availability", "epochs", "best_epoch", "stopped"):
        assert got[key] == ref[key], key
    ours = load_predictions(tmp_path / "runs" / ref["folder"])
    theirs = load_predictions(local.path(local.compare.runs) / ref["folder"])
    assert ours.keys() == theirs.keys()
    for k in ours:
        for name in ours[k]:
            assert ours[k][name].keys() == theirs[k][name].keys() == {"va", "expr", "au"}
            for task in ours[k][name]:
                np.testing.assert_array_equal(ours[k][name][task], theirs[k][name][task], err_msg=f"{k} {name} {task}")


def test_runs_made_on_ray_are_reused_locally(compared, ray_cluster, tmp_path):
    local, _ = compared
    params = _on_ray(local, tmp_path, ray_cluster.address, heads=["only:audio"], seeds=[0], reference="only:audio")
    try:
        first = run_compare(params)
    finally:
        engine.shutdown()
    assert first["timing"]["trained"] == 1
    assert (tmp_path / "runs" / first["runs"][0]["folder"] / "run.json").is_file()
    again = run_compare(params.updated(run={"engine": "local", "address": None, "max_retries": 3}))
    assert again["timing"]["reused"] == 1 and again["timing"]["trained"] == 0


def test_the_cli_engine_option_runs_on_a_local_ray_instance_with_the_same_numbers(compared, tmp_path):
    """`jmt compare --engine ray` (what `make demo` runs): Ray started on this machine."""
    from typer.testing import CliRunner

    from pipeline.cli import app

    from ..stage1.helpers import write_params

    local, expected = compared
    params_file = write_params(
        tmp_path, local.path(local.corpus.root), embed={"out": str(local.path(local.embed.out))},
        model=local.model.model_dump(), train=local.train.model_dump() | {"out": str(tmp_path / "m.pt"),
                                                                           "live_dir": str(tmp_path / "live")},
        labels={"out": str(local.path(local.labels.out))},
        compare={"heads": ["concat"], "seeds": [1], "reference": "concat", "runs": str(tmp_path / "runs"),
                 "metrics": str(tmp_path / "compare.json"), "table": str(tmp_path / "compare.md"),
                 "bootstrap": 200, "latency_repeats": 1},
        run={"cpus": 2})
    try:
        out = CliRunner().invoke(app, ["compare", "--engine", "ray", "--params", str(params_file)])
    finally:
        engine.shutdown()
    assert out.exit_code == 0, out.output
    import json

    got = json.loads((tmp_path / "compare.json").read_text())["runs"]
    ref = next(r for r in expected["runs"] if (r["head"], r["seed"]) == ("concat", 1))
    assert got[0]["validation"] == ref["validation"] and got[0]["test"] == ref["test"]
