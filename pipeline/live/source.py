"""A live source through one ffmpeg process: video frames, their times and the audio track.

What `jmt live SOURCE` reads (`describe` probes it, `Source` runs it):
- a video file, played at its own frame rate (`-re`; `realtime=False` reads it as fast as the
  consumer takes frames, never dropping one; so does a pipe with realtime=False);
- a camera, `/dev/video<N>`, through ffmpeg's v4l2 input;
- a URL ffmpeg can read (rtsp://, http://, udp://, ...);
- a pipe: `-` (standard input) or a named pipe (FIFO) carrying any container ffmpeg can demux.

One ffmpeg decodes it: RGB frames (rgb24 at the stage-1 size) to its stdout, the first audio
track as mono float32 at the stage-1 sample rate to a second pipe, and each frame's time from its
`showinfo` line on stderr. Three threads drain the three pipes, so ffmpeg never blocks on one
the consumer is not reading. Frames wait in a queue of `max_queue`; when the consumer falls
behind a source that does not wait (anything but a file or pipe read with realtime=False), the oldest
waiting frame is dropped and recorded (`dropped`), never silently lost. A source that ends
normally ends the frames; one that dies (ffmpeg killed, a broken stream) ends them too, and
`failure()` says what happened.
"""

from __future__ import annotations

import collections
import os
import re
import stat
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import InputError
from pipeline.media import audio_span, probe, require_ffmpeg, start_time

PTS = re.compile(r"\bn:\s*\d+\s+pts:\s*(-?\d+)\s+pts_time:\s*(\S+)")
TIME_BASE = re.compile(r"config in time_base:\s*(\d+)/(\d+)")


@dataclass
class SourceInfo:
    """What is known of a source before its first frame."""

    spec: str
    kind: str                  # file | camera | url | pipe
    width: int
    height: int
    fps: float
    has_audio: bool | None     # None: unknown until it plays (a pipe, a camera)
    audio_start: float = 0.0   # s, the track's first sample on the frames' clock (files)
    audio_end: float | None = None  # s, the container's end of the track (files): later samples are padding
    origin: float = 0.0        # s, the file's start time: time 0 of the frames' clock


@dataclass
class Frame:
    index: int
    time: float                # s on the source's clock (file: from its start)
    rgb: np.ndarray            # uint8 (H, W, 3)
    arrived: float             # time.perf_counter() when it was read


@dataclass
class Dropped:
    index: int
    time: float


def kind_of(spec: str) -> str:
    """file | camera | url | pipe, from the SOURCE argument."""
    if spec == "-":
        return "pipe"
    if "://" in spec:
        return "url"
    if spec.startswith("/dev/video"):
        return "camera"
    path = Path(spec)
    if not path.exists():
        raise InputError(f"{spec}: no such file, camera or pipe (a URL needs its scheme, e.g. rtsp://)")
    if stat.S_ISFIFO(path.stat().st_mode):
        return "pipe"
    if not path.is_file():
        raise InputError(f"{spec}: not a video file, camera (/dev/video<N>), URL or pipe")
    return "file"


def describe(spec: str, size: tuple[int, int] | None = None, fps: float | None = None) -> SourceInfo:
    """Probes a file (size, rate, audio track) before it plays; a camera, URL or pipe is
    probed only for what ffprobe can say without consuming it (nothing, for a pipe): `size`
    and `fps` then fill the gaps."""
    kind = kind_of(spec)
    if kind == "file":
        info = probe(Path(spec))
        if info.video_codec is None:
            raise InputError(f"{spec}: no video stream (an audio-only file?)")
        span = audio_span(Path(spec)) if info.audio_codec else None
        w, h = size or (info.width, info.height)
        return SourceInfo(spec, kind, w, h, fps or info.fps or 25.0, info.audio_codec is not None,
                          span.start if span else 0.0, span.end if span else None, start_time(Path(spec)))
    if size is None:
        raise InputError(f"{spec}: a {kind} cannot be probed before it plays: give its frame size (--size WxH)")
    # a camera through v4l2 has no audio track; a URL or a pipe may (--no-audio says it has none)
    return SourceInfo(spec, kind, size[0], size[1], fps or 25.0, False if kind == "camera" else None)


class Source:
    """The running ffmpeg and its three reader threads. Iterate `frames()`; `stop()` ends it."""

    def __init__(self, info: SourceInfo, *, sample_rate: int, realtime: bool = True, max_queue: int = 4,
                 stdin=None) -> None:
        require_ffmpeg()
        self.info, self.sample_rate = info, sample_rate
        # a file or pipe read with realtime=False waits for the consumer (a pipe's writer then
        # waits too); a camera or a URL does not wait for anyone: behind them, frames are dropped
        self.waits = info.kind in ("file", "pipe") and not realtime
        self.max_queue = max_queue
        self.queue: collections.deque[Frame] = collections.deque()
        self.dropped: list[Dropped] = []
        self.cond = threading.Condition()
        self.video_done = False
        self.audio: list[np.ndarray] = []   # the samples not yet released, in pieces
        self.audio_base = 0                 # ffmpeg's index of the first of them
        self.audio_samples = 0              # samples read so far
        self.audio_done = info.has_audio is False
        self.times: collections.deque[float] = collections.deque()
        self.err_tail: collections.deque[str] = collections.deque(maxlen=20)
        self.stopped = False
        read_audio, self._audio_w = os.pipe() if info.has_audio is not False else (None, None)
        cmd = self._command(realtime)
        self.proc = subprocess.Popen(cmd, stdin=stdin if info.kind == "pipe" and info.spec == "-" else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     pass_fds=(self._audio_w,) if self._audio_w is not None else ())
        if self._audio_w is not None:
            os.close(self._audio_w)   # the child holds its copy; EOF reaches us when it exits
        self.threads = [threading.Thread(target=self._read_video, daemon=True),
                        threading.Thread(target=self._read_log, daemon=True)]
        if read_audio is not None:
            self.threads.append(threading.Thread(target=self._read_audio, args=(read_audio,), daemon=True))
        for t in self.threads:
            t.start()

    def _command(self, realtime: bool) -> list[str]:
        i = self.info
        src = "pipe:0" if i.spec == "-" else i.spec
        cmd = ["ffmpeg", "-hide_banner", "-loglevel", "info", "-nostats"]
        if i.kind == "file" and realtime:
            cmd += ["-re"]
        if i.kind == "camera":
            cmd += ["-f", "v4l2"]
        cmd += ["-i", src, "-map", "0:v:0", "-vf", "showinfo", "-f", "rawvideo", "-pix_fmt", "rgb24",
                "-s", f"{i.width}x{i.height}", "-fps_mode", "passthrough", "pipe:1"]
        if self._audio_w is not None:
            cmd += ["-map", "0:a:0?", "-ac", "1", "-ar", str(self.sample_rate), "-f", "f32le",
                    "-acodec", "pcm_f32le", f"pipe:{self._audio_w}"]
        return cmd

    # ---- reader threads ------------------------------------------------------------------

    def _read_log(self) -> None:
        base = None   # the stream's time base: a frame's time is pts x base, as ffprobe computes it
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            if "showinfo" not in line:
                if line:
                    self.err_tail.append(line)
                continue
            if (tb := TIME_BASE.search(line)) and base is None:
                base = (int(tb.group(1)), int(tb.group(2)))
            elif m := PTS.search(line):
                t = int(m.group(1)) * base[0] / base[1] if base else float(m.group(2))
                with self.cond:   # ffprobe's 6 decimals: frame_times' values, so the audio windows match
                    self.times.append(round(t, 6) - self.info.origin)
                    self.cond.notify_all()

    def _frame_time(self, index: int) -> float:
        """The frame's time from its showinfo line (waits a little for the log thread)."""
        with self.cond:
            self.cond.wait_for(lambda: self.times or self.stopped, timeout=2.0)
            if self.times:
                return self.times.popleft()
        return index / self.info.fps   # no line came: the nominal time

    def _read_video(self) -> None:
        size = self.info.width * self.info.height * 3
        index = 0
        try:
            while True:
                buf = self._read_exact(self.proc.stdout, size)
                if buf is None:
                    break
                rgb = np.frombuffer(buf, np.uint8).reshape(self.info.height, self.info.width, 3)
                frame = Frame(index, self._frame_time(index), rgb, time.perf_counter())
                index += 1
                with self.cond:
                    if self.waits:
                        self.cond.wait_for(lambda: len(self.queue) < self.max_queue or self.stopped)
                    elif len(self.queue) >= self.max_queue:   # behind: the oldest waiting frame goes
                        old = self.queue.popleft()
                        self.dropped.append(Dropped(old.index, old.time))
                    if self.stopped:
                        break
                    self.queue.append(frame)
                    self.cond.notify_all()
        finally:
            with self.cond:
                self.video_done = True
                self.cond.notify_all()

    def _read_audio(self, fd: int) -> None:
        with os.fdopen(fd, "rb", buffering=0) as f:
            while True:
                buf = f.read(1 << 14)
                if not buf:
                    break
                x = np.frombuffer(buf[: len(buf) // 4 * 4], np.float32)
                with self.cond:
                    self.audio.append(x)
                    self.audio_samples += len(x)
                    self.cond.notify_all()
        with self.cond:
            self.audio_done = True
            self.cond.notify_all()

    @staticmethod
    def _read_exact(stream, n: int) -> bytes | None:
        chunks, got = [], 0
        while got < n:
            b = stream.read(n - got)
            if not b:
                return None   # EOF (a partial last frame is not a frame)
            chunks.append(b)
            got += len(b)
        return b"".join(chunks)

    # ---- the consumer's side ------------------------------------------------------------

    def next_frame(self) -> tuple[list[Dropped], Frame | None]:
        """The frames dropped since the last call and the next frame (None at the end)."""
        with self.cond:
            self.cond.wait_for(lambda: self.queue or self.video_done or self.stopped)
            dropped, self.dropped = self.dropped, []
            frame = self.queue.popleft() if self.queue else None
            self.cond.notify_all()
        return dropped, frame

    def audio_until(self, sample: int, timeout: float = 2.0) -> tuple[np.ndarray, int, bool]:
        """(the samples not yet released (float32), ffmpeg's index of the first, whether the
        track has ended), once `sample` samples were read, the track ended or `timeout` s passed."""
        with self.cond:
            self.cond.wait_for(lambda: self.audio_samples >= sample or self.audio_done or self.stopped,
                               timeout=timeout)
            if len(self.audio) > 1:
                self.audio = [np.concatenate(self.audio)]
            return (self.audio[0] if self.audio else np.zeros(0, np.float32)), self.audio_base, self.audio_done

    def release_audio(self, before: int) -> None:
        """Lets go of the samples before ffmpeg's index `before` (the consumer never reads them again)."""
        with self.cond:
            if self.audio and before > self.audio_base:
                if len(self.audio) > 1:
                    self.audio = [np.concatenate(self.audio)]
                cut = min(before - self.audio_base, len(self.audio[0]))
                self.audio = [self.audio[0][cut:].copy()]   # a copy: the released samples' memory goes
                self.audio_base += cut

    def failure(self) -> str | None:
        """Why the source ended early (ffmpeg killed or failing), or None for a normal end."""
        code = self.proc.wait()
        if code == 0 or self.stopped:
            return None
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        tail = "; ".join(list(self.err_tail)[-3:])
        return f"{self.info.spec}: the source died (ffmpeg {how})" + (f": {tail}" if tail else "")

    def interrupt(self) -> None:
        """Asks the source to end (safe in a signal handler): no new frame is queued, the waiting
        ones are still handed out, then the frames end; `stop()` then ends ffmpeg."""
        with self.cond:
            self.stopped = True
            self.cond.notify_all()

    def stop(self) -> None:
        """Ends ffmpeg and the threads (Ctrl-C, or the consumer is done)."""
        with self.cond:
            self.stopped = True
            self.cond.notify_all()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for t in self.threads:
            t.join(timeout=5)
        for s in (self.proc.stdout, self.proc.stderr):
            if s:
                s.close()
