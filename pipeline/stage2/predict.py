"""`jmt predict VIDEO --checkpoint CKPT --out DIR`: valence/arousal for one new video.

Runs stage 1 for that one video with the checkpoint's own stage-1 params (same detector,
crops, spectrogram and backbones; the backbones' weights are checked against the ones the
model was trained on) into a temporary cache that is removed afterwards, then the model
over overlapping windows, streamed from the cache a batch at a time. Writes `<video>.csv`
(frame, time, valence, arousal, face_found, audio_found) and `<video>.png` (both curves,
with the frames lacking a face or audio shaded). A video with no face or no audio still
gets predictions: the masks show where.
"""

from __future__ import annotations

import csv
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from pipeline import cache
from pipeline.config import Params, parse_params
from pipeline.console import console
from pipeline.device import resolve_device
from pipeline.errors import InputError
from pipeline.plots import pyplot, shade_missing
from pipeline.stage2.data import load_split, predict_entry
from pipeline.stage2 import checkpoints
from pipeline.stage2.evaluate import postprocess


@dataclass
class Prediction:
    csv: Path
    png: Path
    frames: int
    face_rate: float
    audio_rate: float


def _stage1_params(ckpt: dict, work: Path, video: Path) -> Params:
    """The checkpoint's params, pointed at a one-video manifest and a temporary cache."""
    data = ckpt["params"]
    manifest = work / "one.csv"
    with open(manifest, "w", newline="") as f:  # csv quotes a path holding commas or quotes
        # the entry's name is fixed (the outputs are named after the video): any file name works
        csv.writer(f).writerows([["video", "annotation", "split", "name"], [str(video.resolve()), "", "test", "video"]])
    data["corpus"] = {**data["corpus"], "layout": "manifest", "manifest": str(manifest)}
    for stage in ("faces", "audio", "embed"):
        data[stage] = {**data[stage], "out": str(work / stage), "on_error": "fail"}
    return parse_params(data, source="checkpoint params", root=work)


def predict_video(video: Path, checkpoint: Path, out: Path) -> Prediction:
    """Predicts one video; returns where the CSV and the plot went."""
    from pipeline.stage1.audio import run_audio
    from pipeline.stage1.embed import run_embed
    from pipeline.stage1.faces import run_faces

    video = Path(video)
    if not video.is_file():
        raise InputError(f"{video}: file not found")
    # read (never executed) before any work: its params say how to run stage 1 for the video
    ckpt = checkpoints.read(Path(checkpoint))
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="jmt-predict-") as tmp:
        work = Path(tmp)
        params = _stage1_params(ckpt, work, video)
        run_faces(params)
        run_audio(params)
        run_embed(params)
        checkpoints.check_cache(ckpt, Path(checkpoint), params.path(params.embed.out))  # the same backbones
        model = checkpoints.build(ckpt, Path(checkpoint))
        device = resolve_device(params.train.device)
        model.to(device).eval()
        # never preloaded: the windows stream from the file a batch at a time, so a long video
        # takes memory for one batch of windows and its (n, 2) predictions (docs/measurements.md)
        entry = load_split(params.path(params.embed.out), "test", preload_max_mb=0)[0]
        window = ckpt["params"]["train"]["window"]
        pred = postprocess(predict_entry(model, entry, window, window // 2, device), params.evaluate)
        with cache.open_entry(cache.entry_path(params.path(params.embed.out), entry.name)) as f:
            times = f["timestamps"][...]
            face, audio = f["visual_mask"][...], f["audio_mask"][...]
    csv_path, png_path = out / f"{video.stem}.csv", out / f"{video.stem}.png"
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["frame", "time", "valence", "arousal", "face_found", "audio_found"])
        for i in range(len(pred)):
            w.writerow([i, f"{times[i]:.3f}", f"{pred[i, 0]:.4f}", f"{pred[i, 1]:.4f}", int(face[i]), int(audio[i])])
    plot(png_path, times, pred, face, audio, title=f"{video.name} ({ckpt['head']['name']})")
    return Prediction(csv_path, png_path, len(pred), float(face.mean()), float(audio.mean()))


def plot(path: Path, times: np.ndarray, pred: np.ndarray, face: np.ndarray, audio: np.ndarray,
         title: str) -> None:
    """Valence and arousal over time; frames without a face (red) or audio (blue) shaded."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 3.5), constrained_layout=True)
    ax.plot(times, pred[:, 0], label="valence", color="tab:orange")
    ax.plot(times, pred[:, 1], label="arousal", color="tab:purple")
    shade_missing(ax, times, face, audio)
    ax.set(ylim=(-1.05, 1.05), xlabel="time (s)", ylabel="prediction", title=title)
    ax.axhline(0, color="grey", lw=0.5)
    ax.legend(loc="upper right", ncol=4, fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def command(
    video: Annotated[Path, typer.Argument(help="A video file (any format ffmpeg reads).")],
    checkpoint: Annotated[Path, typer.Option(help="A checkpoint from `jmt train`.")] = Path("models/model.pt"),
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("predictions"),
) -> None:
    """Predict valence and arousal for one new video (stage 1 + the model)."""
    result = predict_video(video, checkpoint, out)
    console.print(f"[green]predict[/] {video.name}: {result.frames} frames, face in {result.face_rate:.0%}, "
                  f"audio in {result.audio_rate:.0%} -> {result.csv}, {result.png}", highlight=False)
