"""`jmt predict` on a demo video and on clips the demo generator did not make: the CSV's columns
(frame, time, each stream's presence, then every task's outputs), the plot, videos without a
face or without audio, and the errors."""

import csv
import subprocess

import numpy as np
import pytest
from matplotlib import image
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import InputError, JmtError
from pipeline.infer.predict import predict_video
from pipeline.tasks.au import AUS
from pipeline.tasks.expr import CLASSES


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/stage2/conftest.py

PRESENT = ["frame", "time", "visual_present", "audio_present"]
TASK_COLUMNS = {"va": ["valence", "arousal"],
                "expr": ["expression", *(f"p_{c.lower()}" for c in CLASSES)],
                "au": [*(a.lower() for a in AUS), *(f"p_{a.lower()}" for a in AUS)]}


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def demo_02(trained, tiny_corpus, tmp_path_factory):
    """The va checkpoint's prediction for the demo's test video (the face occluded for a second)."""
    return predict_video(tiny_corpus / "videos/batch2/demo_02.mp4", trained.path(trained.train.out),
                         tmp_path_factory.mktemp("demo_02"))


def test_predict_a_demo_video_shows_the_occlusion(demo_02):
    result = demo_02
    table = rows(result.csv)
    assert result.tasks == ["va"] and result.frames == len(table) == 60
    assert list(table[0]) == PRESENT + TASK_COLUMNS["va"]
    assert 0.6 < result.present["visual"] < 0.9          # the occluder hides the face for 1 s of 4
    assert result.present["visual"] == pytest.approx(np.mean([r["visual_present"] == "1" for r in table]))
    assert {r["visual_present"] for r in table} == {"0", "1"}
    assert all(-1 <= float(r["valence"]) <= 1 for r in table)                 # tasks.va.clip
    times = [float(r["time"]) for r in table]
    assert times[0] == 0 and np.allclose(np.diff(times), 1 / 15, atol=1e-3)  # the cache's own timestamps
    pixels = image.imread(result.png)
    assert pixels.shape[0] > 200 and pixels[..., :3].std() > 0.05


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Clips made by ffmpeg alone: the astronaut photo with a tone; the same without audio; a test
    pattern (no face) with a tone."""
    from PIL import Image
    from skimage import data

    folder = tmp_path_factory.mktemp("clips")
    Image.fromarray(data.astronaut()).resize((256, 256)).save(folder / "astronaut.png")
    photo = ["-loop", "1", "-framerate", "20", "-t", "2", "-i", str(folder / "astronaut.png")]
    tone = ["-f", "lavfi", "-t", "2", "-i", "sine=frequency=220"]
    enc = ["-c:v", "libx264", "-pix_fmt", "yuv420p"]
    run = lambda *args: subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)  # noqa: E731
    run(*photo, *tone, *enc, "-c:a", "aac", "-shortest", str(folder / "talk.mp4"))
    run(*photo, *enc, str(folder / "mute.mp4"))
    run("-f", "lavfi", "-t", "2", "-i", "testsrc=size=256x256:rate=20", *tone, *enc, "-c:a", "aac", "-shortest",
        str(folder / "pattern.mp4"))
    return folder


def test_predict_a_clip_not_made_by_the_generator(trained, clips, tmp_path):
    result = predict_video(clips / "talk.mp4", trained.path(trained.train.out), tmp_path)
    assert result.frames == 40 and result.present["visual"] == 1.0 and result.present["audio"] > 0.9


def test_predict_without_audio_still_predicts_and_the_cli_says_so(trained, clips, tmp_path):
    result = CliRunner().invoke(app, ["predict", str(clips / "mute.mp4"), "--checkpoint",
                                      str(trained.path(trained.train.out)), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "mute.mp4 (va): 40 frames, visual in 100%, audio in 0%" in " ".join(result.output.split())
    table = rows(tmp_path / "mute.csv")
    assert len(table) == 40 and all(r["audio_present"] == "0" for r in table)
    assert all(r["visual_present"] == "1" for r in table) and (tmp_path / "mute.png").is_file()
    assert all(np.isfinite(float(r[c])) for r in table for c in TASK_COLUMNS["va"])


def test_predict_without_a_face_still_predicts(trained, clips, tmp_path):
    result = predict_video(clips / "pattern.mp4", trained.path(trained.train.out), tmp_path)
    table = rows(result.csv)
    assert result.present["visual"] == 0.0 and len(table) == 40 and all(r["visual_present"] == "0" for r in table)
    # predicted from the audio where it is present; blank where no stream is (nothing to predict from)
    for r in table:
        cells = [r[c] for c in TASK_COLUMNS["va"]]
        assert all(np.isfinite(float(v)) for v in cells) if r["audio_present"] == "1" else cells == ["", ""]
    assert result.png.is_file()


def test_predict_writes_every_tasks_columns_and_one_panel_per_task(every_task, demo_02, tiny_corpus, tmp_path):
    result = predict_video(tiny_corpus / "videos/batch2/demo_02.mp4", every_task, tmp_path)
    table = rows(result.csv)
    assert result.tasks == ["va", "expr", "au"] and len(table) == 60
    assert list(table[0]) == PRESENT + TASK_COLUMNS["va"] + TASK_COLUMNS["expr"] + TASK_COLUMNS["au"]
    probs = np.array([[float(r[f"p_{c.lower()}"]) for c in CLASSES] for r in table])
    assert np.allclose(probs.sum(1), 1, atol=1e-3)                                  # softmax
    assert np.mean([r["expression"] == CLASSES[k] for r, k in zip(table, probs.argmax(1))]) > 0.95
    p_au = np.array([[float(r[f"p_{a.lower()}"]) for a in AUS] for r in table])
    decided = np.array([[int(r[a.lower()]) for a in AUS] for r in table])
    assert ((p_au >= 0) & (p_au <= 1)).all() and ((decided == 1) == (p_au >= 0.5)).mean() > 0.99
    # the presence columns are the stage-1 masks whatever the tasks: the same as the va model's
    va_only = rows(demo_02.csv)
    assert [r["visual_present"] for r in table] == [r["visual_present"] for r in va_only]
    assert [r["audio_present"] for r in table] == [r["audio_present"] for r in va_only]
    # three panels (va, expr, au) stacked: a taller figure than the one-task plot
    tall, short = image.imread(result.png), image.imread(demo_02.png)
    assert tall.shape[0] > 2 * short.shape[0] and tall[..., :3].std() > 0.05


def test_predict_errors(trained, tmp_path):
    with pytest.raises(InputError, match="file not found"):
        predict_video(tmp_path / "none.mp4", trained.path(trained.train.out), tmp_path)
    (tmp_path / "broken.mp4").write_bytes(b"junk")
    with pytest.raises(JmtError, match="broken.mp4"):
        predict_video(tmp_path / "broken.mp4", trained.path(trained.train.out), tmp_path)
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "broken.mp4"), "--checkpoint",
                                      str(trained.path(trained.train.out)), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "broken.mp4" in result.output


def test_a_backbones_weights_file_is_found_from_the_working_folder(tmp_path, monkeypatch):
    """The checkpoint keeps the training params, whose weights paths were relative to their
    folder; predict runs its stage 1 in a temporary folder, so it takes them from the working
    folder (the weights' hashes are checked against the checkpoint's afterwards)."""
    import yaml

    from pipeline.stage2.checkpoints import Checkpoint

    from ..conftest import REPO

    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["embed"]["streams"]["audio"] = {"name": "resnet18_logmel", "checkpoint": "weights/audio.pt"}
    monkeypatch.chdir(tmp_path)
    model = Checkpoint(path=tmp_path / "m.pt", head="jmt", head_kwargs={}, window=16, widths={}, streams=[],
                       _contents={"params": data})
    params = model.stage1_params(tmp_path, {"video": tmp_path / "v.mp4"})
    assert params.embed.streams["audio"].checkpoint == str(tmp_path / "weights" / "audio.pt")
    assert params.embed.streams["visual"].checkpoint is None


def test_predict_a_folder_and_a_glob_models_once_skips_finished_and_records_a_bad_file(trained, clips, tmp_path,
                                                                                       monkeypatch):
    """Several videos: stage 1 once over all of them (each model built once), one folder per
    video with the same CSV as a one-video call, a broken file recorded and skipped, a rerun
    skipping the finished videos, the CLI's summary."""
    import json
    import shutil

    from pipeline.stage1 import embed as embed_stage
    from pipeline.infer.predict import expand_videos, folder_names, predict_videos

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("talk.mp4", "mute.mp4"):
        shutil.copy(clips / name, folder / name)
    (folder / "broken.mp4").write_bytes(b"junk")
    (folder / "notes.txt").write_text("not a video")
    assert [v.name for v in expand_videos([folder])] == ["broken.mp4", "mute.mp4", "talk.mp4"]
    assert [v.name for v in expand_videos([folder / "t*.mp4", folder / "talk.mp4"])] == ["talk.mp4"]   # once
    assert folder_names([folder / "a.mp4", tmp_path / "a.mp4", folder / ".b.mp4"]) == ["a", "a_2", "_b"]
    with pytest.raises(InputError, match="nothing.mp4: no such file or folder"):
        expand_videos([folder / "nothing.mp4"])
    with pytest.raises(InputError, match=r"z\*.mp4: matches no file"):
        expand_videos([folder / "z*.mp4"])

    built = []
    real = embed_stage.Backbones.__init__
    monkeypatch.setattr(embed_stage.Backbones, "__init__",
                        lambda self, *a, **k: (built.append(1), real(self, *a, **k))[1])
    ckpt = trained.path(trained.train.out)
    out = tmp_path / "out"
    report = predict_videos([folder], ckpt, out)
    assert sorted(report["done"]) == ["mute", "talk"] and report["already_done"] == []
    assert [s["name"] for s in report["skipped"]] == ["broken"] and "broken.mp4" in report["skipped"][0]["error"]
    assert len(built) == 1                                       # the backbones built once for all videos
    assert not (out / ".jmt-work").exists() and json.loads((out / "report.json").read_text()) == report
    one = predict_video(folder / "talk.mp4", ckpt, tmp_path / "one")
    assert rows(out / "talk" / "talk.csv") == rows(one.csv)      # the same as a one-video call
    assert (out / "talk" / "talk.png").is_file() and (out / "talk" / "done.json").is_file()

    again = predict_videos([folder], ckpt, out)                  # rerun: the finished ones skipped
    assert again["done"] == {} and sorted(again["already_done"]) == ["mute", "talk"]
    assert [s["name"] for s in again["skipped"]] == ["broken"]
    (folder / "mute.mp4").touch()                                # a changed video is done again
    os_time = (folder / "mute.mp4").stat().st_mtime_ns
    assert json.loads((out / "mute" / "done.json").read_text())["mtime_ns"] != os_time
    assert sorted(predict_videos([folder], ckpt, out)["done"]) == ["mute"]

    result = CliRunner().invoke(app, ["predict", str(folder / "*.mp4"), "--checkpoint", str(ckpt),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "0 done, 2 already done, 1 skipped" in result.output and "broken.mp4" in result.output
