"""`jmt compare` on a real two-node Ray cluster: each (head, seed) run a task; on CPU the same
seed gives the local engine's numbers; reuse by run key works across engines."""

from __future__ import annotations

import numpy as np

from pipeline import engine
from pipeline.config import RunParams
from pipeline.stage2.compare import load_predictions, run_compare


def _on_ray(params, folder, address):
    compare = params.compare.model_copy(update={"runs": str(folder / "runs"),
                                                "metrics": str(folder / "compare.json"),
                                                "table": str(folder / "compare.md")})
    out = params.model_copy(update={"compare": compare,
                                    "run": RunParams(engine="ray", address=address, max_retries=1)})
    out._root = params.root
    return out


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
        ours = load_predictions(params.path(params.compare.runs) / ref["folder"])
        theirs = load_predictions(local.path(local.compare.runs) / ref["folder"])
        assert ours.keys() == theirs.keys()
        for k in ours:
            for name in ours[k]:
                np.testing.assert_array_equal(ours[k][name], theirs[k][name], err_msg=f"{ref['folder']} {k} {name}")


def test_runs_made_on_ray_are_reused_locally(compared, ray_cluster, tmp_path):
    local, _ = compared
    one = local.compare.model_copy(update={"heads": ["concat"], "seeds": [0], "reference": "concat"})
    params = _on_ray(local.model_copy(update={"compare": one}), tmp_path, ray_cluster.address)
    params._root = local.root
    try:
        first = run_compare(params)
    finally:
        engine.shutdown()
    assert first["timing"]["trained"] == 1
    back = params.model_copy(update={"run": RunParams()})
    back._root = local.root
    again = run_compare(back)
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
