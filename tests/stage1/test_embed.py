import json

import h5py
import numpy as np

from pipeline import cache
from pipeline.stage1.embed import audio_windows, run_embed

from .helpers import params_at


def test_audio_windows_pad_with_silence():
    logmel = np.arange(12, dtype=np.float32).reshape(6, 2)
    win = audio_windows(logmel, np.array([0, 2, 6]), width=3, floor=1e-6)
    floor = np.float32(np.log(1e-6))
    assert win.shape == (3, 3, 2)
    assert (win[0] == floor).all()
    np.testing.assert_allclose(win[1], [[floor, floor], [0, 1], [2, 3]], rtol=1e-6)
    np.testing.assert_array_equal(win[2], logmel[3:6])


def test_embeddings_cache(tiny_cache):
    params, results = tiny_cache
    assert results["embed"].skipped == [] and len(results["embed"].done) == 4
    folder = params.path(params.embed.out)
    for name in results["embed"].done:
        with h5py.File(cache.entry_path(folder, name)) as f, \
                h5py.File(cache.entry_path(params.path(params.faces.out), name)) as faces:
            n = f.attrs["n_frames"]
            assert f["visual"].shape == (n, 135) and f["visual"].dtype == np.float16
            assert f["audio"].shape == (n, 3 * params.audio.n_mels + 3)
            np.testing.assert_array_equal(f["visual_mask"][...], faces["found"][...])
            np.testing.assert_array_equal(f["labels"][...], faces["labels"][...])
            assert f.attrs["visual_backbone"] == "fer_xception" and len(f.attrs["visual_weights_sha256"]) == 64
            assert f.attrs["faces_config_hash"] == faces.attrs["config_hash"]
            vis = f["visual"][...].astype(np.float32)
            found = f["visual_mask"][...]
            # a face and no face give different embeddings; different faces vary too
            assert np.abs(vis[found].mean(0) - vis[~found].mean(0)).max() > 0.1 if (~found).any() else True
            assert vis[found].std(0).max() > 0.01


def test_backbone_change_rebuilds_only_embeddings(tiny_cache, tmp_path):
    params, _ = tiny_cache
    root = params.path(params.corpus.root)
    outs = {k: str(params.path(getattr(params, k).out)) for k in ("faces", "audio")}
    other = params_at(tmp_path, root, faces={"out": outs["faces"]}, audio={"out": outs["audio"]},
                      embed={"audio.name": "vggish", "audio.allow_random": True})
    result = run_embed(other)
    assert len(result.done) == 4 and any("RANDOM" in w["warning"] for w in result.warnings)
    report = json.loads((other.path(other.embed.out) / "report.json").read_text())
    assert sorted(report["done"]) == sorted(result.done) and report["skipped"] == []
    assert [w["entry"] for w in report["warnings"] if "RANDOM" in w["warning"]] == ["*"]  # stage-wide
    with h5py.File(cache.entry_path(other.path(other.embed.out), "demo_01")) as f:
        assert f["audio"].shape[1] == 128 and f.attrs["audio_weights"] == "RANDOM"
    # faces and audio caches were only read
    from pipeline.stage1.audio import run_audio
    from pipeline.stage1.faces import run_faces
    assert run_faces(other).done == {} and run_audio(other).done == {}


def test_missing_input_entry_is_skipped_with_a_reason(tiny_cache, tmp_path):
    params, _ = tiny_cache
    root = params.path(params.corpus.root)
    other = params_at(tmp_path, root, faces={"out": str(tmp_path / "nofaces")},
                      audio={"out": str(params.path(params.audio.out))})
    result = run_embed(other)
    assert result.done == {}
    assert all("missing; run `jmt faces` first" in s["error"] for s in result.skipped)
    report = json.loads((other.path(other.embed.out) / "report.json").read_text())
    assert report["done"] == {} and report["cached"] == []
    assert sorted(s["entry"] for s in report["skipped"]) == ["demo_00_left", "demo_00_right", "demo_01", "demo_02"]
    assert all(str(tmp_path / "nofaces") in s["error"] for s in report["skipped"])
