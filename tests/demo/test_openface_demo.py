"""scripts/make_openface_demo.py: OpenFace-layout CSVs made from the demo's AU labels plus noise,
read by a files stream with the openface preset end to end (`jmt embed`): the frames where the
demo hides the face are masked exactly (a 0-based reading of OpenFace's 1-based frames would
shift the mask by one), and the AU presences agree with the labels cache."""

import json
import subprocess
import sys

import h5py
import numpy as np

from pipeline import cache
from pipeline.stage1.embed import run_embed

from ..conftest import REPO
from ..stage1.helpers import params_at
from ..stage1.test_embed import FRAMES, _shared

SCRIPT = REPO / "scripts" / "make_openface_demo.py"
DEMO_AUS = ["1", "2", "4", "6", "7", "10", "12", "15", "23", "24", "25", "26"]   # the labels cache's order


def test_openface_csvs_of_the_demo_run_end_to_end(tiny_cache, tmp_path):
    params, _ = tiny_cache
    corpus = params.path(params.corpus.root)
    out = tmp_path / "openface"
    subprocess.run([sys.executable, str(SCRIPT), "--corpus", str(corpus), "--out", str(out)], check=True)
    assert sorted(p.stem for p in out.glob("*.csv")) == sorted(FRAMES)
    assert "SYNTHETIC" in (out / "README.txt").read_text()
    header = (out / "demo_01.csv").read_text().splitlines()[0]
    assert header.startswith("frame, face_id, timestamp, confidence, success, gaze_0_x")   # the spaced form
    run = params_at(tmp_path, corpus, **_shared(params), embed={"streams": {
        "openface": {"name": "files", "files": {"path": "openface/{entry}.csv", "preset": "openface"}}}})
    result = run_embed(run)
    assert sorted(result.done) == sorted(FRAMES) and result.skipped == []
    meta = json.loads((corpus / "corpus.json").read_text())
    hidden = {}
    for video in meta["videos"]:
        for person in video["persons"]:
            mask = np.zeros(video["n_frames"], bool)
            for start, stop in person["face_hidden"]:
                mask[start:stop] = True
            hidden[person["labels"]["va"]["annotation"].rsplit("/", 1)[1][:-4]] = mask
    agree, masked = [], 0
    for name in FRAMES:
        with h5py.File(cache.entry_path(run.path(run.embed.out), name)) as f, \
                h5py.File(cache.entry_path(params.path(params.labels.out), name)) as lab:
            stream = cache.attrs_of(f)["streams"][0]
            assert stream["files"]["rows"] == FRAMES[name] and len(stream["files"]["columns"]) == 40
            mask = f[cache.stream_key("openface", "mask")][...]
            np.testing.assert_array_equal(mask, ~hidden[name])
            masked += int((~mask).sum())
            feats = f[cache.stream_key("openface", "features")][...].astype(np.float32)
            assert not feats[~mask].any()
            if "labels/au" in lab:
                au = lab["labels/au"][...]
                for a in ("1", "12", "25"):
                    got = feats[:, stream["files"]["columns"].index(f"AU{int(a):02d}_c")]
                    ok = mask & (au >= 0).all(1)
                    agree.append(np.mean(got[ok] == au[ok, DEMO_AUS.index(a)]))
    assert masked > 0 and agree                  # the tiny corpus hides a face, and has AU labels
    assert 0.85 < np.mean(agree) < 0.95          # the script flips 10 % of the presences
