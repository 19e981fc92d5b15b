import json

import h5py
import numpy as np

from pipeline import cache
from pipeline.media import place_track
from pipeline.stage1.audio import frame_windows, inside_track, level_db, logmel, window_ends


def test_frame_windows_by_hand():
    # 10 fps video, 10 ms hop: frame i (t = i/10) ends at (i+1)/10 s -> spectrogram frames
    # centred at 0, 10, ..., 100 ms are <= 100 ms for frame 0: end index 11 (exclusive).
    ts = np.array([0.0, 0.1, 0.2, 0.3])
    end, valid = frame_windows(ts, 10.0, n_spec=25, hop_s=0.01, audio_seconds=0.25)
    assert end.tolist() == [11, 21, 25, 25]          # clipped to the spectrogram
    assert valid.tolist() == [True, True, True, False]  # frame 3 starts after the track ends
    end, valid = frame_windows(ts, 10.0, n_spec=0, hop_s=0.01, audio_seconds=0.0)
    assert end.tolist() == [0, 0, 0, 0] and not valid.any()


def test_logmel_shape_and_tone(repo_params):
    sr = repo_params.audio.sample_rate
    t = np.arange(sr) / sr
    spec = logmel((0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), repo_params)
    hop = int(repo_params.audio.hop_ms * sr / 1000)
    assert spec.shape == (sr // hop + 1, repo_params.audio.n_mels)
    band = int(np.argmax(spec[50]))
    assert 0 < band < repo_params.audio.n_mels - 1 and spec[50, band] > spec[50].mean() + 5


def test_audio_cache_follows_the_corpus(tiny_cache, tiny_corpus):
    params, results = tiny_cache
    assert results["audio"].skipped == []
    folder = params.path(params.audio.out)
    videos = json.loads((tiny_corpus / "corpus.json").read_text())["videos"]
    for v in videos:
        name = v["name"] if len(v["persons"]) == 1 else f"{v['name']}_left"
        with h5py.File(cache.entry_path(folder, name)) as f:
            assert f.attrs["has_audio"] and f["audio_valid"][...].all()
            assert len(f["frame_end"]) == v["n_frames"]
            level = f["energy_db"][...]
            (a, b), = v["audio_gap"]
            inside = level[a + 2:b - 2].mean()
            outside = np.r_[level[:a], level[b:]].mean()
            if v["audio_gap_mode"] == "silent":
                assert inside < outside - 20
            else:
                assert inside > outside + 5
    with h5py.File(cache.entry_path(folder, "demo_00_left")) as left, \
            h5py.File(cache.entry_path(folder, "demo_00_right")) as right:
        np.testing.assert_array_equal(left["logmel"][...], right["logmel"][...])  # one shared track


def test_frame_windows_with_a_late_track_by_hand():
    # 10 fps; the track plays 0.25-0.55 s: frame 2 [0.2, 0.3) and frame 5 [0.5, 0.6) overlap it
    ts = np.arange(7) / 10
    end, valid = frame_windows(ts, 10.0, n_spec=56, hop_s=0.01, audio_seconds=0.55, audio_start=0.25)
    assert valid.tolist() == [False, False, True, True, True, True, False]
    assert end.tolist() == [11, 21, 31, 41, 51, 56, 56]


def test_voice_mask_of_the_tiny_corpus(tiny_cache, tiny_corpus):
    """The cached voice mask is off inside each silent / noisy gap, on through most of the rest,
    and embed's audio stream mask is audio_valid AND voice."""
    params, _ = tiny_cache
    videos = json.loads((tiny_corpus / "corpus.json").read_text())["videos"]
    for v in videos:
        name = v["name"] if len(v["persons"]) == 1 else f"{v['name']}_left"
        with h5py.File(cache.entry_path(params.path(params.audio.out), name)) as f:
            voice, valid = f["voice"][...], f["audio_valid"][...]
        with h5py.File(cache.entry_path(params.path(params.embed.out), name)) as f:
            np.testing.assert_array_equal(f[cache.stream_key("audio", "mask")][...], valid & voice)
        (a, b), = v["audio_gap"]
        assert not voice[a + 1:b - 1].any()  # the gap's edge frames still hold 10 ms of voice ramp
        assert np.r_[voice[:a], voice[b:]].mean() > 0.8


def test_a_track_still_playing_has_no_end_yet():
    """`jmt live` asks the same rules before the track's length is known: no clip at its end."""
    ts = np.array([0.0, 0.1, 0.2, 0.3])
    assert window_ends(ts, 10.0, 0.01, None).tolist() == [11, 21, 31, 41]
    assert inside_track(ts, 10.0, 0.25, np.inf, True).tolist() == [False, False, True, True]
    assert not inside_track(ts, 10.0, 0.0, np.inf, False).any()


def test_level_db_by_hand():
    assert level_db(np.zeros(0, np.float32)) == -120.0 and level_db(np.zeros(8, np.float32)) == -120.0
    assert level_db(np.full(8, 0.1, np.float32)) == float(np.float32(20 * np.log10(0.1)))


def test_a_track_placed_piece_by_piece_equals_the_whole():
    """A late track (silence in front), an early one (first samples lost), a cut tail: the
    samples `jmt live` places as ffmpeg's arrive (and older ones are let go) are the whole's."""
    sr, raw = 100, np.arange(1, 301, dtype=np.float32)
    for start, end in ((0.25, 2.0), (-0.3, None), (0.0, 2.5)):
        whole, base, capped = place_track(raw, 0, audio_start=start, audio_end=end, sr=sr)
        assert base == 0 and capped == (end is not None)
        shift = int(round(start * sr))
        assert len(whole) == min(len(raw) + shift, round(end * sr) if end else 10 ** 9)
        assert (whole[:max(shift, 0)] == 0).all() and whole[max(shift, 0)] == 1 + max(-shift, 0)
        for keep_from, upto in ((0, 50), (0, 300), (120, 300), (40, 200)):
            x, b, _ = place_track(raw[keep_from:upto], keep_from, audio_start=start, audio_end=end, sr=sr)
            np.testing.assert_array_equal(x, whole[b:b + len(x)])
