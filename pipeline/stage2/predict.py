"""`jmt predict VIDEO --checkpoint CKPT --out DIR`: every task's outputs for one new video.

Runs stage 1 for that one video with the checkpoint's own stage-1 params (same detector,
crops, spectrogram and a backbone per stream; the backbones' weights are checked against the
ones the model was trained on) into a temporary cache that is removed afterwards, then the model
over overlapping windows, streamed from the cache a batch at a time. Writes `<video>.csv`
(frame, time, each stream's presence `<stream>_present`, then each task's outputs: valence and
arousal; the most probable expression and each class's probability; each AU's 0/1 and
probability) and `<video>.png` (one panel per task, the frames lacking a stream shaded). A video
with no face or no audio still gets predictions: the presence columns show where.
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
from pipeline.stage2 import checkpoints
from pipeline.stage2.data import load_entries, mask_key, predict_entry
from pipeline.stage2.evaluate import write_predictions
from pipeline.tasks import Task, tasks_of
from pipeline.tasks.au import AUS
from pipeline.tasks.expr import CLASSES


@dataclass
class Prediction:
    csv: Path
    png: Path
    frames: int
    present: dict[str, float]   # stream -> share of frames where it is present
    tasks: list[str]


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
    # a backbone's weights file was relative to the training params' folder, which the checkpoint
    # does not record: taken from the working folder (run from there); its hash is checked after
    data["embed"]["streams"] = {name: {**bp, "checkpoint": str(Path(bp["checkpoint"]).resolve())}
                                if bp.get("checkpoint") else bp for name, bp in data["embed"]["streams"].items()}
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
        tasks = tasks_of(model.tasks, params.tasks)
        # never preloaded: the windows stream from the file a batch at a time, so a long video
        # takes memory for one batch of windows and its (n, width) outputs (docs/measurements.md)
        entry = load_entries(params.path(params.embed.out), None, model.tasks)[0]
        window = ckpt["params"]["train"]["window"]
        raw = predict_entry(model, entry, window, window // 2, device)
        outputs = {t: task.postprocess(task.activate(raw[t])) for t, task in tasks.items()}
        with cache.open_entry(cache.entry_path(params.path(params.embed.out), entry.name)) as f:
            times = f["timestamps"][...]
            present = {s: f[mask_key(s)][...] for s in entry.streams}
    csv_path, png_path = out / f"{video.stem}.csv", out / f"{video.stem}.png"
    write_predictions(csv_path, tasks, outputs, times,
                      extra={f"{s}_present": [str(int(v)) for v in m] for s, m in present.items()})
    plot(png_path, times, tasks, outputs, present, title=f"{video.name} ({ckpt['head']['name']})")
    return Prediction(csv_path, png_path, len(times), {s: float(m.mean()) for s, m in present.items()}, list(tasks))


def plot(path: Path, times: np.ndarray, tasks: dict[str, Task], outputs: dict[str, np.ndarray],
         present: dict[str, np.ndarray], title: str) -> None:
    """One panel per task over time (valence and arousal; expression probabilities; AU
    probabilities), the stretches where a stream is missing shaded."""
    plt = pyplot()
    fig, axes = plt.subplots(len(tasks), 1, figsize=(10, 3.2 * len(tasks)), sharex=True, constrained_layout=True,
                             squeeze=False)
    for ax, (name, y) in zip(axes[:, 0], outputs.items()):
        if name == "va":
            ax.plot(times, y[:, 0], label="valence", color="tab:orange")
            ax.plot(times, y[:, 1], label="arousal", color="tab:purple")
            ax.set(ylim=(-1.05, 1.05), ylabel="valence / arousal")
            ax.axhline(0, color="grey", lw=0.5)
            shade_missing(ax, times, present)
            ax.legend(loc="upper right", ncol=6, fontsize=8)
        else:  # class or AU probabilities as an image: rows = classes / AUs
            rows = CLASSES if name == "expr" else AUS if name == "au" else tasks[name].outputs
            step = float(np.median(np.diff(times))) if len(times) > 1 else 0.04
            im = ax.imshow(y.T, aspect="auto", origin="lower", vmin=0, vmax=1, cmap="magma",
                           extent=(times[0], times[-1] + step, -0.5, len(rows) - 0.5), interpolation="nearest")
            ax.set_yticks(range(len(rows)), rows, fontsize=7)
            ax.set_ylabel(f"{name} probability")
            fig.colorbar(im, ax=ax, fraction=0.02)
    axes[0, 0].set_title(title)
    axes[-1, 0].set_xlabel("time (s)")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def command(
    video: Annotated[Path, typer.Argument(help="A video file (any format ffmpeg reads).")],
    checkpoint: Annotated[Path, typer.Option(help="A checkpoint from `jmt train`.")] = Path("models/model.pt"),
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("predictions"),
) -> None:
    """Predict every task of a checkpoint for one new video (stage 1 + the model)."""
    result = predict_video(video, checkpoint, out)
    shares = ", ".join(f"{s} in {r:.0%}" for s, r in result.present.items())
    console.print(f"[green]predict[/] {video.name} ({', '.join(result.tasks)}): {result.frames} frames, {shares} "
                  f"-> {result.csv}, {result.png}", highlight=False)
