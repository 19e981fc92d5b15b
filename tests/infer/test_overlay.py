"""`jmt predict --overlay`: the video with the face box and the outputs drawn beside it. Every file
is checked with ffprobe and frames decoded by ffmpeg: the frame count the decoder reads (not the
container's claim), the input's height and rate, an audio track exactly when the input has one,
the box drawn where a face was found and nothing where none was, the bars of a multi-task model
as long as its probabilities, the folder form, a variable-frame-rate input."""

import csv
import json
import shutil
import subprocess
import warnings

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.console import console
from pipeline.media import frame_times
from pipeline.infer.overlay import BAR, BG, HIGHLIGHT, POINT, Panel, write_overlay
from pipeline.infer.predict import predict_videos
from pipeline.tasks.expr import CLASSES


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/stage2/conftest.py


def streams(path) -> list[dict]:
    """ffprobe's streams of a file, the video's frames counted by decoding them."""
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries",
                          "stream=codec_type,codec_name,width,height,avg_frame_rate,r_frame_rate,nb_read_frames",
                          "-of", "json", str(path)], capture_output=True, text=True, check=True).stdout
    return json.loads(out)["streams"]


def video_of(path) -> dict:
    return next(s for s in streams(path) if s["codec_type"] == "video")


def has_audio(path) -> bool:
    return any(s["codec_type"] == "audio" for s in streams(path))


def frame(path, k: int, height: int) -> np.ndarray:
    """Frame k of a video, decoded by ffmpeg: (height, width, 3) int."""
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-vf", f"select=eq(n\\,{k})", "-vsync", "0",
                          "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(height, -1, 3).astype(int)


def rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def ffmpeg(*args) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *map(str, args)], check=True)


def test_cli_overlay_of_a_demo_video_keeps_every_frame_the_audio_and_draws_the_box_only_where_found(
        trained, tiny_corpus, tmp_path):
    video = tiny_corpus / "videos/batch2/demo_02.mp4"   # the face occluded for a second
    overlay = tmp_path / "demo_02_overlay.mp4"
    result = CliRunner().invoke(app, ["predict", str(video), "--checkpoint", str(trained.path(trained.train.out)),
                                      "--out", str(tmp_path / "pred"), "--overlay", str(overlay)])
    assert result.exit_code == 0, result.output
    assert str(overlay) in "".join(result.output.split())
    src, out = video_of(video), video_of(overlay)
    assert int(out["nb_read_frames"]) == int(src["nb_read_frames"]) == 60
    assert out["height"] == src["height"] and out["width"] == src["width"] + Panel(240, ["va"]).width
    assert (out["avg_frame_rate"], out["r_frame_rate"]) == (src["avg_frame_rate"], src["r_frame_rate"]) == ("15/1",) * 2
    assert has_audio(video) and [s["codec_name"] for s in streams(overlay) if s["codec_type"] == "audio"] == ["aac"]

    table = rows(tmp_path / "pred" / "demo_02.csv")
    found = [i for i, r in enumerate(table) if r["visual_present"] == "1"]
    missing = [i for i, r in enumerate(table) if r["visual_present"] == "0"]
    assert found and missing
    w, h = src["width"], src["height"]
    for k in (found[len(found) // 2], missing[len(missing) // 2]):
        a, b = frame(video, k, h), frame(overlay, k, h)
        changed = np.abs(a - b[:, :w]).max(-1) > 60                 # (h, w): beyond H.264's noise
        if k in missing:                                            # no box where no face was found
            assert changed.sum() == 0, k
            continue
        ys, xs = np.nonzero(changed)
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max(), ys.max()
        assert x1 - x0 > 20 and y1 - y0 > 20                        # a face-sized rectangle ...
        assert changed[y0 + 4:y1 - 3, x0 + 4:x1 - 3].sum() == 0     # ... outlined, its inside untouched
        assert changed.sum() > 2 * ((x1 - x0) + (y1 - y0))          # all four sides, 2 px wide
    panel_0, panel_k = frame(overlay, 0, h)[:, w:], frame(overlay, found[-1], h)[:, w:]
    assert panel_0.std() > 10 and np.abs(panel_0 - panel_k).max() > 60   # drawn, and per frame


@pytest.mark.parametrize("height", [240, 480, 720])
def test_panel_scales_with_the_frame_and_draws_the_values_where_they_belong(height):
    panel = Panel(height, ["va", "expr", "au"])
    assert panel.width == pytest.approx(356 * height / 240, abs=2) and panel.small.size >= 10
    expr = np.array([0.05, 0.1, 0.05, 0.05, 0.6, 0.05, 0.05, 0.05])
    au = np.linspace(0.05, 0.95, 12)
    img = np.asarray(panel.draw(1.0, True, {"va": np.array([0.5, -0.5]), "expr": expr, "au": au})).astype(int)

    def length(task, k, colour):   # pixels of `colour` along row k's middle, within its bar's span
        _, rows, (b0, b1), _ = panel.rows[task]
        y = round(sum(rows[k]) / 2)
        line = img[y, round(b0):round(b1) + 1]
        return int((np.abs(line - colour).max(-1) < 8).sum()), b1 - b0

    n, span = length("expr", 4, HIGHLIGHT)                        # Happiness: the most probable, lit
    assert n == pytest.approx(0.6 * span, abs=2)
    assert length("expr", 0, HIGHLIGHT)[0] == 0 and length("expr", 1, BAR)[0] == pytest.approx(0.1 * span, abs=2)
    for k, p in enumerate(au):                                    # AUs at or above 0.5 lit, the others not
        (lit, au_span), plain = length("au", k, HIGHLIGHT), length("au", k, BAR)[0]
        assert (lit if p >= 0.5 else plain) == pytest.approx(p * au_span, abs=2), (k, lit, plain)
        assert (plain if p >= 0.5 else lit) == 0
    ys, xs = np.nonzero((np.abs(img - POINT).max(-1) < 8))       # the current point: right, below the centre
    (cx, cy), r, _ = panel.planes["va"]
    assert np.mean(xs) == pytest.approx(cx + 0.5 * r, abs=2) and np.mean(ys) == pytest.approx(cy + 0.5 * r, abs=2)
    assert (np.abs(np.asarray(Panel(height, []).draw(0, False, {})) - BG).max(-1) > 0).any()


def test_no_audio_a_variable_frame_rate_and_missing_predictions(tiny_corpus, tmp_path):
    """write_overlay alone (outputs made up): an input without audio gives an output without
    audio; a VFR input keeps every frame at its average rate (a warning says how far frames
    move); frames with no prediction (arrays too short, NaN) are drawn without it."""
    video = tiny_corpus / "videos/batch1/demo_00.mp4"
    mute, vfr = tmp_path / "mute.mp4", tmp_path / "vfr.mp4"
    ffmpeg("-i", video, "-an", "-c:v", "copy", mute)
    ffmpeg("-i", video, "-vf", r"select=not(mod(n\,3))+lt(mod(n\,7)\,2)", "-vsync", "vfr", "-c:v", "libx264",
           "-c:a", "aac", vfr)
    rng = np.random.default_rng(0)
    for src, vfr_input in ((mute, False), (vfr, True)):
        times = frame_times(src).times
        n = len(times)
        outputs = {"va": rng.uniform(-1, 1, (n - 3, 2)), "expr": rng.dirichlet(np.ones(8), n),
                   "au": rng.uniform(0, 1, (n, 12))}
        outputs["expr"][5] = np.nan
        boxes = np.tile([40.0, 30, 120, 130], (n - 1, 1))
        boxes[::4] = np.nan
        out = tmp_path / f"overlay_{src.name}"
        with warnings.catch_warnings():
            warnings.simplefilter("error")   # a note on the console, never a bare Python warning
            with console.capture() as said:
                result = write_overlay(src, out, times=times, outputs=outputs, boxes=boxes)
        assert ("variable frame rate" in said.get()) == vfr_input
        got, want = video_of(out), video_of(src)
        assert int(got["nb_read_frames"]) == int(want["nb_read_frames"]) == n == result.frames
        assert got["avg_frame_rate"] == want["avg_frame_rate"] == result.rate and got["height"] == want["height"]
        assert has_audio(out) == has_audio(src) == result.audio == vfr_input
        assert (result.max_shift > 0.5 / 15) == vfr_input
    assert n < 60    # the VFR copy dropped frames


def test_folder_form_with_a_multi_task_model_draws_its_bars(every_task, tiny_corpus, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(tiny_corpus / "videos/batch1/demo_00.mp4", folder / "talk.mp4")
    ffmpeg("-i", tiny_corpus / "videos/batch1/demo_01.mp4", "-an", "-c:v", "copy", folder / "mute.mp4")
    out, overlays = tmp_path / "out", tmp_path / "overlays"
    result = CliRunner().invoke(app, ["predict", str(folder), "--checkpoint", str(every_task), "--out", str(out),
                                      "--overlay", str(overlays)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert sorted(report["done"]) == ["mute", "talk"] and report["skipped"] == []
    assert sorted(p.name for p in overlays.iterdir()) == ["mute.mp4", "talk.mp4"]
    panel = Panel(240, ["va", "expr", "au"])
    for name in ("mute", "talk"):
        src, got = video_of(folder / f"{name}.mp4"), video_of(overlays / f"{name}.mp4")
        assert int(got["nb_read_frames"]) == int(src["nb_read_frames"]) == report["done"][name]["frames"]
        assert (got["height"], got["width"]) == (src["height"], src["width"] + panel.width)
        assert has_audio(overlays / f"{name}.mp4") == (name == "talk")

    # the expression bars in frame k: the most probable class's bar lit, as long as its probability
    table, k, w = rows(out / "talk" / "talk.csv"), 30, src["width"]
    probs = np.array([float(table[k][f"p_{c.lower()}"]) for c in CLASSES])
    img = frame(overlays / "talk.mp4", k, 240)[:, w:]
    _, spans, (b0, b1), _ = panel.rows["expr"]
    top = int(np.argmax(probs))
    for c, (a, b) in enumerate(spans):
        line = img[round((a + b) / 2), round(b0) + 2:round(b1) - 1]
        lit = int((np.abs(line - HIGHLIGHT).max(-1) < 40).sum())
        if c == top:
            assert lit == pytest.approx(probs[c] * (b1 - b0), abs=4), (c, lit, probs[c])
        else:
            assert lit == 0
    au_cols = img[:, panel.cols["au"][0]:]
    assert (np.abs(au_cols - BAR).max(-1) < 40).sum() > 20        # AU bars drawn too

    # a rerun redoes only the video whose overlay is gone
    (overlays / "mute.mp4").unlink()
    again = predict_videos([folder], every_task, out, overlay=overlays)
    assert sorted(again["done"]) == ["mute"] and again["already_done"] == ["talk"]
    assert video_of(overlays / "mute.mp4")["nb_read_frames"] == video_of(folder / "mute.mp4")["nb_read_frames"]
