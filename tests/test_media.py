import json
import subprocess

import numpy as np
import pytest

from pipeline.errors import InputError
from pipeline.media import VideoWriter, audio_span, frame_times, iter_frames, probe, read_audio, write_wav


def test_write_probe_decode_round_trip(tmp_path):
    wav = tmp_path / "a.wav"
    sr, fps, n = 16000, 10.0, 25
    t = np.arange(int(n / fps * sr)) / sr
    write_wav(wav, 0.5 * np.sin(2 * np.pi * 440 * t), sr)
    path = tmp_path / "v.mp4"
    with VideoWriter(path, 64, 48, fps, audio_wav=wav) as w:
        for i in range(n):
            w.write(np.full((48, 64, 3), i * 10, np.uint8))
    info = probe(path)
    assert (info.video_codec, info.audio_codec, info.n_frames) == ("h264", "aac", n)
    assert info.fps == pytest.approx(fps)
    batches = list(iter_frames(path, 64, 48, batch=10))
    assert [len(b) for b in batches] == [10, 10, 5]
    frames = np.concatenate(batches)
    assert abs(float(frames[24].mean()) - 240) < 4  # grey levels survive the codec
    audio = read_audio(path, sr)
    # AAC decodes to whole 1024-sample frames: the tail may carry up to one frame of padding,
    # the start is aligned.
    assert 0 <= len(audio) - len(t) <= 1024
    ref = 0.5 * np.sin(2 * np.pi * 440 * t[:4000])
    lags = [float(np.dot(audio[k:k + 4000], ref)) for k in range(0, 40)]
    assert int(np.argmax(lags)) == 0
    assert 0.3 < np.abs(audio).max() < 0.6


def test_video_without_audio(tmp_path):
    path = tmp_path / "silent.mp4"
    with VideoWriter(path, 64, 48, 5.0) as w:
        w.write(np.zeros((48, 64, 3), np.uint8))
    info = probe(path)
    assert info.audio_codec is None and info.audio_duration is None


def test_wrong_frame_shape_removes_partial_file(tmp_path):
    path = tmp_path / "x.mp4"
    with pytest.raises(ValueError, match="frame must be uint8"):
        with VideoWriter(path, 64, 48, 5.0) as w:
            w.write(np.zeros((10, 10, 3), np.uint8))
    assert not path.exists()


@pytest.mark.parametrize("content", [b"", b"not a video at all"])
def test_probe_names_unreadable_files(tmp_path, content):
    path = tmp_path / "broken.mp4"
    path.write_bytes(content)
    with pytest.raises(InputError, match=r"broken.mp4: ffprobe cannot read it"):
        probe(path)
    with pytest.raises(InputError, match="file not found"):
        probe(tmp_path / "absent.mp4")


# ---- frame timing: one time per decoded frame, on one clock with the audio -------------------

def ffmpeg_run(*args):
    subprocess.run(["ffmpeg", "-v", "error", "-y", *map(str, args)], check=True)


def ffprobe_csv(path, stream, entries):
    """ffprobe's own reading, one row per frame/packet (a list of strings per row)."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", stream, "-show_entries", entries,
                          "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True).stdout
    return [line.split(",") for line in out.splitlines() if line]


@pytest.fixture(scope="module")
def bframe_avi(tmp_path_factory):
    """MPEG-4 Part 2 with B-frames and AC3 in AVI (the file type that broke `jmt predict`)."""
    path = tmp_path_factory.mktemp("avi") / "x.avi"
    ffmpeg_run("-f", "lavfi", "-i", "testsrc=size=160x120:rate=25", "-f", "lavfi", "-i", "sine=sample_rate=48000",
               "-t", 4, "-c:v", "mpeg4", "-bf", 2, "-c:a", "ac3", path)
    return path


def test_bframe_avi_every_decoded_frame_has_a_time(bframe_avi):
    packets = ffprobe_csv(bframe_avi, "v:0", "packet=pts_time")
    assert sum(p[0] == "N/A" for p in packets) > 20  # packets alone cannot time these frames
    timing = frame_times(bframe_avi)
    decoded = sum(len(b) for b in iter_frames(bframe_avi, 32, 32))
    assert decoded == len(timing.times) == 100
    # 25 fps: every step is 40 ms; AVI shows the stream one frame late (B-frame delay)
    np.testing.assert_allclose(np.diff(timing.times), 0.04, atol=1e-6)
    assert timing.times[0] == pytest.approx(0.04)
    assert "frame pts" in timing.source and "packet dts" in timing.source
    # ffprobe's best-effort time, where it has one, agrees frame by frame
    best = np.array([float(r[0]) if r[0] != "N/A" else np.nan
                     for r in ffprobe_csv(bframe_avi, "v:0", "frame=best_effort_timestamp_time")])
    ok = ~np.isnan(best)
    assert ok.sum() >= 99
    np.testing.assert_allclose(timing.times[ok], best[ok], atol=1e-6)


def test_variable_frame_rate_mp4(tmp_path):
    path = tmp_path / "vfr.mp4"  # 10 frames at 10 fps, then 10 at 5 fps
    ffmpeg_run("-f", "lavfi", "-i", "testsrc=size=96x96:rate=10", "-frames:v", 20,
               "-vf", "setpts='if(lt(N,10),N*0.1,N*0.2-1.0)/TB'", "-fps_mode", "vfr", "-c:v", "libx264", path)
    expected = np.array([0.1 * i if i < 10 else 0.2 * i - 1.0 for i in range(20)])
    timing = frame_times(path)
    assert sum(len(b) for b in iter_frames(path, 32, 32)) == len(timing.times) == 20
    np.testing.assert_allclose(timing.times, expected, atol=1e-3)
    assert timing.source == "frame pts"


def test_late_audio_is_placed_on_the_video_clock(tmp_path):
    sr = 16000
    wav = tmp_path / "a.wav"
    write_wav(wav, 0.5 * np.sin(2 * np.pi * 440 * np.arange(2 * sr) / sr), sr)
    path = tmp_path / "late.mkv"  # video 0-4 s, PCM audio 1-3 s
    ffmpeg_run("-f", "lavfi", "-i", "testsrc=size=96x96:rate=25:duration=4", "-itsoffset", 1, "-i", wav,
               "-c:v", "libx264", "-c:a", "pcm_s16le", path)
    span = audio_span(path)
    assert span.start == pytest.approx(1.0, abs=1e-3)
    audio = read_audio(path, sr)
    loud = np.flatnonzero(np.abs(audio) > 0.01)
    assert abs(loud[0] - sr) <= 2 and abs(loud[-1] - 3 * sr) <= 2   # 1.0 s and 3.0 s
    assert np.abs(audio[: sr - 2]).max() == 0                       # silence in front
    assert frame_times(path).times[0] == 0.0 and audio_span(wav).start == 0.0


@pytest.fixture(scope="module")
def upright(tmp_path_factory):
    """A 320x240 test pattern with a tone (asymmetric: any turn or mirror shows)."""
    path = tmp_path_factory.mktemp("turns") / "upright.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=15",
                    "-f", "lavfi", "-i", "sine=frequency=300", "-t", "1", "-pix_fmt", "yuv420p", "-c:a", "aac",
                    "-shortest", str(path)], check=True)
    return path


@pytest.mark.parametrize("mirror", [False, True])
@pytest.mark.parametrize("rotate", [0, 90, 180, 270])
def test_a_phone_clip_decodes_as_displayed(upright, tmp_path, rotate, mirror):
    """Stored turned (and mirrored) with a display matrix that shows it upright: probe reports
    the displayed size and the turn, iter_frames delivers the upright picture (codec noise only)."""
    from tests.stage1.helpers import phone_copy

    clip = phone_copy(upright, tmp_path / "phone.mp4", rotate, mirror=mirror)
    stored = json.loads(subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                                        "stream=width,height", "-of", "json", str(clip)],
                                       capture_output=True, text=True, check=True).stdout)["streams"][0]
    assert (stored["width"], stored["height"]) == ((240, 320) if rotate % 180 else (320, 240))
    info = probe(clip)
    assert (info.width, info.height) == (320, 240)
    # the matrix undoes the turn: shown (360 - rotate) clockwise, i.e. `rotate` counter-clockwise
    assert (info.orientation.rotation, info.orientation.mirrored) == ((360 - rotate) % 360, mirror)
    assert info.orientation.identity == (rotate == 0 and not mirror)
    want = np.concatenate(list(iter_frames(upright, 320, 240))).astype(np.int16)
    got = np.concatenate(list(iter_frames(clip, info.width, info.height))).astype(np.int16)
    assert got.shape == want.shape and np.abs(got - want).mean() < 2   # codec noise (a turn: ~100)


def test_orientation_from_the_rotate_tag_and_odd_angles():
    from pipeline.media import orientation_of

    turn = orientation_of({"tags": {"rotate": "90"}}, "old.mov")   # the legacy tag counts clockwise
    assert (turn.rotation, turn.mirrored, turn.source) == (90, False, "rotate tag")
    frame = np.arange(6).reshape(2, 3)
    assert (turn.apply(frame) == np.rot90(frame, -1)).all() and turn.display_size(3, 2) == (2, 3)
    assert orientation_of({"side_data_list": [{"side_data_type": "Display Matrix", "rotation": -90}]}).rotation == 90
    assert orientation_of({}).identity and orientation_of({}).describe() == "as stored"
    with pytest.raises(InputError, match=r"tilted.mp4: its rotate tag turns the picture by 45.0 degrees"):
        orientation_of({"tags": {"rotate": "45"}}, "tilted.mp4")


def test_a_damaged_file_keeps_its_frames_and_says_so(upright, tmp_path):
    """A truncated file decodes with errors but exit code 0: every decodable frame is delivered,
    then one DamagedMedia warning; a sparse AVI (its index lists more frames than it holds)
    decodes cleanly: no warning, the decoder's count."""
    import warnings

    from pipeline.media import DamagedMedia

    data = upright.read_bytes()
    cut = tmp_path / "cut.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(upright), "-c", "copy", "-movflags", "+faststart",
                    str(tmp_path / "fast.mp4")], check=True)
    data = (tmp_path / "fast.mp4").read_bytes()
    cut.write_bytes(data[: len(data) * 6 // 10])
    with pytest.warns(DamagedMedia, match=r"cut.mp4: damaged \(truncated or corrupt\): \d+ frames decoded"):
        n = sum(len(b) for b in iter_frames(cut, 320, 240))
    assert 0 < n < 15 and n == len(frame_times(cut).times)
    sparse = tmp_path / "sparse.avi"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(upright), "-vf", r"select=not(mod(n\,5))",
                    "-fps_mode", "passthrough", "-c:v", "mpeg4", "-an", str(sparse)], check=True)
    assert probe(sparse).n_frames > 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sum(len(b) for b in iter_frames(sparse, 320, 240)) == 3 == len(frame_times(sparse).times)
