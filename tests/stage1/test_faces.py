"""`jmt faces` on real videos (the tiny demo corpus): detection, tracking, crops, resume."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import torch

from pipeline import cache
from pipeline.stage1.align import TEMPLATE_112
from pipeline.stage1.detect import Face
from pipeline.stage1.faces import align_faces, jpeg_roundtrip, run_faces

from .helpers import assert_same, contents, params_at, write_params


def manifest(corpus):
    return json.loads((corpus / "corpus.json").read_text())


def hidden_mask(person, n):
    mask = np.zeros(n, bool)
    for a, b in person["face_hidden"]:
        mask[a:b] = True
    return mask


def test_faces_found_where_visible_and_not_behind_occluders(tiny_cache, tiny_corpus):
    params, results = tiny_cache
    assert results["faces"].skipped == [] and len(results["faces"].done) == 4
    folder = params.path(params.faces.out)
    for v in manifest(tiny_corpus)["videos"]:
        for p in v["persons"]:
            name = v["name"] if p["side"] is None else f"{v['name']}_{p['side']}"
            with h5py.File(cache.entry_path(folder, name)) as f:
                found = f["found"][...]
                hidden = hidden_mask(p, v["n_frames"])
                assert found[~hidden].mean() >= 0.95
                if v["face_hidden_mode"] == "occluder" and hidden.any():
                    assert found[hidden].mean() <= 0.1
                assert f.attrs["schema"] == "jmt.faces/2" and "labels" not in f   # labels: `jmt labels`
                assert "split" not in f.attrs and "annotation" not in f.attrs
                assert json.loads(f.attrs["config"])["algorithm"] == 3
                np.testing.assert_allclose(f["timestamps"][...], np.arange(v["n_frames"]) / v["fps"], atol=1e-4)
                assert f.attrs["video"] == v["video"] and f.attrs["side"] == (p["side"] or "null")
                crops = cache.read_crops(f)
                assert crops.shape == (v["n_frames"], 112, 112, 3)
                assert crops[found].mean() > 40 and not crops[~found].any()
                boxes = f["boxes"][...][found]
                centre_x = (boxes[:, 0] + boxes[:, 2]) / 2
                if p["side"] == "left":
                    assert (centre_x < v["width"] / 2).all()
                elif p["side"] == "right":
                    assert (centre_x >= v["width"] / 2).all()
                assert f["detected"][...].sum() < len(found)  # keyframes: not every frame ran MTCNN


def _stamps(folder):
    """entry -> (mtime_ns, inode, config_hash) of a stage folder's files."""
    out = {}
    for path in sorted(folder.glob("*.h5")):
        with h5py.File(path) as f:
            out[path.stem] = (path.stat().st_mtime_ns, path.stat().st_ino, f.attrs["config_hash"])
    return out


def test_rerun_reuses_and_param_change_rebuilds(tiny_cache, tmp_path):
    params, _ = tiny_cache
    shared = params.path(params.faces.out)
    before = _stamps(shared)
    again = run_faces(params)
    assert again.done == {} and len(again.cached) == 4
    assert _stamps(shared) == before                          # reused: not one file rewritten
    # the param change rebuilds a copy: the session's cache stays what the other tests expect.
    # One video of the corpus (demo_02, 60 frames) is enough, and 4.6 times cheaper in MTCNN.
    corpus, copy = tmp_path / "corpus", tmp_path / "faces"
    shutil.copytree(params.path(params.corpus.root), corpus)
    for ann in corpus.glob("annotations/*/*/*.txt"):
        if ann.stem != "demo_02":
            ann.unlink()
    copy.mkdir()
    shutil.copy2(cache.entry_path(shared, "demo_02"), copy)
    copied = _stamps(copy)
    same = run_faces(params_at(tmp_path / "same", corpus, faces={"out": str(copy)}))
    assert same.cached == ["demo_02"] and _stamps(copy) == copied   # the copy alone changes nothing
    changed = params_at(tmp_path / "changed", corpus, faces={"out": str(copy), "min_prob": 0.95})
    rebuilt = run_faces(changed)
    assert list(rebuilt.done) == ["demo_02"] and rebuilt.cached == []
    after = _stamps(copy)["demo_02"]
    assert after[:2] != copied["demo_02"][:2], "demo_02 was not rewritten"
    assert after[2] != copied["demo_02"][2], "demo_02 kept the old config hash"
    with h5py.File(cache.entry_path(copy, "demo_02")) as f:
        assert json.loads(f.attrs["config"])["min_prob"] == 0.95
    assert _stamps(shared) == before


@pytest.mark.slow
def test_sigkill_then_rerun_equals_an_uninterrupted_run(tiny_corpus, tmp_path):
    """Kill `jmt faces` with SIGKILL mid-run; the re-run resumes and the cache is identical."""
    clean = write_params(tmp_path / "clean", tiny_corpus, faces={"batch_size": 8})
    killed = write_params(tmp_path / "killed", tiny_corpus, faces={"batch_size": 8})
    jmt = [sys.executable, "-m", "pipeline", "faces", "--params"]
    subprocess.run(jmt + [str(clean)], check=True, capture_output=True)

    folder = tmp_path / "killed/cache/faces"
    proc = subprocess.Popen(jmt + [str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    def committed_files():
        return sorted(p.name for p in folder.glob("*.h5") if not p.name.startswith(".tmp-"))

    while time.time() < deadline and not committed_files():
        time.sleep(0.02)  # wait until the first entry is committed
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    committed = committed_files()
    assert 1 <= len(committed) < 4, "the kill should land mid-run"
    for name in committed:  # what was committed is whole
        h5py.File(folder / name).close()

    resumed = subprocess.run(jmt + [str(killed)], check=True, capture_output=True, text=True)
    assert f"{len(committed)} already cached" in resumed.stderr.replace("\n", " ")
    assert not list(folder.glob(".tmp-*"))
    assert_same(contents(tmp_path / "clean/cache/faces"), contents(folder))


def test_cropped_aligned_source(tiny_cache, tmp_path):
    """Aff-Wild2's own crops: gaps are 'not found', an unreadable jpg is skipped and reported."""
    params, _ = tiny_cache
    crops_dir = tmp_path / "cropped_aligned/demo_02"
    crops_dir.mkdir(parents=True)
    with h5py.File(cache.entry_path(params.path(params.faces.out), "demo_02")) as f:
        crops, found = cache.read_crops(f), f["found"][...]
    from PIL import Image
    for i in np.flatnonzero(found):
        Image.fromarray(crops[i]).save(crops_dir / f"{i + 1:05d}.jpg")
    first = int(np.flatnonzero(found)[0])
    (crops_dir / f"{first + 1:05d}.jpg").write_bytes(b"not a jpeg")
    other = params_at(tmp_path / "w", params.path(params.corpus.root),
                      faces={"source": "cropped_aligned", "cropped_aligned": str(tmp_path / "cropped_aligned")})
    result = run_faces(other)
    assert "demo_02" in result.done
    assert any("unreadable crop" in w["warning"] and f"{first + 1:05d}.jpg" in w["warning"] for w in result.warnings)
    skipped = {s["entry"] for s in result.skipped}
    assert {"demo_00_left", "demo_00_right", "demo_01"} <= set(result.done) | skipped
    with h5py.File(cache.entry_path(other.path(other.faces.out), "demo_02")) as f:
        got = f["found"][...]
    expected = found.copy()
    expected[first] = False
    np.testing.assert_array_equal(got, expected)


def test_a_crop_is_cut_and_read_back_as_embed_reads_it(tmp_path):
    """align_faces: black and not found without a face or a transform; jpeg_roundtrip: the crops
    a faces file gives back to cache.read_crops."""
    rng = np.random.default_rng(0)
    frames = torch.as_tensor(rng.integers(0, 256, (3, 120, 160, 3), dtype=np.uint8))
    face = Face(np.array([40, 20, 120, 110.0]), TEMPLATE_112 * 0.8 + 30, 0.99, True)
    flat = Face(face.box, np.full((5, 2), 50.0), 0.99, True)     # every landmark on one spot
    crops, found = align_faces(frames, [face, None, flat], 112)
    assert found.tolist() == [True, False, False] and crops.shape == (3, 112, 112, 3)
    assert crops[0].std() > 20 and not crops[1:].any()
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f.attrs["crop_size"] = 112
        cache.Appender(f, cache.LAYOUTS["faces"], ["crops_jpeg"]).append(crops_jpeg=cache.encode_jpeg(crops, found, 92))
        np.testing.assert_array_equal(jpeg_roundtrip(crops, found, 92), cache.read_crops(f))
