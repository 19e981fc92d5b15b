"""`jmt live SOURCE --checkpoint CKPT`: per-frame affect from a file, camera, URL or pipe as it plays.

For each frame, in order: decode (pipeline/infer/live/source.py: one ffmpeg, frames and audio read
by threads), stage 1 for that frame alone (pipeline/infer/live/features.py: MTCNN and tracking,
alignment, the audio window and mask, every stream's backbone), then the model in causal mode
over the last `train.window` frames (pipeline/stage2/windows.py, RollingWindow: the window
ending at the frame, its last output). One JSON line per frame goes to stdout or `--out`, flushed as written:

    {"frame": 12, "time": 0.8, "present": {"visual": true, "audio": false}, "box": [x0, y0, x1, y1],
     "va": {"valence": 0.12, "arousal": -0.03}, "expr": {"p_neutral": ...}, "au": {...},
     "latency_ms": 41.3}

`present` is each stream's mask (a face found; audio inside the track and voiced), the task
outputs are activated (expr softmax, au sigmoid) and clipped as the task's options say
(`Task.clipped`: va to [-1, 1] when `tasks.va.clip`), and
`latency_ms` runs from the frame leaving the decoder to its line. A frame with no stream present
(no face, no voiced audio: evaluate.anything_present) has no input at all: its task fields are
null (`"va": null, "expr": null`), never a confident-looking value; it still enters the model's
window. A frame dropped because the machine fell behind gets `{"frame": i, "time": t,
"dropped": true}` and enters the model's window as a frame where no stream is present; the
summary (stderr, and `--summary FILE`) counts them.

Threads: PyTorch (stage 1 and the torch head) and onnxruntime (`--runtime onnx`) get `threads`
intra-op threads, one by default: the stages run one after the other on this thread, and OpenMP
threads that spin-wait against a core busy with anything else (ffmpeg, another program) cost far
more than they gain (docs/live.md). The summary records the counts used.

Ctrl-C (or SIGTERM), the end of the source, or a source that dies all end the run the same
way: every frame already decoded is processed, its line written, the summary printed; a dying
source is also an error (exit code 2) naming what ffmpeg said. A source that decodes with errors
(a truncated or corrupt file: ffmpeg goes on past them) is damaged: every line is written, a
warning in media.damaged_message's wording goes to stderr and the summary (`damaged`), and the
exit code is errors.DAMAGED_EXIT (3). A second Ctrl-C stops at once.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import IO, Annotated

import numpy as np
import torch
import typer

from pipeline.console import console
from pipeline.engine import torch_threads
from pipeline.errors import DAMAGED_EXIT, InputError, JmtError
from pipeline.infer.live.features import LiveStage1
from pipeline.infer.live.source import Dropped, Frame, Source, describe
from pipeline.stage2.evaluate import anything_present
from pipeline.stage2.windows import RollingWindow
from pipeline.infer.graphs import fold_parametrizations
from pipeline.infer.model import from_checkpoint
from pipeline.tasks import tasks_of


class CausalModel:
    """The model in eval mode over the last `window` frames, one frame at a time
    (windows.RollingWindow: the causal protocol's rule), each task's outputs activated."""

    def __init__(self, model: torch.nn.Module, window: int, widths: dict[str, int], tasks: dict) -> None:
        self.rolling = RollingWindow(model.eval(), window, widths)
        self.tasks = tasks

    def warm_up(self) -> None:
        """One pass over a full window and one over a single frame, outputs discarded."""
        self.rolling.warm_up()

    def skip(self) -> None:
        """A dropped frame: in the window as a frame where no stream is present; no output."""
        self.rolling.skip()

    def push(self, features: dict[str, np.ndarray], masks: dict[str, bool]) -> dict[str, np.ndarray]:
        """Adds a frame and returns each task's outputs for it."""
        raw = self.rolling.push(features, masks)                              # {task: (1, width)}
        return {t: task.activate(raw[t].float().numpy())[0] for t, task in self.tasks.items()}


def frame_line(frame: Frame, out, outputs: dict[str, np.ndarray], tasks: dict, latency_ms: float) -> dict:
    """One frame's JSON object (module docstring): a frame with no stream present gets null outputs."""
    line: dict = {"frame": frame.index, "time": round(frame.time, 6), "present": out.masks, "box": out.box}
    known = anything_present(out.masks)
    for name, task in tasks.items():
        if not known:
            line[name] = None
            continue
        line[name] = {k: float(v) for k, v in zip(task.outputs, task.clipped(outputs[name]))}
    line["latency_ms"] = round(latency_ms, 2)
    return line


def run_live(spec: str, checkpoint: Path, out: IO[str], *, realtime: bool = True, size: tuple[int, int] | None = None,
             fps: float | None = None, max_queue: int = 4, no_audio: bool = False,
             detect_every: int | None = None, runtime: str = "torch", onnx: Path | None = None,
             threads: int = 1) -> dict:
    """Runs a source to its end (or Ctrl-C / SIGTERM); writes the JSON lines to `out`; returns the summary.
    `detect_every`: MTCNN on every n-th frame (default: the checkpoint's faces.detect_every);
    `runtime` onnx: the head's graph from `jmt export` (`onnx`, default beside the checkpoint) in
    onnxruntime; stage 1 stays PyTorch. `threads`: intra-op threads of PyTorch and onnxruntime
    for the run (torch's own count restored after)."""
    if threads < 1:
        raise InputError(f"--threads {threads}: at least 1")
    with torch_threads(threads):   # before the model loads: OnnxModel takes torch's count
        return _run_live(spec, checkpoint, out, realtime=realtime, size=size, fps=fps, max_queue=max_queue,
                         no_audio=no_audio, detect_every=detect_every, runtime=runtime, onnx=onnx)


def _run_live(spec: str, checkpoint: Path, out: IO[str], *, realtime: bool, size: tuple[int, int] | None,
              fps: float | None, max_queue: int, no_audio: bool, detect_every: int | None, runtime: str,
              onnx: Path | None) -> dict:
    # read, never executed; onnxruntime's threads sleep between calls: stage 1 needs the cores then
    trained = from_checkpoint(checkpoint, runtime, onnx, spinning=False)
    params = trained.params   # stage 1 as the model was trained
    if detect_every is not None:
        params = params.updated(faces={"detect_every": detect_every})
    model = trained.model
    session = getattr(model, "session", None)   # onnxruntime's
    used_threads = {"torch": torch.get_num_threads(),
                    "onnxruntime": session.get_session_options().intra_op_num_threads if session else None}
    if runtime == "torch":   # the TCN's weight_norm folded into plain weights once, not at every frame
        model = fold_parametrizations(model)
    tasks = tasks_of(model.tasks, params.tasks)
    info = describe(spec, size, fps)
    if no_audio:
        info.has_audio = False
    stage1 = LiveStage1(params, info)
    trained.check_backbones(stage1.built())
    causal = CausalModel(model, trained.window, trained.widths, tasks)
    stage1.warm_up()   # first calls are slow (kernels chosen, memory set up): not on the first frames
    causal.warm_up()
    source = Source(info, sample_rate=params.audio.sample_rate, realtime=realtime, max_queue=max_queue,
                    stdin=sys.stdin.buffer if spec == "-" else None)
    latencies: list[float] = []
    audio_waits: list[float] = []   # s each frame waited for its audio
    counts = {"frames": 0, "processed": 0, "dropped": 0}
    ended, failure = "end of source", None
    pending: Frame | None = None   # frame t waits for the next frame's time (its audio span ends there)

    def emit(obj: dict) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    def process(frame: Frame, stop: float, final: bool) -> None:
        t0 = time.perf_counter()
        raw, base, done = source.audio_until(stage1.audio.needed(frame.time, stop), timeout=30.0 if final else 2.0) \
            if source.info.has_audio is not False else (np.zeros(0, np.float32), 0, True)
        audio_waits.append(time.perf_counter() - t0)
        result = stage1.frame(frame.rgb, frame.time, stop, stage1.audio.track(raw, base, done))
        source.release_audio(stage1.audio.release_before(frame.time))   # older audio is never read again
        outputs = causal.push(result.features, result.masks)
        latency = (time.perf_counter() - frame.arrived) * 1000
        latencies.append(latency)
        emit(frame_line(frame, result, outputs, tasks, latency))
        counts["processed"] += 1

    def dropped(d: Dropped) -> None:
        causal.skip()
        emit({"frame": d.index, "time": round(d.time, 6), "dropped": True})
        counts["dropped"] += 1

    stopping = {}   # the signal that asked for a stop

    def on_signal(signum, _frame) -> None:
        if stopping:   # asked twice: stop at once
            raise KeyboardInterrupt
        stopping["signal"] = signum
        source.interrupt()   # the frames already decoded still come out, then the end

    # Ctrl-C and `kill` (SIGTERM) end the run cleanly; set explicitly, so a shell that started
    # jmt in the background with SIGINT ignored cannot make it deaf to it
    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.getsignal(s) for s in handled} if threading.current_thread() is threading.main_thread() else {}
    for s in previous:
        signal.signal(s, on_signal)
    try:
        while True:
            lost, frame = source.next_frame()
            events = sorted([*lost, *([frame] if frame else [])], key=lambda e: e.index)
            for e in events:
                counts["frames"] += 1
                if pending is not None:
                    process(pending, e.time, False)
                    pending = None
                if isinstance(e, Dropped):
                    dropped(e)
                else:
                    pending = e
            if frame is None:
                break
        if stopping:
            ended = "interrupted (Ctrl-C)" if stopping["signal"] == signal.SIGINT else "stopped (SIGTERM)"
        if pending is not None:   # the last frame: on screen for 1/fps, then the track's end is waited for
            process(pending, pending.time + 1.0 / source.info.fps, not stopping)
        failure = None if stopping else source.failure()
    except KeyboardInterrupt:   # a second Ctrl-C: what was written stays, the rest is dropped
        ended = "interrupted (Ctrl-C, twice)"
    finally:
        source.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
    damaged = None if failure else source.damaged()
    lat = np.asarray(latencies) if latencies else np.zeros(1)
    waits = np.asarray(audio_waits) if audio_waits else np.zeros(1)
    summary = {"source": spec, "ended": "source died" if failure else ended, "error": failure, "damaged": damaged,
               **counts,
               "latency_ms": {"p50": round(float(np.percentile(lat, 50)), 2),
                              "p95": round(float(np.percentile(lat, 95)), 2),
                              "p99": round(float(np.percentile(lat, 99)), 2),
                              "max": round(float(lat.max()), 2)},
               "audio_wait_ms": {"total": round(float(waits.sum()) * 1000, 2),
                                 "max": round(float(waits.max()) * 1000, 2)},
               "fps": source.info.fps, "size": [source.info.width, source.info.height],
               "orientation": info.orientation.describe() if info.kind == "file" else None,
               "realtime": realtime, "detect_every": params.faces.detect_every, "runtime": runtime,
               "threads": used_threads}
    return summary


def _size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError(f"--size {text}: expected WIDTHxHEIGHT, e.g. 640x480") from None
    return w, h


def command(
    source: Annotated[str, typer.Argument(help="A video file (played at its frame rate), /dev/video<N>, a URL "
                                               "ffmpeg reads, a named pipe, or - for standard input.")],
    checkpoint: Annotated[Path, typer.Option(help="A checkpoint from `jmt train`.")] = Path("models/model.pt"),
    out: Annotated[Path | None, typer.Option(help="Write the JSON lines here (default: stdout).")] = None,
    summary: Annotated[Path | None, typer.Option(help="Also write the run's summary (JSON) here.")] = None,
    realtime: Annotated[bool, typer.Option(help="Play a file at its frame rate and drop frames when behind "
                                                "(--no-realtime: a file or pipe is read as fast as frames are "
                                                "processed, none dropped; a camera or URL always drops).")] = True,
    size: Annotated[str | None, typer.Option(help="Frame size WxH: needed for a pipe or camera; "
                                                  "a file's own by default.")] = None,
    fps: Annotated[float | None, typer.Option(help="Frame rate of a pipe or camera (default: 25).")] = None,
    queue: Annotated[int, typer.Option(min=1, help="Frames that may wait before the oldest is dropped (a "
                                                   "decoder flushes its last few frames at once).")] = 4,
    threads: Annotated[int, typer.Option(min=1, help="Intra-op threads of PyTorch (stage 1, the torch head) "
                                                     "and onnxruntime (--runtime onnx): one per stage by default; "
                                                     "more spin against a busy core (docs/live.md).")] = 1,
    no_audio: Annotated[bool, typer.Option("--no-audio", help="The source has no audio track (a pipe or URL "
                                                              "whose audio is unknown).")] = False,
    detect_every: Annotated[int | None, typer.Option(min=1, help="Detect faces on every n-th frame, the last "
                                                     "face held in between (default: the checkpoint's "
                                                     "faces.detect_every); 1: every frame.")] = None,
    runtime: Annotated[str, typer.Option(help="torch | onnx: the head in PyTorch, or its `jmt export` graph "
                                              "in onnxruntime (stage 1 runs in PyTorch either way).")] = "torch",
    onnx: Annotated[Path | None, typer.Option(help="The ONNX file for --runtime onnx (default: the "
                                                   "checkpoint's path with .onnx).")] = None,
) -> None:
    """Predict every task of a checkpoint live, frame by frame in causal mode (JSON lines). Frames with no
    stream present get null outputs. Exit code 2: the source died; 3: it decoded with errors (truncated
    or corrupt), every line written."""
    stream = open(out, "w", buffering=1) if out else sys.stdout
    try:
        result = run_live(source, checkpoint, stream, realtime=realtime, size=_size(size), fps=fps,
                          max_queue=queue, no_audio=no_audio, detect_every=detect_every, runtime=runtime, onnx=onnx,
                          threads=threads)
    finally:
        if out:
            stream.close()
    if summary:
        summary.write_text(json.dumps(result, indent=1) + "\n")
    lat = result["latency_ms"]
    console.print(f"[green]live[/] {result['source']}: {result['ended']}; {result['processed']} frames processed, "
                  f"[{'red' if result['dropped'] else 'green'}]{result['dropped']} dropped[/], latency p50 "
                  f"{lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms, p99 {lat['p99']:.1f} ms", highlight=False)
    if result["error"]:
        raise JmtError(f"{result['error']} after {result['frames']} frames; every line up to it was written")
    if result["damaged"]:
        console.print(f"[yellow]warning[/] {result['damaged']}", highlight=False, soft_wrap=True)
        raise typer.Exit(DAMAGED_EXIT)
