"""`jmt predict VIDEO... --checkpoint CKPT --out DIR`: every task's outputs for new videos.

Runs stage 1 for the videos with the checkpoint's own stage-1 params (same detector, crops,
spectrogram and a backbone per stream; the backbones' weights are checked against the ones the
model was trained on), then the model over overlapping windows, streamed from the cache a batch
at a time. Writes `<video>.csv` (frame, time, each stream's presence `<stream>_present`, then
each task's outputs: valence and arousal; the most probable expression and each class's
probability; each AU's 0/1 and probability) and `<video>.png` (one panel per task, the frames
lacking a stream shaded). A video with no face or no audio still gets predictions: the presence
columns show where. `--overlay` also draws them on the video (stage2/overlay.py).

One video file: into `DIR`, from a temporary cache; an error stops it. Several videos, folders or
globs (`predict_videos`): stage 1 once over all of them (MTCNN and the backbones loaded once; on
Ray with `--engine ray`), one folder per video with a `done.json`, a video already done with the
same checkpoint skipped on a rerun, a bad video recorded in `DIR/report.json` and skipped.
"""
from __future__ import annotations

import csv
import glob
import hashlib
import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from pipeline import cache
from pipeline.config import Params, parse_params
from pipeline.console import console, progress
from pipeline.corpus.entries import VIDEO_SUFFIXES
from pipeline.device import resolve_device
from pipeline.errors import InputError, JmtError
from pipeline.plots import pyplot, shade_missing
from pipeline.stage2 import checkpoints, export
from pipeline.stage2.data import load_entries, mask_key, predict_entry
from pipeline.stage2.evaluate import write_predictions
from pipeline.stage2.overlay import write_overlay
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
    overlay: Path | None = None  # the overlay video (`--overlay`), when asked for


def _stage1_params(ckpt: dict, work: Path, videos: dict[str, Path], *, on_error: str = "fail",
                   engine: str | None = None) -> Params:
    """The checkpoint's params, pointed at a manifest of `videos` (entry name -> file) and a cache
    under `work`; `engine` (local | ray) overrides the checkpoint's `run.engine`."""
    data = ckpt["params"]
    manifest = work / "videos.csv"
    with open(manifest, "w", newline="") as f:  # csv quotes a path holding commas or quotes
        csv.writer(f).writerows([["video", "annotation", "split", "name"],
                                 *([str(v.resolve()), "", "test", name] for name, v in videos.items())])
    data["corpus"] = {**data["corpus"], "layout": "manifest", "manifest": str(manifest)}
    for stage in ("faces", "audio", "embed"):
        data[stage] = {**data[stage], "out": str(work / stage), "on_error": on_error}
    if engine is not None:
        data["run"] = {**data["run"], "engine": engine}
    # a backbone's weights file was relative to the training params' folder, which the checkpoint
    # does not record: taken from the working folder (run from there); its hash is checked after
    data["embed"]["streams"] = {name: {**bp, "checkpoint": str(Path(bp["checkpoint"]).resolve())}
                                if bp.get("checkpoint") else bp for name, bp in data["embed"]["streams"].items()}
    return parse_params(data, source="checkpoint params", root=work)


def _write_outputs(ckpt: dict, model, params: Params, name: str, video: Path, folder: Path,
                   overlay: Path | None = None) -> Prediction:
    """The model over one entry of the predict cache -> `<folder>/<video stem>.csv` and `.png`, and
    the video with its outputs drawn -> `overlay` (stage2/overlay.py) when given."""
    device = resolve_device(params.train.device)
    tasks = tasks_of(model.tasks, params.tasks)
    # never preloaded: the windows stream from the file a batch at a time, so a long video
    # takes memory for one batch of windows and its (n, width) outputs (docs/measurements.md)
    entry = load_entries(params.path(params.embed.out), None, model.tasks, names=[name])[0]
    window = ckpt["params"]["train"]["window"]
    raw = predict_entry(model, entry, window, window // 2, device)
    outputs = {t: task.postprocess(task.activate(raw[t])) for t, task in tasks.items()}
    with cache.open_entry(cache.entry_path(params.path(params.embed.out), entry.name)) as f:
        times = f["timestamps"][...]
        present = {s: f[mask_key(s)][...] for s in entry.streams}
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = folder / f"{video.stem}.csv", folder / f"{video.stem}.png"
    write_predictions(csv_path, tasks, outputs, times,
                      extra={f"{s}_present": [str(int(v)) for v in m] for s, m in present.items()})
    plot(png_path, times, tasks, outputs, present, title=f"{video.name} ({ckpt['head']['name']})")
    if overlay is not None:   # the face boxes live in the faces cache, gone once predict returns
        with cache.open_entry(cache.entry_path(params.path(params.faces.out), entry.name)) as f:
            boxes = f["boxes"][...]
        write_overlay(video, overlay, times=times, outputs=outputs, boxes=boxes)
    return Prediction(csv_path, png_path, len(times), {s: float(m.mean()) for s, m in present.items()}, list(tasks),
                      overlay)


def predict_video(video: Path, checkpoint: Path, out: Path, overlay: Path | None = None, *,
                  runtime: str = "torch", onnx: Path | None = None) -> Prediction:
    """Predicts one video; returns where the CSV and the plot (and the `overlay` mp4) went.
    `runtime` onnx: the head from `onnx` (`jmt export`) in onnxruntime (export.load_model)."""
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
        params = _stage1_params(ckpt, work, {"video": video})
        run_faces(params)
        run_audio(params)
        run_embed(params)
        checkpoints.check_cache(ckpt, Path(checkpoint), params.path(params.embed.out))  # the same backbones
        model = export.load_model(ckpt, Path(checkpoint), runtime, onnx)
        model.to(resolve_device(params.train.device)).eval()
        return _write_outputs(ckpt, model, params, "video", video, out, overlay)


def expand_videos(sources: list[Path]) -> list[Path]:
    """Video files, folders (their videos, sorted) and glob patterns -> the videos, in order,
    each once. A source that is none of these is an InputError naming it."""
    videos: list[Path] = []
    seen: set[Path] = set()
    for src in map(Path, sources):
        if src.is_dir():
            found = sorted(p for p in src.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        elif src.is_file():
            found = [src]
        elif any(c in str(src) for c in "*?["):
            found = sorted(Path(p) for p in glob.glob(str(src), recursive=True) if Path(p).is_file())
        else:
            raise InputError(f"{src}: no such file or folder")
        if not found:
            raise InputError(f"{src}: no videos ({', '.join(VIDEO_SUFFIXES)})" if src.is_dir() else
                             f"{src}: matches no file")
        for v in found:
            if v.resolve() not in seen:
                seen.add(v.resolve())
                videos.append(v)
    return videos


def folder_names(videos: list[Path]) -> list[str]:
    """One output folder (and cache entry) name per video: its stem, `_2`, `_3`... for a repeated
    stem, a leading '.' made '_' (a cache name may not start with one)."""
    names, seen = [], set()
    for v in videos:
        base = re.sub(r"^\.", "_", v.stem) or "video"
        name, k = base, 1
        while name in seen:
            k += 1
            name = f"{base}_{k}"
        seen.add(name)
        names.append(name)
    return names


def _stamp(video: Path, checkpoint_sha: str) -> dict:
    """What a finished video's outputs were made from: the video (size, mtime) and the model."""
    st = video.stat()
    return {"video": str(video.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "checkpoint_sha256": checkpoint_sha}


def predict_videos(sources: list[Path], checkpoint: Path, out: Path, engine: str | None = None,
                   overlay: Path | None = None, *, runtime: str = "torch", onnx: Path | None = None) -> dict:
    """Predicts many videos with the models loaded once: stage 1 runs once over all of them
    (the checkpoint's params, `engine` or their `run.engine`), then the model per video, each
    into `<out>/<name>/` with a `done.json` (and `<overlay>/<name>.mp4` given a folder `overlay`);
    a video finished with the same checkpoint (and its overlay there) is skipped on a rerun, a
    video that fails is recorded and skipped. Stage 1's cache stays in
    `<out>/.jmt-work/` until every video is through (a killed run resumes there). Returns the
    report, also written to `<out>/report.json`."""
    from pipeline.stage1.audio import run_audio
    from pipeline.stage1.embed import run_embed
    from pipeline.stage1.faces import run_faces

    videos = expand_videos(sources)
    ckpt = checkpoints.read(Path(checkpoint))   # read, never executed
    sha = hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()
    report: dict = {"checkpoint": str(checkpoint), "checkpoint_sha256": sha, "done": {}, "already_done": [],
                    "skipped": []}
    todo: dict[str, Path] = {}
    for name, video in zip(folder_names(videos), videos):
        done = out / name / "done.json"
        if (done.is_file() and json.loads(done.read_text()) == _stamp(video, sha)
                and (overlay is None or (overlay / f"{name}.mp4").is_file())):
            report["already_done"].append(name)
        else:
            todo[name] = video
    work = out / ".jmt-work"
    if todo:
        work.mkdir(parents=True, exist_ok=True)
        params = _stage1_params(ckpt, work, todo, on_error="skip", engine=engine)
        failed = {}
        for run in (run_faces, run_audio, run_embed):   # each skips (and records) what the previous skipped
            for s in run(params).skipped:
                failed.setdefault(s["entry"], s["error"])
        ready = [n for n in todo if n not in failed]
        if ready:
            checkpoints.check_cache(ckpt, Path(checkpoint), params.path(params.embed.out))  # the same backbones
            model = export.load_model(ckpt, Path(checkpoint), runtime, onnx)
            model.to(resolve_device(params.train.device)).eval()
        with progress() as bar:
            task = bar.add_task("predict", total=len(todo))
            for name, video in todo.items():
                try:
                    if name in failed:
                        raise JmtError(failed[name])
                    pred = _write_outputs(ckpt, model, params, name, video, out / name,
                                          None if overlay is None else overlay / f"{name}.mp4")
                    (out / name / "done.json").write_text(json.dumps(_stamp(video, sha), indent=1))
                    report["done"][name] = {"video": str(video), "frames": pred.frames, "present": pred.present,
                                            **({"overlay": str(pred.overlay)} if pred.overlay else {})}
                except JmtError as exc:   # recorded, the others go on
                    report["skipped"].append({"video": str(video), "name": name, "error": str(exc)})
                bar.advance(task)
        shutil.rmtree(work)   # every video is through: done or recorded
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    return report


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
    videos: Annotated[list[Path], typer.Argument(help="Video files (any format ffmpeg reads), folders of "
                                                     "videos, or glob patterns (quoted).")],
    checkpoint: Annotated[Path, typer.Option(help="A checkpoint from `jmt train`.")] = Path("models/model.pt"),
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("predictions"),
    engine: Annotated[str | None, typer.Option(help="local | ray for stage 1 (default: the checkpoint's "
                                                    "run.engine).")] = None,
    overlay: Annotated[Path | None, typer.Option(help="Also write the video with the face box and the outputs "
                                                      "drawn beside it (mp4): this file for one video (a folder: "
                                                      "<folder>/<stem>.mp4), a folder of <name>.mp4 for several.")
                       ] = None,
    runtime: Annotated[str, typer.Option(help="torch | onnx: the head in PyTorch, or its ONNX export "
                                              "(`jmt export`) in onnxruntime; stage 1 runs in PyTorch either way.")
                       ] = "torch",
    onnx: Annotated[Path | None, typer.Option(help="The ONNX file for --runtime onnx (default: the checkpoint's "
                                                   "path with .onnx); it must have been exported from --checkpoint.")
                    ] = None,
) -> None:
    """Predict every task of a checkpoint for new videos (stage 1 + the model). One video file:
    `<out>/<stem>.csv` and `.png`. Several, a folder or a glob: one folder per video under `<out>`,
    the models loaded once, finished videos skipped on a rerun, failures recorded in
    `<out>/report.json`. `--overlay`: the video with the face box, valence-arousal on the
    circumplex and the expression / AU probabilities drawn beside each frame, audio kept."""
    if engine not in (None, "local", "ray"):
        raise InputError(f"--engine {engine}: local or ray")
    if runtime not in ("torch", "onnx"):
        raise InputError(f"--runtime {runtime}: torch or onnx")
    if runtime == "onnx":   # before stage 1 runs: a missing or foreign graph fails at once
        export.load_model(checkpoints.read(checkpoint), checkpoint, runtime, onnx)
    if len(videos) == 1 and not videos[0].is_dir() and not any(c in str(videos[0]) for c in "*?["):
        if overlay is not None and overlay.is_dir():
            overlay = overlay / f"{videos[0].stem}.mp4"
        result = predict_video(videos[0], checkpoint, out, overlay, runtime=runtime, onnx=onnx)
        shares = ", ".join(f"{s} in {r:.0%}" for s, r in result.present.items())
        console.print(f"[green]predict[/] {videos[0].name} ({', '.join(result.tasks)}): {result.frames} frames, "
                      f"{shares} -> {result.csv}, {result.png}" + (f", {overlay}" if overlay else ""),
                      highlight=False)
        return
    report = predict_videos(videos, checkpoint, out, engine, overlay, runtime=runtime, onnx=onnx)
    console.print(f"[green]predict[/] {len(report['done'])} done, {len(report['already_done'])} already done, "
                  f"{len(report['skipped'])} skipped -> {out}/<video>/ (report: {out / 'report.json'})"
                  + (f", overlays: {overlay}/<video>.mp4" if overlay else ""), highlight=False)
    for s in report["skipped"]:
        console.print(f"[yellow]skipped[/] {s['video']}: {s['error']}", highlight=False, soft_wrap=True)
