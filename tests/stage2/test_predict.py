"""`jmt predict` on a demo video and on clips the demo generator did not make."""

import csv
import subprocess

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import InputError, JmtError
from pipeline.stage2.predict import predict_video


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_predict_a_demo_video_shows_the_occlusion(trained, tiny_corpus, tmp_path):
    result = predict_video(tiny_corpus / "videos/batch2/demo_02.mp4", trained.path(trained.train.out), tmp_path)
    table = rows(result.csv)
    assert len(table) == 60 and list(table[0]) == ["frame", "time", "valence", "arousal", "face_found", "audio_found"]
    assert 0.6 < result.face_rate < 0.9          # the occluder hides the face for 1 s of 4
    assert result.png.stat().st_size > 10_000
    assert all(-1 <= float(r["valence"]) <= 1 for r in table)


@pytest.fixture(scope="module")
def astronaut_clip(tmp_path_factory):
    """A clip from the astronaut photo and a tone, made by ffmpeg alone; and one without audio."""
    from PIL import Image
    from skimage import data

    folder = tmp_path_factory.mktemp("clips")
    Image.fromarray(data.astronaut()).resize((256, 256)).save(folder / "astronaut.png")
    common = ["ffmpeg", "-v", "error", "-y", "-loop", "1", "-framerate", "20", "-t", "2", "-i", str(folder / "astronaut.png")]
    subprocess.run(common + ["-f", "lavfi", "-t", "2", "-i", "sine=frequency=220", "-c:v", "libx264",
                             "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(folder / "talk.mp4")], check=True)
    subprocess.run(common + ["-c:v", "libx264", "-pix_fmt", "yuv420p", str(folder / "mute.mp4")], check=True)
    return folder


def test_predict_a_clip_not_made_by_the_generator(trained, astronaut_clip, tmp_path):
    result = predict_video(astronaut_clip / "talk.mp4", trained.path(trained.train.out), tmp_path)
    assert result.frames == 40 and result.face_rate == 1.0 and result.audio_rate > 0.9


def test_predict_without_audio_still_predicts(trained, astronaut_clip, tmp_path):
    result = predict_video(astronaut_clip / "mute.mp4", trained.path(trained.train.out), tmp_path)
    table = rows(result.csv)
    assert result.audio_rate == 0.0 and len(table) == 40 and all(r["audio_found"] == "0" for r in table)


def test_predict_errors(trained, tmp_path):
    with pytest.raises(InputError, match="file not found"):
        predict_video(tmp_path / "none.mp4", trained.path(trained.train.out), tmp_path)
    (tmp_path / "broken.mp4").write_bytes(b"junk")
    with pytest.raises(JmtError, match="broken.mp4"):
        predict_video(tmp_path / "broken.mp4", trained.path(trained.train.out), tmp_path)
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "broken.mp4"), "--checkpoint",
                                      str(trained.path(trained.train.out)), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "broken.mp4" in result.output
