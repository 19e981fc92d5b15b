"""bench/scale.py and bench/scale_gpu.py: the Aff-Wild2-sized plan, the writer (the layout
`jmt embed` writes, checked against a real embed entry), and the GPU script's logic on the CPU."""

import importlib.util
import json
import subprocess
import sys

import h5py
import numpy as np

from pipeline import cache
from pipeline.cache_tools import verify
from pipeline.stage2.data import load_split

from ..conftest import REPO

_spec = importlib.util.spec_from_file_location("scale", REPO / "bench/scale.py")
scale = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scale)


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


def test_written_entries_have_the_embed_layout(tiny_cache, tmp_path):
    params, _ = tiny_cache
    spec = {"name": "x", "video": "x", "split": "validation", "side": None, "frames": 700, "seed": 1}
    path = tmp_path / "x.h5"
    assert scale.write_entry(tmp_path, spec, 12, 8) == path.stat().st_size
    real = cache.entry_path(params.path(params.embed.out), "demo_01")
    with h5py.File(path) as mine, h5py.File(real) as theirs:
        assert set(mine) == set(theirs)
        for k in theirs:
            assert (mine[k].dtype, mine[k].chunks is None, mine[k].compression) == \
                (theirs[k].dtype, theirs[k].chunks is None, theirs[k].compression), k
        assert set(theirs.attrs) <= set(mine.attrs)
        labels = mine["labels"][...]
        assert 0.9 < (labels[:, 0] != -5).mean() < 1 or (labels[:, 0] != -5).all()
    assert verify(tmp_path) == []
    entry = load_split(tmp_path, "validation", preload_max_mb=0)[0]
    assert entry.n == 700 and entry.widths == {"audio": 8, "visual": 12}


def test_gpu_script_runs_on_the_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    subprocess.run([sys.executable, str(REPO / "bench/scale_gpu.py"), "--device", "cpu", "--scale", "0.001",
                    "--visual-dim", "16", "--audio-dim", "8", "--batch-sizes", "4,8", "--epochs", "2",
                    "--max-steps", "3", "--work", str(tmp_path), "--out", str(out)], check=True, cwd=tmp_path,
                   capture_output=True)
    result = json.loads(out.read_text())
    assert [(r["batch_size"], r["epoch"], r["cold"]) for r in result["runs"]] == \
        [(4, 0, True), (4, 1, False), (8, 0, True), (8, 1, False)]
    assert all(r["steps"] == 3 and r["frames"] == 3 * r["batch_size"] * 64 for r in result["runs"])
    assert all(0 <= r["load_share"] < 1 for r in result["runs"]) and result["validation"]["frames"] > 0
    assert result["cache"]["entries"] == 3 and "gpu_max_allocated_mb" not in result["runs"][0]
