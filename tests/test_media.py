import numpy as np
import pytest

from pipeline.errors import InputError
from pipeline.media import VideoWriter, iter_frames, probe, read_audio, write_wav


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
