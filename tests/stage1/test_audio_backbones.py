"""The waveform audio backbones: the contract (windows in samples, pooling rows per window),
`prosody`, `egemaps` and the SSL models (wav2vec2 / HuBERT / WavLM).

Expected values are hand-worked (a tone's frequency and level, a burst's time) or computed
independently with numpy; signals are synthesised here, short, at 16 kHz.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pipeline import cache
from pipeline.config import BackboneParams
from pipeline.errors import JmtError
from pipeline.stage1.audio import read_waveform, sample_windows
from pipeline.stage1.backbones import build_backbone, input_of
from pipeline.stage1.backbones.frames import gather_rows, masked_stats, row_range
from pipeline.stage1.backbones.prosody import FEATURES, Prosody

SR = 16000
FPS = 15.0


def frame_windows(seconds: float, fps: float = FPS, window_s: float = 1.0) -> np.ndarray:
    """Windows of every video frame of a clip (frame i at i / fps)."""
    return sample_windows(np.arange(int(round(seconds * fps))) / fps, fps, window_s, SR)


def tone(freq: float, seconds: float, amp: float = 0.3) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(seconds * SR)) / SR)).astype(np.float32)


def noise(seconds: float, level_db: float = -60.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (10 ** (level_db / 20) * rng.standard_normal(int(seconds * SR))).astype(np.float32)


def run(net, wave: np.ndarray, windows: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.as_tensor(wave), torch.as_tensor(windows)).numpy()


# ---------------------------------------------------------------- the contract, by hand
def test_sample_windows_by_hand():
    win = sample_windows(np.array([0.0, 0.1, 0.25]), fps=10.0, window_s=0.5, sr=100)
    np.testing.assert_array_equal(win, [[-40, 10], [-30, 20], [-15, 35]])


def test_rows_of_a_window_by_hand():
    # rows every 160 samples centred at j * 160: [-40, 300) holds rows 0 (0) and 1 (160);
    # [160, 480) holds rows 1, 2 (320) but not 3 (480)
    lo, hi = row_range(np.array([[-40, 300], [160, 480], [161, 481]]), hop=160, centre=0)
    np.testing.assert_array_equal(lo, [0, 1, 2])
    np.testing.assert_array_equal(hi, [2, 3, 4])
    rows = torch.arange(10.0)[:, None] + 100                 # global row j = value j + 100 - first
    vals, mask = gather_rows(rows, -2, lo, hi)               # row 0 of `rows` is global row -2
    np.testing.assert_array_equal(vals[..., 0].numpy(), [[102, 103], [103, 104], [104, 105]])
    assert mask.all()


def test_masked_stats_match_numpy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 9, 2)).astype(np.float32)
    mask = rng.random((5, 9)) < 0.7
    mask[0] = False
    got = masked_stats(torch.as_tensor(x), torch.as_tensor(mask)).numpy()
    for i in range(5):
        for c in range(2):
            v = x[i, mask[i], c]
            pairs = [abs(x[i, k + 1, c] - x[i, k, c]) for k in range(8) if mask[i, k] and mask[i, k + 1]]
            want = [v.mean(), v.std(), np.ptp(v), np.mean(pairs) if pairs else 0.0] if len(v) else [0.0] * 4
            np.testing.assert_allclose(got[i, c::2], want, atol=1e-5)


def test_input_declared_and_layer_rejected_without_layers():
    assert input_of(build_backbone(BackboneParams(name="logmel_stats"), Path("."))) == "logmel"
    assert input_of(build_backbone(BackboneParams(name="prosody"), Path("."))) == "waveform"
    for name in ("prosody", "logmel_stats"):
        with pytest.raises(JmtError, match=f"{name} has no layers to pick"):
            build_backbone(BackboneParams(name=name, layer=3), Path("."))
    with pytest.raises(JmtError, match="prosody has no weights"):
        build_backbone(BackboneParams(name="prosody", allow_random=True), Path("."))


# ---------------------------------------------------------------- prosody
@pytest.mark.parametrize("freq", [220.0, 440.0])
def test_prosody_reads_a_tones_pitch_level_and_centroid(freq):
    wave = tone(freq, 2.0, amp=0.3)
    out = run(Prosody(), wave, frame_windows(2.0))[15:]      # windows fully inside the tone
    f = {k: out[:, i] for i, k in enumerate(FEATURES)}
    np.testing.assert_allclose(27.5 * 2 ** f["f0_mean"], freq, rtol=0.01)
    assert (f["f0_std"] < 0.01).all() and (f["voiced_fraction"] == 1).all()
    # a sine of amplitude A has RMS A / sqrt(2): 20 log10(0.3 / sqrt(2)) = -13.47 dBFS
    np.testing.assert_allclose(f["level_mean"] * 20, 20 * np.log10(0.3 / np.sqrt(2)), atol=0.1)
    np.testing.assert_allclose(f["centroid_mean"], freq / 1000, rtol=0.05)
    assert (f["syllable_rate"] == 0).all()                   # a steady tone has no syllables


def _accent_span(base: float, arousal: float) -> tuple[float, float]:
    """The demo voice's F0 lies between its level and the largest accent peak: level x
    2**(0.5 * range * 1.4 / 12) (stress at most 1.4, hat peak half the accent size)."""
    from pipeline.demo import voice

    level = float(voice.pitch(base, arousal))
    return level, level * 2 ** (0.5 * float(voice.pitch_range(arousal)) * 1.4 / 12)


def test_prosody_follows_the_demo_voices_pitch():
    """A harmonic-rich glottal source with formants and per-syllable pitch accents above a
    known level (150 Hz): the mean F0 read must lie inside the voice's own span."""
    from pipeline.demo import voice

    n = 45
    wave = voice.synthesize(np.zeros(n), np.zeros(n), np.full(n, 150.0), FPS, SR, np.random.default_rng(0))
    out = run(Prosody(), wave, frame_windows(3.0))[15:]
    f = {k: out[:, i] for i, k in enumerate(FEATURES)}
    assert (f["voiced_fraction"] > 0.25).all()                # syllables with pauses between
    low, high = _accent_span(150.0, 0.0)
    f0 = 27.5 * 2 ** f["f0_mean"]
    assert ((f0 > low * 0.98) & (f0 < high * 1.02)).all(), (f0.min(), f0.max(), low, high)


@pytest.mark.parametrize("arousal", [-1.0, 0.0, 1.0])
def test_prosody_syllable_rate_follows_the_demo_voice(arousal):
    """The demo voice speaks voice.syllable_rate(arousal) syllable slots per second, about one
    in six of them a pause after a phrase: ~0.82 of them voiced."""
    from pipeline.demo import voice

    n = 90
    wave = voice.synthesize(np.zeros(n), np.full(n, arousal), np.full(n, 150.0), FPS, SR,
                            np.random.default_rng(0))
    out = run(Prosody(), wave, frame_windows(6.0))[15:]
    rate = out[:, FEATURES.index("syllable_rate")].mean() * 10
    assert abs(rate - 0.82 * voice.syllable_rate(arousal)) < 0.8
    low, high = _accent_span(150.0, arousal)
    assert low * 0.98 < 27.5 * 2 ** out[:, FEATURES.index("f0_mean")].mean() < high * 1.02


def test_prosody_noise_is_unvoiced():
    out = run(Prosody(), noise(2.0, -20.0), frame_windows(2.0))
    assert out[:, FEATURES.index("voiced_fraction")].max() < 0.05


def test_prosody_syllable_rate_of_a_4hz_modulated_voice():
    t = np.arange(4 * SR) / SR
    env = np.sin(np.pi * 4 * t) ** 2                         # 4 loudness peaks per second
    wave = (tone(180.0, 4.0) * env).astype(np.float32)
    out = run(Prosody(), wave, frame_windows(4.0))[15:]
    rate = out[:, FEATURES.index("syllable_rate")] * 10
    assert np.abs(rate - 4).max() <= 1.0 and abs(rate.mean() - 4) < 0.3
    assert (out[:, FEATURES.index("modulation_2_8hz")] > 0.8).all()


def test_prosody_tone_burst_lands_in_exactly_its_frames():
    """A 200 ms 1 kHz burst in a -60 dB noise floor, placed >= 30 ms from every window edge
    (the analysis frames reach 22.5 ms): windows that contain it get louder, the rest equal
    the noise-only features."""
    floor = noise(6.0)
    a, b = 3.03, 3.23                                         # s; window edges are multiples of 1/15 s
    burst = floor.copy()
    burst[int(a * SR):int(b * SR)] += tone(1000.0, b - a, amp=0.5)[: int(b * SR) - int(a * SR)]
    win = frame_windows(6.0)
    quiet, loud = run(Prosody(), floor, win), run(Prosody(), burst, win)
    hits = (win[:, 1] > a * SR) & (win[:, 0] < b * SR)
    assert hits.sum() == 18                                   # ends in (3.03, 4.23): 18 frames of 1/15 s
    level = FEATURES.index("level_mean")
    assert (loud[hits, level] - quiet[hits, level] > 0.05).all()   # > 1 dB louder
    np.testing.assert_allclose(loud[~hits], quiet[~hits], atol=1e-5)


# ---------------------------------------------------------------- the waveform cache and embed
def test_audio_cache_keeps_the_waveform(tiny_cache):
    params, results = tiny_cache
    folder = params.path(params.audio.out)
    for name in results["audio"].done:
        with h5py.File(cache.entry_path(folder, name)) as f:
            wave = read_waveform(f)
            sr, fps = int(f.attrs["sample_rate"]), float(f.attrs["fps"])
            assert f["waveform"].dtype == np.int16 and abs(len(wave) - f.attrs["audio_seconds"] * sr) <= 1
            # energy_db was computed from the decoded track: recomputed from the cache in numpy
            ts, level = f["timestamps"][...], f["energy_db"][...]
            for i in range(0, len(ts), 7):
                seg = wave[int(ts[i] * sr): int((ts[i] + 1 / fps) * sr)].astype(np.float64)
                if len(seg) and level[i] > -60:
                    assert abs(10 * np.log10(np.mean(seg ** 2) + 1e-12) - level[i]) < 0.05


# ---------------------------------------------------------------- eGeMAPS (openSMILE)
def test_egemaps_has_its_documented_feature_counts():
    """eGeMAPSv02: 25 low-level descriptors and 88 functionals (Eyben et al. 2016)."""
    import opensmile  # noqa: F401  (installed by `make setup`: requirements/base.txt)
    from pipeline.stage1.backbones.egemaps import smile

    assert len(smile("lld").feature_names) == 25
    assert len(smile("functionals").feature_names) == 88
    net = build_backbone(BackboneParams(name="egemaps"), Path("."))
    assert input_of(net) == "waveform" and net.dim == 2 * 25 + 1 == len(net.features)


@pytest.mark.parametrize("freq", [220.0, 440.0])
def test_egemaps_reads_a_tones_pitch(freq):
    import opensmile  # noqa: F401  (installed by `make setup`: requirements/base.txt)
    net = build_backbone(BackboneParams(name="egemaps"), Path("."))
    out = run(net, tone(freq, 2.0), frame_windows(2.0))[15:]
    semitones = out[:, net.features.index("F0semitoneFrom27.5Hz_sma3nz_mean")]
    np.testing.assert_allclose(27.5 * 2 ** (semitones / 12), freq, rtol=0.01)
    assert (out[:, -1] > 0.95).all()                                  # voiced fraction


def test_egemaps_tone_burst_lands_in_exactly_its_frames():
    """Energy and spectral LLDs (20 ms frames, 3-frame smoothing: 20 ms reach) rise exactly
    where the window contains the burst; the voiced-only LLDs use 60 ms pitch frames and
    reach further, so they are left out of the equality."""
    import opensmile  # noqa: F401  (installed by `make setup`: requirements/base.txt)
    net = build_backbone(BackboneParams(name="egemaps"), Path("."))
    floor = noise(6.0)
    a, b = 3.03, 3.23
    burst = floor.copy()
    burst[int(a * SR):int(b * SR)] += tone(1000.0, b - a, amp=0.5)[: int(b * SR) - int(a * SR)]
    win = frame_windows(6.0)
    quiet, loud = run(net, floor, win), run(net, burst, win)
    hits = (win[:, 1] > a * SR) & (win[:, 0] < b * SR)
    loudness = net.features.index("Loudness_sma3_mean")
    assert (loud[hits, loudness] > quiet[hits, loudness] + 0.02).all()
    plain = [i for i, name in enumerate(net.features) if "nz_" not in name and name != "voiced_fraction"]
    assert len(plain) == 20
    np.testing.assert_allclose(loud[~hits][:, plain], quiet[~hits][:, plain], atol=1e-5)


# ---------------------------------------------------------------- SSL models
# The base models' architecture shrunk (same CNN strides, so the same 20 ms rows): fast tests.
TINY = dict(extractor_conv_layer_config=[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2,
            encoder_embed_dim=48, encoder_num_heads=2, encoder_num_layers=2,
            encoder_ff_interm_features=96, encoder_pos_conv_kernel=16, encoder_pos_conv_groups=4)
FAMILIES = ["wav2vec2_base", "hubert_base", "wavlm_base"]


def tiny_ssl(name: str, tmp_path: Path | None = None, **params):
    from pipeline.stage1.backbones.ssl import build_ssl

    torch.manual_seed(0)
    return build_ssl(name, BackboneParams(name=name, **params), tmp_path or Path("."), **TINY).eval()


@pytest.mark.parametrize("name", FAMILIES)
def test_ssl_base_models_build_and_run_with_random_weights(name):
    with pytest.warns(UserWarning, match=f"'{name}' has RANDOM weights"):
        net = build_backbone(BackboneParams(name=name, allow_random=True), Path("."))
    assert input_of(net) == "waveform" and net.dim == 768 and net.num_layers == 12 and net.layer == 12
    assert sum(p.numel() for p in net.parameters()) > 90e6 and not net.training
    out = run(net, noise(1.0, -20.0), frame_windows(1.0))
    assert out.shape == (15, 768) and np.isfinite(out).all()


@pytest.mark.parametrize("name", FAMILIES)
def test_ssl_checkpoint_round_trip_and_layers(name, tmp_path):
    with pytest.warns(UserWarning, match="RANDOM"):
        src = tiny_ssl(name, allow_random=True)
    torch.save(src.model.state_dict(), tmp_path / "w.pt")
    loaded = tiny_ssl(name, tmp_path, checkpoint="w.pt", layer=1)
    assert loaded.layer == 1 and weights_equal(src, loaded)
    wave, win = noise(2.0, -20.0), frame_windows(2.0)
    last, first = run(src, wave, win), run(loaded, wave, win)
    assert np.abs(last - first).max() > 1e-3                          # another layer, other features
    with pytest.raises(JmtError, match="layer 3 is out of range: this model has layers 1..2"):
        tiny_ssl(name, tmp_path, checkpoint="w.pt", layer=3)
    with pytest.raises(JmtError, match="w.pt: does not fit"):
        from pipeline.stage1.backbones.ssl import build_ssl
        build_ssl(name, BackboneParams(name=name, checkpoint="w.pt"), tmp_path)   # the full-size model


def weights_equal(a, b) -> bool:
    from pipeline.stage1.backbones import weights_sha256

    return weights_sha256(a) == weights_sha256(b)


def test_ssl_needs_weights_and_pretrained_offline_fails_fast(monkeypatch, tmp_path):
    with pytest.raises(JmtError, match="wavlm_base needs weights"):
        build_backbone(BackboneParams(name="wavlm_base"), Path("."))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))                  # an empty torch hub cache
    with pytest.raises(JmtError, match="cannot get pretrained weights for wavlm_large: offline.*checkpoint: PATH"):
        build_backbone(BackboneParams(name="wavlm_large", pretrained=True), Path("."))


def test_ssl_pooling_is_aligned_to_the_windows():
    """One chunk covering everything equals one plain torchaudio run over the clip, mean-pooled
    in numpy over the rows whose centre (320 j + 200) lies in each window."""
    with pytest.warns(UserWarning):
        net = tiny_ssl("wavlm_base", allow_random=True)
    wave = noise(5.0, -20.0)
    # frames at 1 s + i / 15: windows [(i + 1) / 15 s, 1 s + (i + 1) / 15 s), inside or past the clip
    win = sample_windows(1.0 + np.arange(75) / FPS, FPS, 1.0, SR)
    got = run(net, wave, win)
    # rows 0 .. 299: the last window ends at 6 s = 96000 samples, row 299's centre is 95880,
    # and row 299 reads samples up to 299 * 320 + 400 = 96080 (zeros past the 5 s clip)
    padded = np.zeros(96080, np.float32)
    padded[: len(wave)] = wave
    with torch.no_grad():
        feats, _ = net.model.extract_features(torch.as_tensor(padded)[None])
    rows = feats[-1][0].numpy()
    assert len(rows) == 300
    centre = 320 * np.arange(300) + 200
    want = np.stack([rows[(centre >= s) & (centre < e)].mean(0) for s, e in win])
    np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.parametrize("name", FAMILIES)
def test_ssl_tone_burst_and_the_chunk_rule(name):
    """7 s of silence with a burst at 5.03-5.23 s; chunks of 2 s (100 rows), 0.5 s of context.
    Frames whose rows all lie in chunks 0-1 (rows < 200) come from audio up to row 224, which
    reads samples up to 224 * 320 + 400 = 72080 (4.505 s): they equal the pure-silence frames.
    Frames whose window holds the burst differ. (Frames of the burst's chunk that miss it
    differ too: attention and group norm span the chunk; docs/cache.md gives the sizes.)"""
    with pytest.warns(UserWarning):
        net = tiny_ssl(name, allow_random=True)
    net.chunk_rows, net.context_rows = 100, 25
    silence = np.zeros(7 * SR, np.float32)
    a, b = 5.03, 5.23
    burst = silence.copy()
    burst[int(a * SR):int(b * SR)] = tone(1000.0, b - a, amp=0.5)[: int(b * SR) - int(a * SR)]
    win = frame_windows(7.0)
    quiet, loud = run(net, silence, win), run(net, burst, win)
    rows_end = -((200 - win[:, 1]) // 320)                           # one past the last row's index
    early = rows_end <= 200
    hits = (win[:, 1] > a * SR) & (win[:, 0] < b * SR)
    assert early.sum() == 60 and hits.sum() == 18                     # ends <= 4.0125 s; in (5.03, 6.23)
    np.testing.assert_allclose(loud[early], quiet[early], atol=1e-6)
    assert (np.abs(loud[hits] - quiet[hits]).max(1) > 1e-2).all()


# ---------------------------------------------------------------- params and the embed path
def test_layer_param_is_validated(repo_params):
    from pipeline.config import parse_params
    from pipeline.errors import ParamsError

    data = repo_params.model_dump()
    data["embed"]["streams"]["audio"] = {"name": "wavlm_base", "allow_random": True, "layer": 0}
    with pytest.raises(ParamsError, match="embed.streams.audio.layer: Input should be greater than or equal to 1"):
        parse_params(data, source="p.yaml")


def test_waveform_features_resample_a_cache_at_another_rate(tmp_path):
    """An 8 kHz cache is resampled to the backbone's 16 kHz: a 220 Hz tone still reads 220 Hz,
    and the windows are the same 1 s ending at each frame's end."""
    from pipeline.stage1.audio import write_waveform
    from pipeline.stage1.embed import waveform_features

    ts = np.arange(30) / FPS
    feats = {}
    for sr in (8000, 16000):
        t = np.arange(2 * sr) / sr
        with h5py.File(tmp_path / f"{sr}.h5", "w") as f:
            write_waveform(f, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))
            f.create_dataset("timestamps", data=ts)
            f.attrs.update({"sample_rate": sr, "fps": FPS, "window_s": 1.0})
        with h5py.File(tmp_path / f"{sr}.h5") as f:
            feats[sr] = waveform_features(Prosody(), f, torch.device("cpu"))
    f0 = FEATURES.index("f0_mean")
    np.testing.assert_allclose(27.5 * 2 ** feats[8000][15:, f0], 220.0, rtol=0.01)
    np.testing.assert_allclose(feats[8000][:, f0], feats[16000][:, f0], atol=0.01)


def test_ssl_frames_do_not_depend_on_the_other_frames_asked():
    """Frames before and after a 10 s gap in the timestamps (chunks of 2 s): each group gives
    the same features alone as together, the rows of the chunks in the gap being skipped."""
    with pytest.warns(UserWarning):
        net = tiny_ssl("hubert_base", allow_random=True)
    net.chunk_rows, net.context_rows = 100, 25
    wave = noise(16.0, -20.0)
    ts = np.r_[np.arange(30) / FPS, 12.0 + np.arange(30) / FPS]
    win = sample_windows(ts, FPS, 1.0, SR)
    both = run(net, wave, win)
    np.testing.assert_allclose(both[:30], run(net, wave, win[:30]), atol=1e-5)
    np.testing.assert_allclose(both[30:], run(net, wave, win[30:]), atol=1e-5)


@pytest.mark.parametrize("orig, new", [(16000, 44100), (44100, 16000), (16000, 24000)])
def test_resampling_in_chunks_is_resampling_the_whole_track(orig, new):
    """`jmt embed` resamples a track in chunks (bounded temporaries on a long video): the same
    samples as torchaudio's one call, at the start, at chunk seams and at the end."""
    import torchaudio

    from pipeline.stage1.backbones.frames import resample

    wave = torch.randn(int(orig * 7.3), generator=torch.Generator().manual_seed(0)) * 0.3
    whole = torchaudio.functional.resample(wave, orig, new)
    chunked = resample(wave, orig, new, chunk_s=1.0)
    assert chunked.shape == whole.shape
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)   # equal on this machine
    assert resample(wave, orig, orig) is wave
