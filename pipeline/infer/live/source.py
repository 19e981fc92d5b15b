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
waiting frame is dropped and recorded (`dropped`), never silently lost. A source that waits is
still never held back while the consumer waits for audio (`audio_until`): the audio it waits for
comes out of the same ffmpeg, behind the frames.

A file is decoded as displayed, like offline stage 1 (media.iter_frames): ffmpeg's own rotation
off (`-noautorotate`) and the file's display matrix applied as filters (media.Orientation), so a
phone's portrait clip stored sideways comes out upright, flips included, on any ffmpeg. A camera,
URL or pipe cannot be probed before it plays: ffmpeg's default (its autorotation) applies, and
`--size` must be the displayed size.

The audio keeps to its timestamps (`aresample=async=1`): samples a damaged stretch lost are
replaced by silence, so later audio stays under its frames and no frame waits for samples that
will never come. A source that ends normally ends the frames; one that dies (ffmpeg killed, a
broken stream) ends them too, and `failure()` says what happened. One that ffmpeg decodes past
errors (a truncated or corrupt file: it exits 0 but logs error lines) is damaged: `damaged()`
gives media.damaged_message's wording.
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
from pipeline.media import Orientation, audio_span, damaged_message, probe, require_ffmpeg, start_time

PTS = re.compile(r"\bn:\s*\d+\s+pts:\s*(-?\d+)\s+pts_time:\s*(\S+)")
TIME_BASE = re.compile(r"config in time_base:\s*(\d+)/(\d+)")
LEVEL = re.compile(r"\[(panic|fatal|error|warning|info|verbose|debug|trace)\] ")   # -loglevel level+info
ERRORS = ("panic", "fatal", "error")   # what `-loglevel error` prints: media.iter_frames' damage
KEEP_ERRORS = 1000                     # error lines kept (the last ones); all are counted
AHEAD_S, AHEAD_BYTES = 10.0, 256 << 20  # how far a waiting source may run ahead while audio is awaited


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
    orientation: Orientation = Orientation()   # stored -> displayed (a file's display matrix)


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
                          span.start if span else 0.0, span.end if span else None, start_time(Path(spec)),
                          info.orientation)
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
        # while the consumer waits for audio, a source that waits may queue this many frames (the
        # audio comes out of ffmpeg behind them; the limit bounds memory if it never does)
        frame_bytes = info.width * info.height * 3
        self.max_ahead = max(max_queue, min(int(AHEAD_S * info.fps), AHEAD_BYTES // frame_bytes))
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
        self.errors: collections.deque[str] = collections.deque(maxlen=KEEP_ERRORS)   # decoding errors
        self.n_errors = 0
        self.delivered = 0                  # frames read from ffmpeg (queued or dropped)
        self.wants_audio = False            # the consumer waits in audio_until: never hold ffmpeg back
        self.stopped = False
        read_audio, self._audio_w = os.pipe() if info.has_audio is not False else (None, None)
        cmd = self._command(realtime)
        self.proc = subprocess.Popen(cmd, stdin=stdin if info.kind == "pipe" and info.spec == "-" else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     pass_fds=(self._audio_w,) if self._audio_w is not None else ())
        if self._audio_w is not None:
            os.close(self._audio_w)   # the child holds its copy; EOF reaches us when it exits
        self.threads = [threading.Thread(target=self._read_video, daemon=True),
                        threading.Thread(target=self._read_log, daemon=True, name="log")]
        if read_audio is not None:
            self.threads.append(threading.Thread(target=self._read_audio, args=(read_audio,), daemon=True))
        for t in self.threads:
            t.start()

    def _command(self, realtime: bool) -> list[str]:
        i = self.info
        src = "pipe:0" if i.spec == "-" else i.spec
        # level+info: every log line carries its level, so decoding errors are told from the rest
        cmd = ["ffmpeg", "-hide_banner", "-loglevel", "level+info", "-nostats"]
        if i.kind == "file" and realtime:
            cmd += ["-re"]
        if i.kind == "camera":
            cmd += ["-f", "v4l2"]
        if i.kind == "file":   # as displayed: our turn (probed), not ffmpeg's, as offline stage 1
            cmd += ["-noautorotate"]
        chain = ",".join(f for f in (i.orientation.filter_text() if i.kind == "file" else "", "showinfo") if f)
        cmd += ["-i", src, "-map", "0:v:0", "-vf", chain, "-f", "rawvideo", "-pix_fmt", "rgb24",
                "-s", f"{i.width}x{i.height}", "-fps_mode", "passthrough", "pipe:1"]
        if self._audio_w is not None:   # async=1: a gap in the timestamps (lost packets) filled with silence
            cmd += ["-map", "0:a:0?", "-af", "aresample=async=1", "-ac", "1", "-ar", str(self.sample_rate),
                    "-f", "f32le", "-acodec", "pcm_f32le", f"pipe:{self._audio_w}"]
        return cmd

    # ---- reader threads ------------------------------------------------------------------

    def _read_log(self) -> None:
        base = None   # the stream's time base: a frame's time is pts x base, as ffprobe computes it
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            level = LEVEL.search(line)
            if level:   # the line as `-loglevel info` prints it
                line = line[:level.start()] + line[level.end():]
            if "showinfo" not in line:
                if line:
                    self.err_tail.append(line)
                    if level and level.group(1) in ERRORS and not self.stopped:   # ours after a stop: a broken pipe
                        self.errors.append(line)
                        self.n_errors += 1
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
                # a bytearray: the frame is writable, as torch wants its numpy arrays
                rgb = np.frombuffer(buf, np.uint8).reshape(self.info.height, self.info.width, 3)
                frame = Frame(index, self._frame_time(index), rgb, time.perf_counter())
                index += 1
                with self.cond:
                    self.delivered = index
                    if self.waits:   # the audio the consumer waits for is behind this frame in ffmpeg
                        self.cond.wait_for(lambda: len(self.queue) < self.max_queue or self.stopped
                                           or (self.wants_audio and len(self.queue) < self.max_ahead))
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
        buf, part = bytearray(1 << 14), 0   # part: bytes of a sample split between two reads
        with os.fdopen(fd, "rb", buffering=0) as f:
            while True:
                got = f.readinto(memoryview(buf)[part:])
                if not got:
                    break
                whole = (part + got) // 4 * 4
                x = np.frombuffer(buf[:whole], np.float32)   # a copy: writable, as torch wants its arrays
                part = part + got - whole
                buf[:part] = buf[whole:whole + part]
                with self.cond:
                    self.audio.append(x)
                    self.audio_samples += len(x)
                    self.cond.notify_all()
        with self.cond:
            self.audio_done = True
            self.cond.notify_all()

    @staticmethod
    def _read_exact(stream, n: int) -> bytearray | None:
        buf, got = bytearray(n), 0
        view = memoryview(buf)
        while got < n:
            k = stream.readinto(view[got:])
            if not k:
                return None   # EOF (a partial last frame is not a frame)
            got += k
        return buf

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
            self.wants_audio = True   # a source that waits for the consumer goes on meanwhile
            self.cond.notify_all()
            try:
                self.cond.wait_for(lambda: self.audio_samples >= sample or self.audio_done or self.stopped,
                                   timeout=timeout)
            finally:
                self.wants_audio = False
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

    def damaged(self) -> str | None:
        """media.damaged_message's wording when ffmpeg went on past decoding errors (a truncated or
        corrupt input: it exits 0 but logs them), None for a clean decode. Call after the end."""
        self.proc.wait()
        for t in self.threads:
            if t.name == "log":
                t.join(timeout=5)   # every line read
        if not self.n_errors:
            return None
        errors = ["(not kept)"] * (self.n_errors - len(self.errors)) + list(self.errors)   # the count is all
        return damaged_message(self.info.spec, self.delivered, "\n".join(errors))

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
