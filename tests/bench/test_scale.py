"""bench/scale.py and bench/scale_gpu.py: the Aff-Wild2-sized plan, the writer (the layouts
`jmt embed` and `jmt labels` write, checked against real entries of the tiny demo), and the GPU
script's logic on the CPU, with and without pydantic."""

import importlib.util
import json
import os
import subprocess
import sys

import h5py
import numpy as np

from pipeline import cache
from pipeline.cache_tools import verify
from pipeline.config import load_params
from pipeline.stage1.labels import run_labels
from pipeline.stage2.data import load_entries, split_entries

from ..conftest import REPO

_spec = importlib.util.spec_from_file_location("scale", REPO / "bench/scale.py")
scale = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scale)

WIDTHS = {"visual": 12, "audio": 8}


def test_the_plan_is_aff_wild2_sized():
    specs = scale.plan(1.0, seed=0)
    frames = np.array([s["frames"] for s in specs])
    videos = {s["video"] for s in specs}
    assert len(videos) == 564 and 580 <= len(specs) <= 600       # two-person videos give two entries
    assert abs(frames.sum() - 2.8e6) / 2.8e6 < 0.02
    assert frames.min() >= 20 * 30 and frames.max() <= 15 * 60 * 30
    assert (frames > 10 * 60 * 30).sum() >= 5 and (frames < 60 * 30).sum() >= 10
    assert {s["split"] for s in specs} == {"train", "validation", "test"}
    small = scale.plan(0.05, seed=0)
    assert abs(sum(s["frames"] for s in small) - 140_000) / 140_000 < 0.05 and 25 <= len(small) <= 35


def test_mask_runs_have_the_planned_rates():
    rng = np.random.default_rng(0)
    for (on, off), rate in ((scale.FACE_RUNS, 0.93), (scale.VOICE_RUNS, 0.57), (scale.LABEL_RUNS, 0.97)):
        assert abs(scale.runs(3_000_000, rng, on, off).mean() - rate) < 0.02


def _layout(f: h5py.File) -> dict:
    """dataset -> (dtype, contiguous, compression) of every dataset in a file."""
    out = {}
    f.visititems(lambda k, ds: out.__setitem__(k, (ds.dtype, ds.chunks is None, ds.compression))
                 if isinstance(ds, h5py.Dataset) else None)
    return out


def test_written_entries_have_the_embed_and_labels_layouts(tiny_cache, tmp_path):
    params, _ = tiny_cache
    real_labels = tmp_path / "real_labels"   # the tiny demo's labels, as `jmt labels` writes them
    run_labels(params.updated(labels={"out": str(real_labels)}))
    emb, lab = scale.caches(tmp_path)
    specs = [{"name": "x", "video": "x", "split": "validation", "side": None, "frames": 700, "seed": 1},
             {"name": "y", "video": "y", "split": "test", "side": "left", "frames": 650, "seed": 2}]
    for spec in specs:
        assert scale.write_entry(emb, spec, WIDTHS, labels=lab) == cache.entry_path(emb, spec["name"]).stat().st_size
    real = {"embed": cache.entry_path(params.path(params.embed.out), "demo_01"),
            "labels": cache.entry_path(real_labels, "demo_01")}
    for stage, folder in (("embed", emb), ("labels", lab)):
        with h5py.File(cache.entry_path(folder, "x")) as mine, h5py.File(real[stage]) as theirs:
            theirs_layout = _layout(theirs)
            if stage == "labels":  # the bench writes va's labels; the demo has every task's
                theirs_layout = {k: v for k, v in theirs_layout.items() if k == cache.label_key("va")}
            assert _layout(mine) == theirs_layout, stage
            assert set(theirs.attrs) <= set(mine.attrs), stage
            a, b = cache.attrs_of(mine), cache.attrs_of(theirs)
            assert a["schema"] == b["schema"] == cache.schema(stage)
            if stage == "embed":
                assert [s["name"] for s in a["streams"]] == [s["name"] for s in b["streams"]] == list(WIDTHS)
                assert [set(s) for s in a["streams"]] == [set(s) for s in b["streams"]]
            else:
                va = next(t for t in b["tasks"] if t["task"] == "va")
                assert [t["task"] for t in a["tasks"]] == ["va"] and [set(t) for t in a["tasks"]] == [set(va)]
    with h5py.File(cache.entry_path(lab, "x")) as f:
        valid = (f[cache.label_key("va")][...] != -5).all(1)
        assert 0.9 < valid.mean() < 1 or valid.all()
    assert verify(emb) == [] and verify(lab) == []
    entries = {e.name: e for e in load_entries(emb, lab, ["va"], preload_max_mb=0)}
    x, y = entries["x"], entries["y"]
    assert x.n == 700 and x.streams == list(WIDTHS) and x.widths == WIDTHS
    assert x.splits == {"va": "validation"} and y.splits == {"va": "test"}
    assert x.read(0, 700)["valid/va"].any() and not y.read(0, 650)["valid/va"].any()   # test labels hidden
    splits = split_entries(list(entries.values()), ["va"])
    assert splits.validation["va"] == [x] and splits.test["va"] == [y] and splits.train == []


def test_a_cache_of_another_layout_is_rewritten(tmp_path):
    emb, lab = scale.caches(tmp_path)
    first = scale.ensure_cache(tmp_path, 0.0005, 0, WIDTHS, 1)
    assert first["entries"] == 3 and len(cache.entries(lab)) == 3 and "reused" not in first
    assert scale.ensure_cache(tmp_path, 0.0005, 0, WIDTHS, 1)["reused"]
    marker = json.loads((emb / "bench.json").read_text())
    marker["spec"]["schemas"] = ["jmt.embed/1"]          # as an older bench recorded it
    (emb / "bench.json").write_text(json.dumps(marker))
    assert "reused" not in scale.ensure_cache(tmp_path, 0.0005, 0, WIDTHS, 1)


def test_bench_params_point_every_stage_at_the_work_folder(tmp_path):
    params = load_params(scale.bench_params(tmp_path))
    emb, lab = scale.caches(tmp_path)
    assert (params.path(params.embed.out), params.path(params.labels.out)) == (emb, lab)
    assert params.path(params.corpus.root) == tmp_path / "no-corpus" and params.train.epochs == 1
    for key in (params.train.out, params.evaluate.metrics, params.compare.runs, params.compare.table):
        assert params.path(key).is_relative_to(tmp_path)
    assert params.embed.streams == load_params(REPO / "params.yaml").embed.streams


def test_a_step_is_measured_in_its_own_process(tmp_path):
    res = tmp_path / "child.json"
    code = (f"import json, time; block = b'x' * 80_000_000; open({str(res)!r}, 'w').write(json.dumps({{'found': 1}}));"
            " time.sleep(0.5)")
    out = scale.measure([sys.executable, "-c", code], res)
    assert out["exit"] == 0 and out["found"] == 1 and out["peak_rss_mb"] >= 80 and "output" not in out
    failed = scale.measure([sys.executable, "-c", "import sys; print('no cache here', file=sys.stderr); sys.exit(3)"])
    assert failed["exit"] == 3 and "no cache here" in failed["output"]


def _gpu_script(tmp_path, *prelude: str) -> dict:
    """bench/scale_gpu.py on the CPU at a tiny size, after `prelude` (Python lines) ran."""
    out = tmp_path / "gpu.json"
    argv = ["--device", "cpu", "--scale", "0.001", "--visual-dim", "16", "--audio-dim", "8", "--batch-sizes", "4,8",
            "--epochs", "2", "--max-steps", "3", "--work", str(tmp_path), "--out", str(out)]
    code = "\n".join([*prelude, "import runpy, sys", f"sys.argv = ['scale_gpu.py', *{argv!r}]",
                      f"runpy.run_path({str(REPO / 'bench/scale_gpu.py')!r}, run_name='__main__')"])
    # one torch thread: on a busy shared machine more threads than free cores make it minutes, not seconds
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, capture_output=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads(out.read_text())


def test_gpu_script_runs_on_the_cpu(tmp_path):
    result = _gpu_script(tmp_path)
    assert [(r["batch_size"], r["epoch"], r["cold"]) for r in result["runs"]] == \
        [(4, 0, True), (4, 1, False), (8, 0, True), (8, 1, False)]
    assert all(r["steps"] == 3 and r["frames"] == 3 * r["batch_size"] * 64 for r in result["runs"])
    assert all(0 <= r["load_share"] < 1 for r in result["runs"]) and result["validation"]["frames"] > 0
    assert -1 <= result["validation"]["ccc_mean"] <= 1 and "note" not in result
    assert result["cache"]["entries"] == 3 and "gpu_max_allocated_mb" not in result["runs"][0]


def test_gpu_script_needs_no_pydantic(tmp_path):
    hide = ["import sys", "class _NoPydantic:",
            "    def find_spec(self, name, path=None, target=None):",
            "        if name == 'pydantic' or name.startswith('pydantic.'):",
            "            raise ImportError('pydantic hidden')",
            "sys.meta_path.insert(0, _NoPydantic())"]
    result = _gpu_script(tmp_path, *hide)  # pipeline/tasks' options are dataclasses: nothing stands in
    assert "note" not in result
    assert len(result["runs"]) == 4 and -1 <= result["validation"]["ccc_mean"] <= 1
