"""`jmt predict` on videos as people shoot them (issue 25): phone clips stored turned with a display
matrix, a sparse-frame-rate AVI, a truncated file, a clip with nothing to see or hear, relative
and odd output paths, a folder holding images and audio, the engine and thread options."""

import csv
import json
import shutil
import subprocess

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import DAMAGED_EXIT, InputError
from pipeline.infer.model import from_checkpoint
from pipeline.infer.predict import plan_outputs, predict_video, predict_videos

from ..stage1.helpers import phone_copy

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/stage2/conftest.py


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def ffmpeg(*args):
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def demo_02(tiny_corpus):
    return tiny_corpus / "videos/batch2/demo_02.mp4"   # a face, a voice, the face occluded for a second


@pytest.fixture(scope="module")
def phone_clips(demo_02, tmp_path_factory):
    """demo_02 re-encoded as stored by phones: upright (the reference, same encoder), turned each
    way with a display matrix that shows it upright, and one mirrored as well."""
    folder = tmp_path_factory.mktemp("phone")
    for rotate, mirror in ((0, False), (90, False), (180, False), (270, False), (90, True)):
        phone_copy(demo_02, folder / f"r{rotate}{'m' if mirror else ''}.mp4", rotate, mirror=mirror)
    return folder


def test_phone_rotated_clips_give_the_upright_clips_faces_and_predictions(trained, phone_clips, tmp_path):
    """Before jmt applied display matrices, a turned clip was decoded turned and scaled back to
    its stored size: squeezed faces, other outputs. Now every copy matches the upright one."""
    report = predict_videos([phone_clips], trained.path(trained.train.out), tmp_path)
    assert sorted(report["done"]) == ["r0", "r180", "r270", "r90", "r90m"] and not report["skipped"]
    ref = rows(tmp_path / "r0" / "r0.csv")
    assert len(ref) == 60 and 0.6 < np.mean([r["visual_present"] == "1" for r in ref]) < 0.9
    for name in ("r90", "r180", "r270", "r90m"):
        got = rows(tmp_path / name / f"{name}.csv")
        assert len(got) == len(ref)
        same_face = np.mean([a["visual_present"] == b["visual_present"] for a, b in zip(got, ref)])
        assert same_face >= 58 / 60, name   # the occluder's edges may flip a frame or two (codec noise)
        both = [(a, b) for a, b in zip(got, ref) if a["valence"] and b["valence"]]
        diff = np.abs([[float(a[k]) - float(b[k]) for k in ("valence", "arousal")] for a, b in both])
        assert diff.mean() < 0.02 and diff.max() < 0.1, (name, diff.mean(), diff.max())


def test_the_faces_cache_records_the_turn_and_finds_the_same_faces(trained, phone_clips, tmp_path):
    """The faces of every turned copy are where the upright clip's are, to the pixel (a squeezed
    frame, as decoded before, puts a 320x240 picture's face boxes elsewhere)."""
    import h5py

    from pipeline import cache
    from pipeline.stage1.faces import run_faces

    names = ("r0", "r90", "r180", "r270", "r90m")
    params = from_checkpoint(trained.path(trained.train.out)).stage1_params(
        tmp_path, {n: phone_clips / f"{n}.mp4" for n in names})
    run_faces(params)
    faces = {}
    for n in names:
        with h5py.File(cache.entry_path(params.path(params.faces.out), n)) as f:
            faces[n] = f["found"][...], f["boxes"][...]
    for n in names[1:]:
        assert (faces[n][0] == faces["r0"][0]).mean() >= 58 / 60, n
        both = faces[n][0] & faces["r0"][0]
        assert np.median(np.abs(faces[n][1][both] - faces["r0"][1][both])) < 2, n   # px
    with h5py.File(cache.entry_path(params.path(params.faces.out), "r90m")) as f:
        assert (f.attrs["rotation"], bool(f.attrs["mirrored"])) == (270, True)
        assert (f.attrs["width"], f.attrs["height"]) == (320, 240)
        assert f.attrs["orientation"] == "rotated 270 degrees clockwise, mirrored (display matrix)"
    with h5py.File(cache.entry_path(params.path(params.faces.out), "r0")) as f:
        assert (f.attrs["rotation"], bool(f.attrs["mirrored"]), f.attrs["orientation"]) == (0, False, "as stored")


def test_a_sparse_frame_rate_avi_is_predicted_frame_for_frame(trained, demo_02, tmp_path):
    """The container lists every slot of its rate, the file holds one frame in six (like OpenCV's
    tree.avi): the decoder's frames are the frames; the listed count is no ground to refuse it."""
    sparse = tmp_path / "sparse.avi"
    ffmpeg("-i", str(demo_02), "-vf", r"select=not(mod(n\,6))", "-fps_mode", "passthrough", "-c:v", "mpeg4",
           "-c:a", "pcm_s16le", str(sparse))
    listed = json.loads(subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                                        "stream=nb_frames", "-of", "json", str(sparse)], capture_output=True,
                                       text=True, check=True).stdout)["streams"][0]["nb_frames"]
    result = predict_video(sparse, trained.path(trained.train.out), tmp_path / "out")
    assert result.frames == 10 < int(listed) and result.damaged is None
    times = [float(r["time"]) for r in rows(result.csv)]
    assert np.allclose(np.diff(times), 0.4, atol=1e-3)   # each frame at its own time: 6 / 15 fps apart


def test_a_truncated_video_gives_its_decoded_frames_a_warning_and_exit_code_3(trained, demo_02, tmp_path):
    fast = tmp_path / "fast.mp4"
    ffmpeg("-i", str(demo_02), "-c", "copy", "-movflags", "+faststart", str(fast))
    data = fast.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 6 // 10])
    result = CliRunner().invoke(app, ["predict", str(cut), "--checkpoint", str(trained.path(trained.train.out)),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == DAMAGED_EXIT, result.output
    said = " ".join(result.output.split())
    assert "warning" in said and "cut.mp4: damaged (truncated or corrupt)" in said
    table = rows(tmp_path / "out" / "cut.csv")
    assert 10 < len(table) < 60   # the frames that decoded, each predicted


def test_a_clip_with_nothing_to_see_or_hear_gets_blank_outputs(trained, tmp_path):
    """No face and no voice: the model has no input at all, so no confident-looking values."""
    clip = tmp_path / "street.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=256x256:rate=20", "-t", "2", "-c:v", "libx264", "-pix_fmt",
           "yuv420p", str(clip))
    result = CliRunner().invoke(app, ["predict", str(clip), "--checkpoint", str(trained.path(trained.train.out)),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "no stream present in 100% of the frames" in " ".join(result.output.split())
    table = rows(tmp_path / "out" / "street.csv")
    assert len(table) == 40 and all(r["visual_present"] == r["audio_present"] == "0" for r in table)
    assert all(r["valence"] == r["arousal"] == "" for r in table)


def test_relative_outputs_reruns_and_overlay_paths(trained, demo_02, tmp_path, monkeypatch):
    """A glob with the default (relative) --out; a rerun keeps the earlier skip records; an overlay
    folder that is --out itself, or a slash-ended folder that does not exist yet."""
    ckpt = str(trained.path(trained.train.out))
    clips = tmp_path / "real"
    clips.mkdir()
    shutil.copy(demo_02, clips / "a.mp4")
    (clips / "bad.mp4").write_bytes(b"junk")
    (clips / "still.png").write_bytes(b"not read")
    (clips / "voice.wav").write_bytes(b"not read")
    monkeypatch.chdir(tmp_path)
    first = CliRunner().invoke(app, ["predict", "real/*.mp4", "--checkpoint", ckpt])
    assert first.exit_code == 0, first.output
    assert (tmp_path / "predictions" / "a" / "a.csv").is_file()
    report = json.loads((tmp_path / "predictions" / "report.json").read_text())
    assert [s["name"] for s in report["skipped"]] == ["bad"]
    (clips / "bad.mp4").unlink()
    again = CliRunner().invoke(app, ["predict", "real", "--checkpoint", ckpt])   # the folder: images noted
    assert again.exit_code == 0, again.output
    report = json.loads((tmp_path / "predictions" / "report.json").read_text())
    assert report["already_done"] == ["a"] and report["skipped"] == []
    assert [s["name"] for s in report["earlier_skipped"]] == ["bad"]           # not lost
    assert sorted(r["file"].split("/")[-1] for r in report["ignored"]) == ["still.png", "voice.wav"]
    assert "2 file(s) in the folder(s) are not videos" in " ".join(again.output.split())

    one = CliRunner().invoke(app, ["predict", "real/a.mp4", "--checkpoint", ckpt, "--out", "out/f",
                                   "--overlay", "out/f/"])
    assert one.exit_code == 0, one.output
    assert (tmp_path / "out/f/a.csv").is_file() and (tmp_path / "out/f/a.mp4").is_file()
    two = CliRunner().invoke(app, ["predict", "real/a.mp4", "--checkpoint", ckpt, "--out", "result.csv",
                                   "--overlay", "new/folder/"])
    assert two.exit_code == 0, two.output
    assert (tmp_path / "result.csv").is_file() and (tmp_path / "result.png").is_file()
    assert (tmp_path / "new/folder/a.mp4").is_file() and not (tmp_path / "result.csv").is_dir()


def test_output_paths_that_cannot_work_fail_before_any_work(tmp_path):
    video = tmp_path / "v.mp4"
    (tmp_path / "taken.txt").write_text("x")
    assert plan_outputs(video, tmp_path / "o", tmp_path / "o").overlay == tmp_path / "o" / "v.mp4"
    assert plan_outputs(video, tmp_path / "r.csv", None).csv == tmp_path / "r.csv"
    assert plan_outputs(None, tmp_path / "o", tmp_path / "ov").overlay == tmp_path / "ov"
    cases = [((video, tmp_path / "taken.txt", None), "an existing file; give a folder or a .csv file"),
             ((None, tmp_path / "r.csv", None), "several videos write one folder each"),
             ((None, tmp_path / "o", tmp_path / "o.mp4"), "several videos write one overlay each"),
             ((video, tmp_path / "o", tmp_path / "taken.txt"), "an existing file that is not a video"),
             ((video, tmp_path / "o", video), "that is the input video")]
    for args, message in cases:
        with pytest.raises(InputError, match=message):
            plan_outputs(*args)
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "missing.mp4"), "--out",
                                      str(tmp_path / "taken.txt")])
    assert result.exit_code == 2 and "taken.txt: an existing file" in result.output   # before the checkpoint


def test_local_engine_and_threads_reach_stage_1(trained, demo_02, tmp_path, monkeypatch):
    """`--engine local` for one file: Ray is never started, whatever the checkpoint's run.engine;
    `--threads` sets stage 1's threads per unit and torch's (restored after)."""
    from pipeline import engine

    ckpt = torch.load(trained.path(trained.train.out), weights_only=True)
    ckpt["params"]["run"]["engine"] = "ray"
    path = tmp_path / "ray.pt"
    torch.save(ckpt, path)
    monkeypatch.setattr(engine, "connect", lambda *a, **k: pytest.fail("Ray was started"))
    before = torch.get_num_threads()
    result = predict_video(demo_02, path, tmp_path / "out", engine="local", threads=2)
    assert result.frames == 60 and torch.get_num_threads() == before
    model = from_checkpoint(path)
    run_before = json.dumps(model._contents["params"], sort_keys=True)
    params = model.stage1_params(tmp_path, {"v": demo_02}, threads=3)
    assert params.run.faces.cpus == params.run.audio.cpus == params.run.embed.cpus == 3
    assert json.dumps(model._contents["params"], sort_keys=True) == run_before   # the checkpoint's own dict is not edited
