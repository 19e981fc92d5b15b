"""`jmt predict VIDEO... --checkpoint CKPT --out DIR`: every task's outputs for new videos.

Runs stage 1 for the videos with the checkpoint's own stage-1 params (same detector, crops,
spectrogram and a backbone per stream; the backbones' weights are checked against the ones the
model was trained on), then the model over overlapping windows, streamed from the cache a batch
at a time. Writes `<video>.csv` (frame, time, each stream's presence `<stream>_present`, then
each task's outputs: valence and arousal; the most probable expression and each class's
probability; each AU's 0/1 and probability) and `<video>.png` (one panel per task, the frames
lacking a stream shaded). A video with no face or no audio still gets predictions: the presence
columns show where; a frame with NO stream present (no face and no voice) has no input at all, so
its task cells are blank (evaluate.anything_present). `--overlay` also draws them on the video
(overlay.py). Videos are read as displayed (a phone's rotation applied: media.Orientation).
A video that decodes with errors (truncated or corrupt) gets outputs for the frames that decoded,
a warning, `damaged` in the report, and exit code 3. Torch (and onnxruntime) run `--threads`
intra-op threads, 1 by default: on a machine whose cores are busy, more threads than free cores
stall each other.

One video file: into `DIR`, from a temporary cache; an error stops it. Several videos, folders or
globs (`predict_videos`): stage 1 once over all of them (MTCNN and the backbones loaded once; on
Ray with `--engine ray`), one folder per video with a `done.json`, a video already done with the
same checkpoint skipped on a rerun, a bad video recorded in `DIR/report.json` and skipped.
"""
from __future__ import annotations

import glob
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
from pipeline.config import Params
from pipeline.console import console, progress
from pipeline.corpus.entries import VIDEO_SUFFIXES
from pipeline.device import resolve_device
from pipeline.engine import torch_threads
from pipeline.errors import DAMAGED_EXIT, InputError, JmtError
from pipeline.plots import pyplot, shade_missing
from pipeline.infer.model import Trained, from_checkpoint
from pipeline.stage2.data import load_entries, mask_key
from pipeline.stage2.windows import predict_entry
from pipeline.stage2.evaluate import anything_present, write_predictions
from pipeline.infer.overlay import write_overlay
from pipeline.tasks import Task, tasks_of


@dataclass
class Prediction:
    csv: Path
    png: Path
    frames: int
    present: dict[str, float]   # stream -> share of frames where it is present
    tasks: list[str]
    overlay: Path | None = None  # the overlay video (`--overlay`), when asked for
    known: float = 1.0           # share of frames with any stream present (the others' outputs are blank)
    damaged: str | None = None   # the video decoded with errors (media.damaged_message): outputs cover what decoded


AXIS_COLOURS = ("tab:orange", "tab:purple")   # predict's plot: a dimensional task's axes, in turn
OVERLAY_SUFFIXES = (".mp4", ".mkv", ".mov", ".m4v")   # containers ffmpeg writes H.264 + AAC into
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
AUDIO_SUFFIXES = (".wav", ".mp3", ".m4a", ".aac", ".flac", ".ogg", ".opus")


@dataclass(frozen=True)
class Targets:
    """Where one run of predict writes, settled before any work (`plan_outputs`): `csv` is the
    CSV file of a single video (None: `<out>/<stem>.csv`), `overlay` a file for one video or a
    folder of `<name>.mp4` for several."""

    out: Path
    csv: Path | None = None
    overlay: Path | None = None


def _is_folder_path(path: Path, file_suffixes: tuple[str, ...]) -> bool:
    """A path names a folder when it is one, or does not exist and has none of `file_suffixes`."""
    return path.is_dir() or (not path.exists() and path.suffix.lower() not in file_suffixes)


def plan_outputs(single: Path | None, out: Path, overlay: Path | None) -> Targets:
    """Checks --out and --overlay against what predict will write, before any work; one-line
    InputErrors for a path that cannot work. `single`: the one video file (None: several videos).

    --out: a folder (existing or not); for a single video also a `.csv` file (the plot beside it
    as `.png`). --overlay: for a single video a file (.mp4, .mkv, .mov, .m4v) or a folder (existing,
    or a path without one of those suffixes: `<folder>/<stem>.mp4`); for several, a folder."""
    out, overlay = Path(out), None if overlay is None else Path(overlay)
    csv_file = None
    if out.exists() and not out.is_dir():
        if single is None or out.suffix.lower() != ".csv":
            raise InputError(f"--out {out}: an existing file; give a folder" +
                             ("" if single is None else " or a .csv file"))
    if out.suffix.lower() == ".csv" and not out.is_dir():
        if single is None:
            raise InputError(f"--out {out}: several videos write one folder each; give a folder")
        csv_file, out = out, out.parent
    if overlay is not None:
        if _is_folder_path(overlay, OVERLAY_SUFFIXES):
            if single is not None:
                overlay = overlay / f"{single.stem}.mp4"
        elif single is None:
            raise InputError(f"--overlay {overlay}: several videos write one overlay each; give a folder")
        elif overlay.suffix.lower() not in OVERLAY_SUFFIXES:
            raise InputError(f"--overlay {overlay}: an existing file that is not a video "
                             f"({', '.join(OVERLAY_SUFFIXES)}); give a video file name or a folder")
        if single is not None and overlay.resolve() == Path(single).resolve():
            raise InputError(f"--overlay {overlay}: that is the input video; give another name")
    return Targets(out, csv_file, overlay)


def _write_outputs(trained: Trained, params: Params, name: str, video: Path, folder: Path,
                   overlay: Path | None = None, csv_path: Path | None = None) -> Prediction:
    """The model over one entry of the predict cache -> `<folder>/<video stem>.csv` (or `csv_path`)
    and the plot beside it (.png), and the video with its outputs drawn -> `overlay`
    (overlay.py) when given. A frame with no stream present gets blank outputs."""
    model = trained.model
    device = resolve_device(params.train.device)
    tasks = tasks_of(model.tasks, params.tasks)
    # never preloaded: the windows stream from the file a batch at a time, so a long video
    # takes memory for one batch of windows and its (n, width) outputs (docs/measurements.md)
    entry = load_entries(params.path(params.embed.out), None, model.tasks, names=[name])[0]
    raw = predict_entry(model, entry, trained.window, trained.hop, device)
    outputs = {t: task.postprocess(task.activate(raw[t])) for t, task in tasks.items()}
    with cache.open_entry(cache.entry_path(params.path(params.embed.out), entry.name)) as f:
        times = f["timestamps"][...]
        present = {s: f[mask_key(s)][...] for s in entry.streams}
    known = anything_present(present)   # (n,) bool: elsewhere the model saw nothing
    blank = {t: np.where(known[:, None], y, np.nan) for t, y in outputs.items()}
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = csv_path or folder / f"{video.stem}.csv"
    png_path = csv_path.with_suffix(".png")
    write_predictions(csv_path, tasks, outputs, times, known=known,
                      extra={f"{s}_present": [str(int(v)) for v in m] for s, m in present.items()})
    plot(png_path, times, tasks, blank, present, title=f"{video.name} ({trained.head})")
    with cache.open_entry(cache.entry_path(params.path(params.faces.out), entry.name)) as f:
        damaged = f.attrs.get("damaged")   # the faces stage decoded it with errors
        if overlay is not None:   # the face boxes live in the faces cache, gone once predict returns
            boxes = f["boxes"][...]
    if overlay is not None:
        write_overlay(video, overlay, times=times, outputs=blank, boxes=boxes)
    return Prediction(csv_path, png_path, len(times), {s: float(m.mean()) for s, m in present.items()}, list(tasks),
                      overlay, float(known.mean()) if len(known) else 0.0, damaged)


def predict_video(video: Path, checkpoint: Path, out: Path, overlay: Path | None = None, *,
                  runtime: str = "torch", onnx: Path | None = None, engine: str | None = None,
                  threads: int = 1, csv_path: Path | None = None) -> Prediction:
    """Predicts one video into folder `out` (or the file `csv_path`); returns where the CSV and
    the plot (and the `overlay` mp4) went. `runtime` onnx: the head from `onnx` (`jmt export`) in
    onnxruntime (model.from_checkpoint); `engine`: local | ray for stage 1 (default: the checkpoint's
    run.engine); `threads`: torch's (and onnxruntime's) intra-op threads in each step."""
    from pipeline.stage1.audio import run_audio
    from pipeline.stage1.embed import run_embed
    from pipeline.stage1.faces import run_faces

    video = Path(video)
    if not video.is_file():
        raise InputError(f"{video}: file not found")
    # read (never executed) before any work: its params say how to run stage 1 for the video
    trained = from_checkpoint(checkpoint, runtime, onnx)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="jmt-predict-") as tmp, torch_threads(threads):
        work = Path(tmp)
        params = trained.stage1_params(work, {"video": video}, engine=engine, threads=threads)
        run_faces(params)
        run_audio(params)
        run_embed(params)
        trained.check_cache(params.path(params.embed.out))  # the same backbones
        trained.model.to(resolve_device(params.train.device)).eval()
        return _write_outputs(trained, params, "video", video, out, overlay, csv_path)


def expand_videos(sources: list[Path], ignored: list[dict] | None = None) -> list[Path]:
    """Video files, folders (their videos, sorted) and glob patterns -> the videos, in order,
    each once. A source that is none of these is an InputError naming it. A folder's images and
    audio files (and other files that are not videos) are appended to `ignored` ({file, why})."""
    videos: list[Path] = []
    seen: set[Path] = set()
    for src in map(Path, sources):
        if src.is_dir():
            found = sorted(p for p in src.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
            if ignored is not None:
                ignored += [{"file": str(p), "why": _not_a_video(p)} for p in sorted(src.iterdir())
                            if p.is_file() and p.suffix.lower() not in VIDEO_SUFFIXES and not p.name.startswith(".")]
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


def _not_a_video(path: Path) -> str:
    kind = ("an image" if path.suffix.lower() in IMAGE_SUFFIXES else
            "an audio file" if path.suffix.lower() in AUDIO_SUFFIXES else "not a video")
    return (f"{kind}: a folder is read for its videos ({', '.join(VIDEO_SUFFIXES)}); name the file "
            "itself to try it")


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
                   overlay: Path | None = None, *, runtime: str = "torch", onnx: Path | None = None,
                   threads: int = 1) -> dict:
    """Predicts many videos with the models loaded once: stage 1 runs once over all of them
    (the checkpoint's params, `engine` or their `run.engine`), then the model per video, each
    into `<out>/<name>/` with a `done.json` (and `<overlay>/<name>.mp4` given a folder `overlay`);
    a video finished with the same checkpoint (and its overlay there) is skipped on a rerun, a
    video that fails is recorded and skipped. Stage 1's cache stays in
    `<out>/.jmt-work/` until every video is through (a killed run resumes there). Returns the
    report, also written to `<out>/report.json`: this run's `done`, `already_done`, `skipped`,
    `damaged` (done, but decoded with errors) and `ignored` (a folder's files that are not
    videos), and `earlier_skipped`: the skip records of earlier runs whose videos this run did
    not retry (a rerun never loses them)."""
    from pipeline.stage1.audio import run_audio
    from pipeline.stage1.embed import run_embed
    from pipeline.stage1.faces import run_faces

    out = Path(out)
    ignored: list[dict] = []
    videos = expand_videos(sources, ignored)
    trained = from_checkpoint(checkpoint, runtime, onnx)   # read, never executed
    sha = trained.sha256
    report: dict = {"checkpoint": str(checkpoint), "checkpoint_sha256": sha, "done": {}, "already_done": [],
                    "skipped": [], "damaged": [], "ignored": ignored, "earlier_skipped": []}
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
        params = trained.stage1_params(work, todo, on_error="skip", engine=engine, threads=threads)
        failed = {}
        with torch_threads(threads):
            for run in (run_faces, run_audio, run_embed):   # each skips (and records) what the previous skipped
                for s in run(params).skipped:
                    failed.setdefault(s["entry"], s["error"])
            ready = [n for n in todo if n not in failed]
            if ready:
                trained.check_cache(params.path(params.embed.out))  # the same backbones
                trained.model.to(resolve_device(params.train.device)).eval()
            with progress() as bar:
                task = bar.add_task("predict", total=len(todo))
                for name, video in todo.items():
                    try:
                        if name in failed:
                            raise JmtError(failed[name])
                        pred = _write_outputs(trained, params, name, video, out / name,
                                              None if overlay is None else overlay / f"{name}.mp4")
                        (out / name / "done.json").write_text(json.dumps(_stamp(video, sha), indent=1))
                        report["done"][name] = {"video": str(video), "frames": pred.frames, "present": pred.present,
                                                "known": round(pred.known, 4),
                                                **({"overlay": str(pred.overlay)} if pred.overlay else {}),
                                                **({"damaged": pred.damaged} if pred.damaged else {})}
                        if pred.damaged:
                            report["damaged"].append({"video": str(video), "name": name, "warning": pred.damaged})
                    except JmtError as exc:   # recorded, the others go on
                        report["skipped"].append({"video": str(video), "name": name, "error": str(exc)})
                    bar.advance(task)
        shutil.rmtree(work)   # every video is through: done or recorded
    out.mkdir(parents=True, exist_ok=True)
    report["earlier_skipped"] = _earlier_skips(out / "report.json", set(todo) | set(report["already_done"]))
    (out / "report.json").write_text(json.dumps(report, indent=1))
    return report


def _earlier_skips(path: Path, this_run: set[str]) -> list[dict]:
    """The skip records of the report at `path` (an earlier run) for videos this run did not
    try again: kept, so a rerun on part of the videos does not lose them."""
    if not path.is_file():
        return []
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return []   # an unreadable old report is replaced
    records = [*old.get("skipped", []), *old.get("earlier_skipped", [])]
    return [r for r in records if isinstance(r, dict) and r.get("name") not in this_run]


def plot(path: Path, times: np.ndarray, tasks: dict[str, Task], outputs: dict[str, np.ndarray],
         present: dict[str, np.ndarray], title: str) -> None:
    """One panel per task over time, the stretches where a stream is missing shaded: a
    dimensional task's values as curves (valence and arousal), the others' probabilities as an
    image, a row per class or label (`names`)."""
    plt = pyplot()
    fig, axes = plt.subplots(len(tasks), 1, figsize=(10, 3.2 * len(tasks)), sharex=True, constrained_layout=True,
                             squeeze=False)
    for ax, (name, y) in zip(axes[:, 0], outputs.items()):
        task = tasks[name]
        lo, hi = task.bounds
        if task.kind == "dimensional":
            for k, axis in enumerate(task.names):
                ax.plot(times, y[:, k], label=axis, color=AXIS_COLOURS[k % len(AXIS_COLOURS)])
            ax.set(ylim=(lo - 0.05, hi + 0.05), ylabel=task.title)
            ax.axhline(0, color="grey", lw=0.5)
            shade_missing(ax, times, present)
            ax.legend(loc="upper right", ncol=6, fontsize=8)
        else:  # class or label probabilities as an image: a row per name
            rows = task.names
            step = float(np.median(np.diff(times))) if len(times) > 1 else 0.04
            im = ax.imshow(y.T, aspect="auto", origin="lower", vmin=lo, vmax=hi, cmap="magma",
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
    out: Annotated[Path, typer.Option(help="Output folder (created if missing); for one video also a .csv "
                                           "file name (the plot goes beside it).")] = Path("predictions"),
    engine: Annotated[str | None, typer.Option(help="local | ray for stage 1 (default: the checkpoint's "
                                                    "run.engine).")] = None,
    overlay: Annotated[Path | None, typer.Option(help="Also write the video with the face box and the outputs "
                                                      "drawn beside it: for one video a file (.mp4, .mkv, .mov, "
                                                      ".m4v) or a folder (<folder>/<stem>.mp4); for several a "
                                                      "folder of <name>.mp4.")] = None,
    runtime: Annotated[str, typer.Option(help="torch | onnx: the head in PyTorch, or its ONNX "
                                              "export (`jmt export`) in onnxruntime; stage 1 runs in PyTorch either way.")
                       ] = "torch",
    onnx: Annotated[Path | None, typer.Option(help="The ONNX file for --runtime onnx (default: the checkpoint's "
                                                   "path with .onnx); it must have been exported from --checkpoint.")
                    ] = None,
    threads: Annotated[int, typer.Option(min=1, help="CPU threads of torch (and onnxruntime) in each step: one "
                                                     "keeps a busy machine from stalling (docs/predict.md); more "
                                                     "speed up an idle one.")] = 1,
) -> None:
    """Predict every task of a checkpoint for new videos (stage 1 + the model). One video file:
    `<out>/<stem>.csv` and `.png`. Several, a folder or a glob: one folder per video under `<out>`,
    the models loaded once, finished videos skipped on a rerun, failures recorded in
    `<out>/report.json`. `--overlay`: the video with the face box, valence-arousal on the
    circumplex and the expression / AU probabilities drawn beside each frame, audio kept.
    Frames with no stream present get blank outputs. Exit code 3: a video decoded with errors
    (truncated or corrupt): its outputs cover the frames that decoded."""
    if engine not in (None, "local", "ray"):
        raise InputError(f"--engine {engine}: local or ray")
    if runtime not in ("torch", "onnx"):
        raise InputError(f"--runtime {runtime}: torch or onnx")
    single = len(videos) == 1 and not videos[0].is_dir() and not any(c in str(videos[0]) for c in "*?[")
    targets = plan_outputs(videos[0] if single else None, out, overlay)   # before any work
    if runtime == "onnx":   # before stage 1 runs: a missing or foreign graph fails at once
        from_checkpoint(checkpoint, runtime, onnx).model
    if single:
        result = predict_video(videos[0], checkpoint, targets.out, targets.overlay, runtime=runtime, onnx=onnx,
                               engine=engine, threads=threads, csv_path=targets.csv)
        shares = ", ".join(f"{s} in {r:.0%}" for s, r in result.present.items())
        console.print(f"[green]predict[/] {videos[0].name} ({', '.join(result.tasks)}): {result.frames} frames, "
                      f"{shares} -> {result.csv}, {result.png}" + (f", {result.overlay}" if result.overlay else ""),
                      highlight=False, soft_wrap=True)
        if result.known < 1:
            console.print(f"[yellow]note[/] no stream present in {1 - result.known:.0%} of the frames: their "
                          "outputs are blank", highlight=False)
        if result.damaged:
            console.print(f"[yellow]warning[/] {result.damaged}", highlight=False, soft_wrap=True)
            raise typer.Exit(DAMAGED_EXIT)
        return
    report = predict_videos(videos, checkpoint, targets.out, engine, targets.overlay, runtime=runtime, onnx=onnx,
                            threads=threads)
    console.print(f"[green]predict[/] {len(report['done'])} done, {len(report['already_done'])} already done, "
                  f"{len(report['skipped'])} skipped -> {targets.out}/<video>/ (report: "
                  f"{targets.out / 'report.json'})" + (f", overlays: {targets.overlay}/<video>.mp4" if overlay else ""),
                  highlight=False, soft_wrap=True)
    for s in report["skipped"]:
        console.print(f"[yellow]skipped[/] {s['video']}: {s['error']}", highlight=False, soft_wrap=True)
    if report["ignored"]:
        names = ", ".join(Path(r["file"]).name for r in report["ignored"][:5])
        console.print(f"[yellow]note[/] {len(report['ignored'])} file(s) in the folder(s) are not videos and were "
                      f"not read: {names}{', ...' if len(report['ignored']) > 5 else ''} (listed in the report)",
                      highlight=False, soft_wrap=True)
    for d in report["damaged"]:
        console.print(f"[yellow]warning[/] {d['warning']}", highlight=False, soft_wrap=True)
    if report["damaged"]:
        raise typer.Exit(DAMAGED_EXIT)
