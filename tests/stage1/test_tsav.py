"""The JMT authors' feature extractors (r2plus1d_18 on face clips, resnet18_logmel on log-mel):
the clip rule, their constants, every published checkpoint layout, offline."""

import subprocess
import sys
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torchaudio
import torchvision

from pipeline import cache
from pipeline.config import BackboneParams
from pipeline.errors import JmtError
from pipeline.stage1.backbones import build_backbone, input_of
from pipeline.stage1.backbones import tsav
from pipeline.stage1.clips import clip_indices, read_clips

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "make_tsav_checkpoints.py"


# ---- the clip rule ------------------------------------------------------------------------

def test_a_full_window_gives_8_of_the_last_32():
    found = np.ones(100, bool)
    idx = clip_indices(found, 8, 4)
    assert idx.shape == (100, 8)
    np.testing.assert_array_equal(idx[50], [22, 26, 30, 34, 38, 42, 46, 50])   # ends at t, oldest first
    np.testing.assert_array_equal(idx[99], np.arange(71, 100, 4))


def test_the_start_of_a_video_steps_less_then_repeats_the_latest_face():
    idx = clip_indices(np.ones(40, bool), 8, 4)
    np.testing.assert_array_equal(idx[0], [0] * 8)                       # one face: repeated
    np.testing.assert_array_equal(idx[5], [0, 1, 2, 3, 4, 5, 5, 5])      # 6 faces, then the last again
    np.testing.assert_array_equal(idx[7], np.arange(8))                  # 8 faces: all of them
    np.testing.assert_array_equal(idx[15], np.arange(1, 16, 2))          # 16 faces: every 2nd
    np.testing.assert_array_equal(idx[23], np.arange(2, 24, 3))          # 24 faces: every 3rd
    np.testing.assert_array_equal(idx[31], np.arange(3, 32, 4))          # the first full window


def test_steps_follow_the_number_of_faces_in_the_window():
    # the authors' cases: 8-15 faces in the window -> the last 8; 16-23 -> every 2nd;
    # 24-31 -> every 3rd; 32 -> every 4th, always counted back from the most recent face
    for m, step in [(8, 1), (15, 1), (16, 2), (23, 2), (24, 3), (31, 3), (32, 4)]:
        found = np.zeros(64, bool)
        found[63 - m + 1:] = True                                         # the last m frames have faces
        got = clip_indices(found, 8, 4)[63]
        np.testing.assert_array_equal(got, 63 - step * np.arange(8)[::-1], err_msg=f"{m} faces")


def test_a_face_gap_is_skipped_and_nothing_outside_the_window_is_used():
    found = np.ones(80, bool)
    found[40:60] = False                                                 # 20 frames without a face
    idx = clip_indices(found, 8, 4)
    # t = 45: window 14..45 holds faces 14..39 (26): step 3 back from 39
    np.testing.assert_array_equal(idx[45], [18, 21, 24, 27, 30, 33, 36, 39])
    # t = 62: window 31..62 holds 31..39 and 60..62 (12 faces): the last 8 of them
    np.testing.assert_array_equal(idx[62], [35, 36, 37, 38, 39, 60, 61, 62])
    # t = 70: window 39..70: faces 39 and 60..70 (12): the last 8
    np.testing.assert_array_equal(idx[70], np.arange(63, 71))
    assert not np.isin(idx, np.arange(40, 60)).any()                     # never a frame without a face
    span_ok = (idx <= np.arange(80)[:, None]) & (idx > np.arange(80)[:, None] - 32)
    assert span_ok.all()                                                 # always inside the window


def test_a_window_without_faces_is_all_empty_slots():
    found = np.zeros(50, bool)
    found[:5] = True
    idx = clip_indices(found, 8, 4)
    np.testing.assert_array_equal(idx[35], [4] * 8)                      # window 4..35: one face
    np.testing.assert_array_equal(idx[36], [-1] * 8)                     # window 5..36: no face at all
    assert (clip_indices(np.zeros(3, bool), 8, 4) == -1).all()


def test_the_end_of_a_video_and_a_range_give_the_same_clips():
    found = np.random.default_rng(0).random(90) > 0.3
    whole = clip_indices(found, 8, 4)
    np.testing.assert_array_equal(clip_indices(found, 8, 4, 60, 90), whole[60:])
    np.testing.assert_array_equal(clip_indices(found, 4, 2, 10, 20), clip_indices(found, 4, 2)[10:20])


def _faces_file(path: Path, found: np.ndarray, size: int = 16) -> None:
    """A faces-cache file whose crop t is a flat grey of value 8 t (t < 32; JPEG keeps a flat
    block to within a level or two), empty where no face was found."""
    crops = np.zeros((len(found), size, size, 3), np.uint8)
    crops[:] = (8 * np.arange(len(found)))[:, None, None, None].astype(np.uint8)
    with h5py.File(path, "w") as f:
        f.attrs["crop_size"] = size
        f.create_dataset("found", data=found)
        f.create_dataset("crops_jpeg", data=cache.encode_jpeg(crops, found, 95), dtype=cache.JPEG)


def test_clips_read_from_a_faces_cache_hold_exactly_the_frames_of_the_rule(tmp_path):
    found = np.ones(30, bool)
    found[12:18] = False
    _faces_file(tmp_path / "f.h5", found)
    with h5py.File(tmp_path / "f.h5") as f:
        clips = read_clips(f, 0, 30, 4, 2)                      # (30, 4, 16, 16, 3)
        part = read_clips(f, 20, 27, 4, 2)                      # a batch in the middle: the same clips
    assert clips.shape == (30, 4, 16, 16, 3) and clips.dtype == np.uint8
    frames = np.round(clips.reshape(30, 4, -1).mean(2) / 8).astype(int)   # crop value 8 t -> t
    np.testing.assert_array_equal(frames, clip_indices(found, 4, 2))
    np.testing.assert_array_equal(frames[0], [0, 0, 0, 0])                # start
    np.testing.assert_array_equal(frames[16], [9, 10, 11, 11])            # in the gap: 3 faces, last repeated
    np.testing.assert_array_equal(frames[19], [18, 19, 19, 19])           # after it: 2 faces in 12..19
    np.testing.assert_array_equal(frames[29], [23, 25, 27, 29])           # end: a full window, every 2nd
    np.testing.assert_array_equal(part, clips[20:27])


def test_an_empty_slot_is_a_black_crop(tmp_path):
    found = np.zeros(12, bool)
    found[:2] = True
    _faces_file(tmp_path / "f.h5", found)
    with h5py.File(tmp_path / "f.h5") as f:
        clips = read_clips(f, 0, 12, 2, 2)
    assert (clips[11] == 0).all() and clips[1, 1].mean() > 4       # slot 1 of frame 1: crop 1 (grey 8)


# ---- the authors' constants ---------------------------------------------------------------

def test_normalisation_and_spectrogram_settings_are_the_authors():
    assert tsav.CLIP_MEAN == (0.43216, 0.394666, 0.37645)
    assert tsav.CLIP_STD == (0.22803, 0.22145, 0.216989)
    assert (tsav.CLIP_SIZE, tsav.CLIP_FRAMES, tsav.CLIP_STRIDE) == (112, 8, 4)
    assert tsav.MEL == {"sample_rate": 44100, "n_fft": 1024, "win_length": 882, "hop_length": 441,
                        "n_mels": 64, "power": 2.0}
    assert (tsav.MEL_MEAN, tsav.MEL_STD, tsav.DB_TOP) == (-14.8, 19.895, 80.0)
    assert tsav.AUDIO_SAMPLES == 45599 and abs(tsav.AUDIO_SAMPLES / 44100 - 1.034) < 1e-3
    mel = tsav.ResNet18LogMel().mel
    assert (mel.n_fft, mel.win_length, mel.hop_length, mel.power, mel.sample_rate) == (1024, 882, 441, 2.0, 44100)
    assert mel.mel_scale.n_mels == 64 and mel.f_min == 0.0 and mel.f_max is None


def test_the_spectrogram_is_the_authors_per_window():
    # their dataset: MelSpectrogram of one (1, 45599) clip, AmplitudeToDB('power', 80), normalise
    g = torch.Generator().manual_seed(0)
    segments = torch.randn(2, 45599, generator=g) * torch.tensor([[0.5], [0.001]])   # loud, quiet
    ours = tsav.ResNet18LogMel().spectrogram(segments)
    assert ours.shape == (2, 1, 64, 104)
    for i in range(2):
        spec = torchaudio.transforms.MelSpectrogram(sample_rate=44100, win_length=882, hop_length=441, n_mels=64,
                                                    n_fft=1024, window_fn=torch.hann_window, power=2.0)(segments[i:i + 1])
        theirs = (torchaudio.transforms.AmplitudeToDB("power", 80)(spec) + 14.8) / 19.895
        torch.testing.assert_close(ours[i], theirs, rtol=1e-5, atol=1e-5)   # top_db per window, not per batch


def test_the_audio_window_is_the_1_034_s_ending_at_the_frame_zero_padded_in_front():
    net = tsav.ResNet18LogMel()
    wave = torch.randn(44100 * 2) * 0.1
    seen = []
    net.spectrogram = lambda seg: seen.append(seg.clone()) or torch.zeros(len(seg), 1, 64, 104)
    net(wave, torch.tensor([[0, 10000], [0, 60000]]))
    (seg,) = seen
    assert seg.shape == (2, 45599)
    assert (seg[0, :45599 - 10000] == 0).all() and torch.equal(seg[0, -10000:], wave[:10000])
    assert torch.equal(seg[1], wave[60000 - 45599:60000])


# ---- the architectures and the published layouts -------------------------------------------

def _random(name: str, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_backbone(BackboneParams(name=name, allow_random=True, **kw), Path("."))


@pytest.mark.parametrize("reduction", ["max", "avg", "flatten"])
def test_r2plus1d_builds_offline_and_gives_512(reduction):
    net = _random("r2plus1d_18", reduction=reduction, clip=8, clip_stride=4)
    assert input_of(net) == "clips" and net.dim == 512 and (net.clip, net.clip_stride) == (8, 4)
    clips = torch.randint(0, 256, (2, 8, 112, 112, 3), dtype=torch.uint8)
    with torch.no_grad():
        y = net(clips)
        fmap = net.features((clips.float().div(255).permute(0, 4, 1, 2, 3) - net.mean) / net.std)
    assert y.shape == (2, 512) and fmap.shape == (2, 512, 1, 7, 7)       # their spatial_fts
    expect = {"max": fmap.flatten(2).amax(2), "avg": fmap.flatten(2).mean(2)}.get(reduction)
    if expect is not None:
        torch.testing.assert_close(y, expect)
    else:
        assert net.projection.in_features == 25088


def test_r2plus1d_resizes_other_crop_sizes_and_random_weights_warn():
    with pytest.warns(UserWarning, match="RANDOM weights"):
        net = build_backbone(BackboneParams(name="r2plus1d_18", allow_random=True, clip=2, clip_stride=1), Path("."))
    with torch.no_grad():
        assert net(torch.zeros(1, 2, 64, 64, 3, dtype=torch.uint8)).shape == (1, 512)


def test_resnet18_logmel_builds_offline_and_gives_512():
    net = _random("resnet18_logmel")
    assert input_of(net) == "waveform" and net.sample_rate == 44100 and net.dim == 512
    assert net.net.conv1.in_channels == 1
    with torch.no_grad():
        y = net(torch.randn(44100) * 0.1, torch.tensor([[0, 30000], [0, 44100], [0, 2000]]))
    assert y.shape == (3, 512) and torch.isfinite(y).all()


@pytest.mark.parametrize("bad", [{}, {"pretrained": True, "allow_random": True}])
@pytest.mark.parametrize("name", ["r2plus1d_18", "resnet18_logmel"])
def test_exactly_one_weights_source(name, bad):
    with pytest.raises(JmtError, match="exactly one weights source"):
        build_backbone(BackboneParams(name=name, **bad), Path("."))


def test_options_belong_to_their_backbone():
    with pytest.raises(JmtError, match="resnet18_logmel does not take `clip`"):
        _random("resnet18_logmel", clip=8)
    with pytest.raises(JmtError, match="does not take `reduction`"):
        build_backbone(BackboneParams(name="logmel_stats", reduction="max"), Path("."))


def _layout(tmp_path: Path, layout: str) -> Path:
    out = tmp_path / layout
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--layout", layout, "--seed", "3"],
                   check=True, capture_output=True)
    return out


def test_the_script_writes_the_published_key_layouts(tmp_path):
    vision = torch.load(_layout(tmp_path, "jmt") / "vision_TSAV_Sub4_544k.pt", weights_only=True)
    audio = torch.load(tmp_path / "jmt" / "audio_TSAV_Sub4_544k.pt", weights_only=True)
    # their VideoModel(num_channels=4) and AudioModel, classifiers replaced by Dummy (no keys)
    assert vision["r2plus1d.stem.0.weight"].shape == (45, 4, 1, 7, 7)
    assert vision["r2plus1d.stem.3.weight"].shape == (64, 45, 3, 1, 1)
    assert vision["r2plus1d.layer4.1.conv2.0.3.weight"].shape == (512, 1152, 3, 1, 1)
    assert len(vision) == 222 and not any(".fc." in k for k in vision)
    assert audio["resnet.conv1.weight"].shape == (64, 1, 7, 7)
    assert audio["resnet.layer4.1.bn2.running_var"].shape == (512,)
    assert len(audio) == 120 and all(k.startswith("resnet.") for k in audio)
    whole = torch.load(_layout(tmp_path, "kuhnke") / "TSAV_Sub4_544k.pth.tar", weights_only=True)["state_dict"]
    assert whole["fc.1.weight"].shape == (17, 1024)
    assert whole["video_model.r2plus1d.stem.0.weight"].shape == (45, 4, 1, 7, 7)
    assert whole["audio_model.resnet.conv1.weight"].shape == (64, 1, 7, 7)


@pytest.mark.parametrize("layout", ["jmt", "kuhnke", "torchvision"])
def test_each_published_layout_loads_into_both_backbones(tmp_path, layout):
    folder = _layout(tmp_path, layout)
    vision_file, audio_file = (folder / n for n in {
        "jmt": ("vision_TSAV_Sub4_544k.pt", "audio_TSAV_Sub4_544k.pt"),
        "kuhnke": ("TSAV_Sub4_544k.pth.tar",) * 2, "torchvision": ("r2plus1d_18.pth", "resnet18.pth")}[layout])
    video = build_backbone(BackboneParams(name="r2plus1d_18", checkpoint=vision_file.name), folder)
    audio = build_backbone(BackboneParams(name="resnet18_logmel", checkpoint=audio_file.name), folder)
    state = torch.load(vision_file, weights_only=True)
    state = state.get("state_dict", state)
    prefix = {"jmt": "r2plus1d.", "kuhnke": "video_model.r2plus1d.", "torchvision": ""}[layout]
    stem = state[prefix + "stem.0.weight"]
    assert torch.equal(video.net.stem[0].weight, stem[:, :3])           # their main.py: keep RGB
    assert torch.equal(video.net.layer3[0].conv1[0][0].weight, state[prefix + "layer3.0.conv1.0.0.weight"])
    for k, v in video.net.state_dict().items():                         # every tensor round-trips
        assert torch.equal(v, state[prefix + k][:, :3] if k == "stem.0.weight" else state[prefix + k]), k
    a_state = torch.load(audio_file, weights_only=True)
    a_state = a_state.get("state_dict", a_state)
    a_prefix = {"jmt": "resnet.", "kuhnke": "audio_model.resnet.", "torchvision": ""}[layout]
    conv1 = a_state[a_prefix + "conv1.weight"]
    expect = conv1.mean(1, keepdim=True) if conv1.shape[1] == 3 else conv1   # torchvision: channel mean
    assert torch.equal(audio.net.conv1.weight, expect)
    for k, v in audio.net.state_dict().items():
        if k != "conv1.weight":
            assert torch.equal(v, a_state[a_prefix + k]), k


def test_a_dataparallel_prefix_and_the_jmt_whole_model_layout_load(tmp_path):
    jmt = _layout(tmp_path, "jmt")
    vision = torch.load(jmt / "vision_TSAV_Sub4_544k.pt", weights_only=True)
    torch.save({"module." + k: v for k, v in vision.items()}, tmp_path / "dp.pt")
    a = build_backbone(BackboneParams(name="r2plus1d_18", checkpoint="dp.pt"), tmp_path)
    # their TwoStreamAuralVisualModel with FLATTEN: vision_r2d1.r2plus1d.* and the trained projection
    fc = {"vision_r2d1_fc.weight": torch.randn(512, 25088), "vision_r2d1_fc.bias": torch.randn(512)}
    whole = {"vision_r2d1." + k: v for k, v in vision.items()} | fc
    torch.save(whole, tmp_path / "whole.pt")
    b = build_backbone(BackboneParams(name="r2plus1d_18", checkpoint="whole.pt", reduction="flatten"), tmp_path)
    assert torch.equal(a.net.stem[0].weight, b.net.stem[0].weight)
    assert torch.equal(b.projection.weight, fc["vision_r2d1_fc.weight"])
    c = build_backbone(BackboneParams(name="r2plus1d_18", checkpoint="dp.pt", reduction="flatten"), tmp_path)
    assert not torch.equal(c.projection.weight, b.projection.weight)     # the fixed random projection
    d = build_backbone(BackboneParams(name="r2plus1d_18", checkpoint="dp.pt", reduction="flatten"), tmp_path)
    assert torch.equal(c.projection.weight, d.projection.weight)         # ... the same every time


def test_a_file_that_does_not_fit_names_the_file_and_the_key(tmp_path):
    jmt = _layout(tmp_path, "jmt")
    vision = torch.load(jmt / "vision_TSAV_Sub4_544k.pt", weights_only=True)
    vision["r2plus1d.layer2.0.conv1.0.0.weight"] = torch.zeros(3, 3)
    torch.save(vision, tmp_path / "bad.pt")
    with pytest.raises(JmtError, match=r"bad.pt: does not fit the r2plus1d_18 \('layer2.0.conv1.0.0.weight' has shape"):
        build_backbone(BackboneParams(name="r2plus1d_18", checkpoint="bad.pt"), tmp_path)
    with pytest.raises(JmtError, match="audio_TSAV_Sub4_544k.pt: no R\\(2\\+1\\)D-18 weights"):
        build_backbone(BackboneParams(name="r2plus1d_18", checkpoint="audio_TSAV_Sub4_544k.pt"), jmt)
    with pytest.raises(JmtError, match="vision_TSAV_Sub4_544k.pt: no ResNet-18 weights"):
        build_backbone(BackboneParams(name="resnet18_logmel", checkpoint="vision_TSAV_Sub4_544k.pt"), jmt)
    del vision["r2plus1d.layer2.0.conv1.0.0.weight"]
    torch.save(vision, tmp_path / "short.pt")
    with pytest.raises(JmtError, match="missing 'layer2.0.conv1.0.0.weight'"):
        build_backbone(BackboneParams(name="r2plus1d_18", checkpoint="short.pt"), tmp_path)
    with pytest.raises(JmtError, match="nothere.pt: r2plus1d_18 checkpoint not found"):
        build_backbone(BackboneParams(name="r2plus1d_18", checkpoint="nothere.pt"), tmp_path)


def test_a_whole_pickled_model_is_refused_without_running_its_code(tmp_path):
    torch.save(torchvision.models.resnet18(weights=None), tmp_path / "whole.pt")   # a pickled nn.Module
    with pytest.raises(JmtError, match="whole.pt: not a plain resnet18_logmel state dict"):
        build_backbone(BackboneParams(name="resnet18_logmel", checkpoint="whole.pt"), tmp_path)


# ---- jmt embed with the authors' two streams -------------------------------------------------

@pytest.mark.slow
def test_embed_runs_the_authors_two_streams_from_published_layouts(tiny_cache, tmp_path):
    """`jmt embed` with r2plus1d_18 on clips and resnet18_logmel, both from the JMT layout files
    the script writes: every frame embedded, masks as the other streams', the stored features
    the backbones' own output on the rule's clips / the frame's window. (2-frame clips keep the
    test quick on a CPU; the rule and the weights are the same code as 8 of 32.)"""
    from pipeline.stage1.audio import read_waveform, sample_windows
    from pipeline.stage1.embed import run_embed

    from .helpers import params_at

    params, _ = tiny_cache
    _layout(tmp_path, "jmt")
    shared = {k: {"out": str(params.path(getattr(params, k).out))} for k in ("faces", "audio")}
    tsav_params = params_at(tmp_path, params.path(params.corpus.root), **shared, embed={"streams": {
        "visual": {"name": "r2plus1d_18", "checkpoint": "jmt/vision_TSAV_Sub4_544k.pt", "clip": 2, "clip_stride": 2},
        "audio": {"name": "resnet18_logmel", "checkpoint": "jmt/audio_TSAV_Sub4_544k.pt"}}})
    result = run_embed(tsav_params)
    assert result.skipped == [] and len(result.done) == 4 and result.warnings == []
    video = build_backbone(tsav_params.embed.streams["visual"], tmp_path)
    audio = build_backbone(tsav_params.embed.streams["audio"], tmp_path)
    for name in ("demo_01", "demo_00_left"):
        with h5py.File(cache.entry_path(tsav_params.path(tsav_params.embed.out), name)) as f, \
                h5py.File(cache.entry_path(params.path(params.faces.out), name)) as ff, \
                h5py.File(cache.entry_path(params.path(params.audio.out), name)) as af:
            streams = cache.attrs_of(f)["streams"]
            assert [(s["backbone"], s["input"], s["dim"]) for s in streams] == [
                ("r2plus1d_18", "clips", 512), ("resnet18_logmel", "waveform", 512)]
            assert streams[0]["weights"] == "checkpoint jmt/vision_TSAV_Sub4_544k.pt"
            n = int(f.attrs["n_frames"])
            np.testing.assert_array_equal(f[cache.stream_key("visual", "mask")][...], ff["found"][...])
            np.testing.assert_array_equal(f[cache.stream_key("audio", "mask")][...],
                                          af["audio_valid"][...] & af["voice"][...])
            picks = [0, n // 2, n - 1]
            with torch.no_grad():
                want_v = torch.cat([video(torch.as_tensor(read_clips(ff, t, t + 1, 2, 2))) for t in picks]).numpy()
                wave = torchaudio.functional.resample(torch.as_tensor(read_waveform(af)),
                                                      int(af.attrs["sample_rate"]), 44100)
                win = sample_windows(af["timestamps"][...], af.attrs["fps"], af.attrs["window_s"], 44100)
                want_a = audio(wave, torch.as_tensor(win[picks])).numpy()
            got_v = f[cache.stream_key("visual", "features")][...].astype(np.float32)
            got_a = f[cache.stream_key("audio", "features")][...].astype(np.float32)
            assert got_v.shape == (n, 512) and got_a.shape == (n, 512)
            np.testing.assert_allclose(got_v[picks], want_v, rtol=2e-3, atol=2e-3)   # float16 storage
            np.testing.assert_allclose(got_a[picks], want_a, rtol=2e-3, atol=2e-3)
            assert got_v[ff["found"][...]].std(0).max() > 1e-3                   # frames differ
