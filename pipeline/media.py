"""ffmpeg / ffprobe helpers (through ffmpeg-python, which drives the system binaries)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import warnings
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple

import ffmpeg
import numpy as np

from pipeline.errors import InputError, JmtError


def require_ffmpeg() -> None:
    """Fails with a one-line instruction when ffmpeg or ffprobe is not on PATH."""
    missing = [tool for tool in ("ffmpeg", "ffprobe") if shutil.which(tool) is None]
    if missing:
        raise JmtError(f"{' and '.join(missing)} not found on PATH: install ffmpeg "
                       "(Debian/Ubuntu: apt-get install ffmpeg; or run `make setup` as root)")


def write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """Writes mono float audio in [-1, 1] as 16-bit PCM WAV."""
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(pcm.tobytes())


class VideoWriter:
    """Streams RGB frames into an H.264 + AAC mp4 with ffmpeg (bit-exact flags, so the same
    frames and audio give the same bytes).

    >>> with VideoWriter(path, width, height, fps, audio_wav=wav) as w:
    ...     w.write(frame)  # uint8 (H, W, 3)
    """

    def __init__(self, path: Path, width: int, height: int, fps: float, *,
                 audio_wav: Path | None = None, crf: int = 20) -> None:
        require_ffmpeg()
        self.path, self.shape = Path(path), (height, width, 3)
        video = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24",
                             s=f"{width}x{height}", framerate=fps)
        streams = [video] if audio_wav is None else [video, ffmpeg.input(str(audio_wav))]
        audio_opts: dict[str, Any] = {} if audio_wav is None else {
            "acodec": "aac", "audio_bitrate": "64k", "flags:a": "+bitexact"}
        self._proc = (
            ffmpeg.output(*streams, str(self.path), vcodec="libx264", pix_fmt="yuv420p",
                          crf=crf, preset="veryfast", movflags="+faststart",
                          fflags="+bitexact", map_metadata=-1, **{"flags:v": "+bitexact"},
                          **audio_opts)
            .overwrite_output()
            .global_args("-loglevel", "error", "-threads", "1")
            .run_async(pipe_stdin=True, pipe_stderr=True)
        )

    def write(self, frame: np.ndarray) -> None:
        """Appends one uint8 (H, W, 3) RGB frame."""
        if frame.shape != self.shape or frame.dtype != np.uint8:
            raise ValueError(f"frame must be uint8 {self.shape}, got {frame.dtype} {frame.shape}")
        self._proc.stdin.write(frame.tobytes())

    def close(self) -> None:
        """Finishes the file; raises with ffmpeg's message if encoding failed."""
        self._proc.stdin.close()
        err = self._proc.stderr.read().decode(errors="replace")
        if self._proc.wait() != 0:
            raise JmtError(f"ffmpeg failed writing {self.path}: {err.strip()[-500:]}")

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # do not leave a half-written file behind
            self._proc.kill()
            self._proc.wait()
            self.path.unlink(missing_ok=True)


# How the stored frames of a video turn into the displayed ones: the (transpose, hflip, vflip)
# applied in that order -> (clockwise rotation in degrees, mirrored after the rotation).
_TURNS = {(False, False, False): (0, False), (True, True, False): (90, False),
          (False, True, True): (180, False), (True, False, True): (270, False),
          (False, True, False): (0, True), (True, False, False): (90, True),
          (False, False, True): (180, True), (True, True, True): (270, True)}


@dataclass(frozen=True)
class Orientation:
    """How a video's stored frames are shown: what phones write (a display matrix, or the older
    `rotate` tag) instead of turning the pixels. jmt decodes with ffmpeg's own rotation off
    (`-noautorotate`) and applies this one, so every ffmpeg version gives the same frames, flips
    included, and the cache can record what was done.

    In frame pixels (x right, y down) the display matrix [a b; c d] maps a stored pixel (x, y)
    to (a x + c y, b x + d y): b = c = 0 keeps the axes (a < 0 mirrors x, d < 0 mirrors y);
    a = d = 0 swaps them (a transpose), then c < 0 mirrors x and b < 0 mirrors y."""

    transpose: bool = False
    hflip: bool = False
    vflip: bool = False
    source: str = "none"       # display matrix | rotate tag | none

    @property
    def rotation(self) -> int:
        """Clockwise degrees the stored frame is turned by for display (0, 90, 180, 270)."""
        return _TURNS[(self.transpose, self.hflip, self.vflip)][0]

    @property
    def mirrored(self) -> bool:
        """Whether the display also mirrors the frame left-right (after the rotation)."""
        return _TURNS[(self.transpose, self.hflip, self.vflip)][1]

    @property
    def identity(self) -> bool:
        return not (self.transpose or self.hflip or self.vflip)

    def display_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) as displayed, from the stored size."""
        return (height, width) if self.transpose else (width, height)

    def filters(self) -> list[tuple[str, tuple[str, ...]]]:
        """ffmpeg filters (name, args) that turn decoded (stored) frames into displayed ones."""
        return ([("transpose", ("cclock_flip",))] if self.transpose else []) + \
            ([("hflip", ())] if self.hflip else []) + ([("vflip", ())] if self.vflip else [])

    def filter_text(self) -> str:
        """The same as one `-vf` chain ('' for none)."""
        return ",".join(name + (f"={args[0]}" if args else "") for name, args in self.filters())

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """The same on a (H, W, ...) array (for tests and images)."""
        if self.transpose:
            frame = frame.swapaxes(0, 1)
        if self.hflip:
            frame = frame[:, ::-1]
        if self.vflip:
            frame = frame[::-1]
        return frame

    def describe(self) -> str:
        """e.g. 'rotated 90 degrees clockwise (display matrix)'; 'as stored' for none."""
        if self.identity:
            return "as stored"
        turn = f"rotated {self.rotation} degrees clockwise" if self.rotation else ""
        what = ", ".join(p for p in (turn, "mirrored" if self.mirrored else "") if p)
        return f"{what} ({self.source})"


def _matrix(text: str) -> list[int] | None:
    """ffprobe's displaymatrix text (three lines 'NNNNNNNN: a b u') -> its 9 integers."""
    values = [int(v) for line in text.strip().splitlines() for v in line.split(":", 1)[-1].split()]
    return values if len(values) == 9 else None


def orientation_of(stream: dict, path: Path | str = "") -> Orientation:
    """A video stream's Orientation from ffprobe's stream dict (side data, else the `rotate`
    tag); InputError naming the file for a turn that is not a multiple of 90 degrees."""
    for side in stream.get("side_data_list") or []:
        if side.get("side_data_type") != "Display Matrix":
            continue
        m = _matrix(side.get("displaymatrix", "") or "")
        if m is None and "rotation" in side:   # no matrix text: the counter-clockwise angle alone
            m = _rotation_matrix(-float(side["rotation"]))
        if m is not None:
            return _from_matrix(m[0], m[1], m[3], m[4], "display matrix", path)
    tag = (stream.get("tags") or {}).get("rotate")
    if tag not in (None, "", "0"):
        try:
            m = _rotation_matrix(float(tag))   # the tag counts clockwise
        except ValueError:
            raise InputError(f"{path}: rotate tag {tag!r} is not a number") from None
        return _from_matrix(m[0], m[1], m[3], m[4], "rotate tag", path)
    return Orientation()


def _rotation_matrix(clockwise: float) -> list[int]:
    """A display matrix (16.16 fixed point, as stored) turning frames `clockwise` degrees."""
    r = np.radians(clockwise)
    c, s = int(round(np.cos(r) * 65536)), int(round(np.sin(r) * 65536))
    # clockwise on screen (y down): (x, y) -> (x cos - y sin, x sin + y cos) = (a x + c y, b x + d y)
    return [c, s, 0, -s, c, 0, 0, 0, 1 << 30]


def _from_matrix(a: int, b: int, c: int, d: int, source: str, path: Path | str) -> Orientation:
    big = max(abs(a), abs(b), abs(c), abs(d)) or 1
    small = 0.02 * big   # a matrix within ~1 degree of a quarter turn counts as one
    if abs(b) <= small and abs(c) <= small and abs(a) > small and abs(d) > small:
        return Orientation(False, a < 0, d < 0, source)
    if abs(a) <= small and abs(d) <= small and abs(b) > small and abs(c) > small:
        return Orientation(True, c < 0, b < 0, source)
    angle = float(np.degrees(np.arctan2(b, a)))
    raise InputError(f"{path}: its {source} turns the picture by {angle:.1f} degrees; only quarter turns "
                     "are supported: re-encode it upright (ffmpeg -i IN -vf rotate=... OUT)")


@dataclass(frozen=True)
class MediaInfo:
    """What ffprobe says about a media file. `width` and `height` are the DISPLAYED size (a
    phone's portrait clip stored 1280x720 with a quarter-turn display matrix is 720x1280): the
    size of the frames `iter_frames` delivers."""

    path: Path
    duration: float            # container duration, s
    video_duration: float | None
    audio_duration: float | None
    fps: float | None
    n_frames: int | None       # as reported by the container (nb_frames), when present
    width: int | None
    height: int | None
    video_codec: str | None
    audio_codec: str | None
    sample_rate: int | None
    orientation: Orientation = Orientation()   # stored -> displayed (applied by iter_frames)


def _rate(text: str | None) -> float | None:
    if not text or text in ("0/0", "0"):
        return None
    num, _, den = text.partition("/")
    return float(num) / float(den or 1)


def _probe_or_fail(path: Path, **kwargs: Any) -> dict:
    try:
        return ffmpeg.probe(str(path), **kwargs)
    except ffmpeg.Error as exc:
        msg = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
        raise InputError(f"{path}: ffprobe cannot read it: {msg[-1] if msg else 'unknown error'}") from None


def _seconds(value: Any) -> float:
    return float(value) if value not in (None, "N/A", "") else np.nan


def probe(path: Path) -> MediaInfo:
    """Runs ffprobe; raises InputError naming the file when it is missing or unreadable."""
    require_ffmpeg()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    info = _probe_or_fail(path)
    v = next((s for s in info["streams"] if s.get("codec_type") == "video"), None)
    a = next((s for s in info["streams"] if s.get("codec_type") == "audio"), None)

    def dur(s: dict | None) -> float | None:
        return float(s["duration"]) if s and "duration" in s else None

    turn = orientation_of(v, path) if v else Orientation()
    width, height = turn.display_size(v.get("width"), v.get("height")) if v else (None, None)
    return MediaInfo(
        path=path,
        duration=float(info.get("format", {}).get("duration", 0.0)),
        video_duration=dur(v), audio_duration=dur(a),
        fps=_rate(v.get("avg_frame_rate")) if v else None,
        n_frames=int(v["nb_frames"]) if v and "nb_frames" in v else None,
        width=width, height=height,
        video_codec=v.get("codec_name") if v else None,
        audio_codec=a.get("codec_name") if a else None,
        sample_rate=int(a["sample_rate"]) if a and "sample_rate" in a else None,
        orientation=turn,
    )


def iter_frames(path: Path, width: int, height: int, *, batch: int = 32,
                orientation: Orientation | None = None, on_damaged: Callable[[str], None] | None = None):
    """Decodes a video as a stream of uint8 RGB batches (b, H, W, 3), never all in memory.

    Frames come out as displayed (`orientation`, default the file's own: probe), then scaled to
    width x height (pass probe()'s displayed size for no scaling). Every decoded frame is kept
    (`-vsync passthrough`), so the count is the decoder's, as `frame_times` counts them. A
    decoder that fails raises InputError naming the file after the frames that could be decoded.
    One that goes on past damage (a truncated or corrupt file: ffmpeg exits 0 but prints errors)
    delivers every frame it could decode, then reports it: `on_damaged(message)`, else a
    DamagedMedia warning (damaged_message's wording). A container that lists more frames than
    it holds (sparse or variable rates) is not damage: the decoder's count is the count.
    """
    require_ffmpeg()
    turn = probe(path).orientation if orientation is None else orientation
    stream = ffmpeg.input(str(path), noautorotate=None)   # ffmpeg's own turn off: ours, recorded
    for name, fargs in turn.filters():
        stream = stream.filter(name, *fargs)
    args = (
        stream
        .output("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}",
                vsync="passthrough")
        .global_args("-loglevel", "error", "-nostdin")
        .compile()
    )
    frame_bytes = width * height * 3
    decoded = 0
    # stderr goes to a file: a pipe could fill up with error lines and stall the decoder.
    with tempfile.TemporaryFile() as errfile:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=errfile)
        try:
            while True:
                # read into a fresh array: writable, as torch wants the numpy arrays it wraps
                out = np.empty((batch, height, width, 3), np.uint8)
                got = proc.stdout.readinto(memoryview(out).cast("B"))   # loops until full or EOF
                n = got // frame_bytes
                if n:
                    decoded += n
                    yield out[:n]
                if got < frame_bytes * batch:
                    break
        finally:
            proc.stdout.close()
            code = proc.wait()
        errfile.seek(0)
        err = errfile.read().decode(errors="replace").strip()
        if code != 0:
            raise InputError(f"{path}: ffmpeg cannot decode it: {err[-300:] or f'exit code {code}'}")
        if err:   # ffmpeg went on past a damaged stretch: the frames it delivered are real, but say so
            message = damaged_message(path, decoded, err)
            if on_damaged is None:
                warnings.warn(DamagedMedia(message))
            else:
                on_damaged(message)


class DamagedMedia(UserWarning):
    """A video that decodes with errors (truncated or corrupt): every frame that decoded is used
    and this warning, recorded in the stage's report, says so (`damaged_message`)."""


def damaged_message(source: Path | str, frames: int, errors: str) -> str:
    """The one wording of a damaged input, for every path that decodes (stage 1, predict, live)."""
    lines = [ln for ln in errors.strip().splitlines() if ln.strip()]
    last = re.sub(r"^\[[^]]*\]\s*", "", lines[-1]).strip() if lines else "decoding errors"
    return (f"{source}: damaged (truncated or corrupt): {frames} frames decoded; ffmpeg reported "
            f"{len(lines)} decoding error line(s), the last: {last}")


def _origin(info: dict) -> float:
    """The file's start (ffprobe's format start_time): time 0 of `frame_times` and `read_audio`."""
    t = _seconds(info.get("format", {}).get("start_time"))
    return 0.0 if np.isnan(t) else t


def start_time(path: Path) -> float:
    """A file's start (format start_time, s): time 0 of `frame_times` and `read_audio`."""
    return _origin(_probe_or_fail(path))


class AudioSpan(NamedTuple):
    """Where the first audio track plays, in s from the file's start (the `frame_times` clock)."""

    start: float          # the first decoded sample
    end: float | None     # the container's end of the track (None when it does not say)


def audio_span(path: Path) -> AudioSpan | None:
    """Start and end of the first audio track (None when there is none), from ffprobe.

    The start is the first decoded audio frame's time (decoding a few packets: the encoder
    delay that the decoder drops is already accounted for); the end is the stream's
    start_time + duration, which excludes the codec's tail padding.
    """
    require_ffmpeg()
    info = _probe_or_fail(path, select_streams="a:0", read_intervals="%+#8",
                          show_entries="frame=pts_time,best_effort_timestamp_time")
    if not info.get("streams"):
        return None
    stream, origin = info["streams"][0], _origin(info)
    firsts = [t for fr in info.get("frames", [])
              for t in (_seconds(fr.get("pts_time")), _seconds(fr.get("best_effort_timestamp_time")))
              if not np.isnan(t)]
    stream_start = _seconds(stream.get("start_time"))
    start = firsts[0] if firsts else (stream_start if not np.isnan(stream_start) else origin)
    end = stream_start + _seconds(stream.get("duration"))
    return AudioSpan(start - origin, None if np.isnan(end) else end - origin)


def read_audio(path: Path, sample_rate: int) -> np.ndarray:
    """Decodes a file's audio track to mono float32 at `sample_rate` (ffmpeg resamples).

    Sample k plays at k / sample_rate s from the file's start, the origin of `frame_times`:
    a track that starts after the file does is padded with silence in front (its start from
    `audio_span`); samples before the file's start are dropped. The tail keeps the codec's
    padding (cut it at `audio_span(...).end`).
    """
    require_ffmpeg()
    span = audio_span(path)
    try:
        out, _ = (
            ffmpeg.input(str(path))
            .output("pipe:", format="f32le", acodec="pcm_f32le", ac=1, ar=sample_rate)
            .global_args("-loglevel", "error", "-nostdin")
            .run(capture_stdout=True, capture_stderr=True)
        )
    except ffmpeg.Error as exc:
        msg = (exc.stderr or b"").decode(errors="replace").strip()
        raise InputError(f"{path}: ffmpeg cannot decode its audio: {msg[-300:]}") from None
    audio, _, _ = place_track(np.frombuffer(out, np.float32), 0, audio_start=span.start if span else 0.0,
                              audio_end=None, sr=sample_rate)
    return audio if audio.flags.writeable else audio.copy()   # frombuffer's bytes are read-only


def track_shift(audio_start: float, sr: int) -> int:
    """Track sample = decoded sample + shift: where the track starts on the frames' clock, in
    samples (`audio_span(...).start`; `read_audio` and live place a track by it)."""
    return int(round(audio_start * sr))


def place_track(raw: np.ndarray, raw_base: int, *, audio_start: float, audio_end: float | None,
                sr: int) -> tuple[np.ndarray, int, bool]:
    """Decoded samples (`raw[i]` is the decoder's sample `raw_base + i`) on the frames' clock:
    a late track (audio_start > 0) gets silence in front, an early one loses its first samples;
    samples from `audio_end` s on (a file's codec padding) are cut. Returns (samples, base: the
    track sample of samples[0], whether the end was reached)."""
    shift = track_shift(audio_start, sr)
    if shift > 0 and raw_base == 0:
        x, base = np.concatenate([np.zeros(shift, np.float32), raw]), 0
    elif shift < 0 and raw_base < -shift:
        x, base = raw[-shift - raw_base:], 0
    else:
        x, base = raw, raw_base + shift
    if audio_end is not None:
        cap = int(round(audio_end * sr))
        if base + len(x) >= cap:
            return x[:max(cap - base, 0)], base, True
    return x, base, False


class FrameTimes(NamedTuple):
    """Every decoded video frame's presentation time, and where the times came from."""

    times: np.ndarray  # float64 (n,), s from the file's start, strictly increasing
    source: str        # e.g. "frame pts" or "frame pts 66, packet dts 33, interpolated 1"


# Preference order for a frame's time; "interpolated" fills frames that have none of them.
_TIME_KEYS = (("pts_time", "frame pts"), ("pkt_dts_time", "packet dts"),
              ("best_effort_timestamp_time", "best effort"))


def frame_times(path: Path) -> FrameTimes:
    """The presentation time of EVERY frame the decoder outputs, in display order.

    The one frame timing of jmt: faces, audio, predict and `jmt cache verify` all use it, and
    its count equals the frames `iter_frames` decodes (both keep every decoded frame).
    ffprobe decodes the video stream (`-show_entries frame=...`; packets alone miss frames:
    in an AVI with B-frames a third of the packets carry no pts). Each frame takes its pts,
    else its packet's dts, else the decoder's best-effort time; frames with none are
    interpolated linearly between their neighbours (extrapolated at the ends by the median
    frame step, or 1/fps; a file with no time for any frame gets index / fps). If the mix
    does not increase, the best-effort times are used for every frame. Times count from the
    file's start (ffprobe's format start_time), the origin `read_audio` uses too. Raises
    InputError naming the file when times still go backwards.
    """
    require_ffmpeg()
    info = _probe_or_fail(path, select_streams="v:0",
                          show_entries="frame=pts_time,pkt_dts_time,best_effort_timestamp_time")
    frames = info.get("frames", [])  # only the first video stream's (select_streams)
    n = len(frames)
    if n == 0:
        raise InputError(f"{path}: no decodable video frames")
    stream = (info.get("streams") or [{}])[0]
    fps = _rate(stream.get("avg_frame_rate")) or _rate(stream.get("r_frame_rate")) or 25.0
    origin = _origin(info)
    table = np.array([[_seconds(fr.get(k)) for k, _ in _TIME_KEYS] for fr in frames])  # (n, 3)

    times, source = _pick_times(table, fps)
    if n > 1 and not (np.diff(times) > 0).all():  # e.g. pts and dts on different clocks
        times, source = _pick_times(table[:, 2:], fps, names=("best effort",))
    if n > 1 and not (np.diff(times) > 0).all():
        i = int(np.argmin(np.diff(times) > 0)) + 1
        raise InputError(f"{path}: frame {i} is shown at {times[i]:.3f} s, not after frame {i - 1} "
                         f"({times[i - 1]:.3f} s); remux it (ffmpeg -i IN -c copy -fflags +genpts OUT)")
    return FrameTimes(times - origin, source)


def _pick_times(table: np.ndarray, fps: float,
                names: tuple[str, ...] = tuple(name for _, name in _TIME_KEYS)) -> tuple[np.ndarray, str]:
    """First available column per row; rows with none are interpolated. -> (times, source)."""
    n = len(table)
    have = ~np.isnan(table)                                 # (n, k)
    first = np.where(have.any(1), have.argmax(1), len(names))  # column used per frame
    times = np.full(n, np.nan)
    known = first < len(names)
    times[known] = table[np.flatnonzero(known), first[known]]
    counts = {name: int((first == j).sum()) for j, name in enumerate(names)}
    counts["interpolated"] = int((~known).sum())
    if not known.any():
        counts = {"index / fps": n}
        times = np.arange(n) / fps
    elif not known.all():
        idx = np.flatnonzero(known)
        step = float(np.median(np.diff(times[idx]) / np.diff(idx))) if len(idx) > 1 else 1.0 / fps
        times = np.interp(np.arange(n), idx, times[idx])
        before, after = np.arange(n) < idx[0], np.arange(n) > idx[-1]
        times[before] = times[idx[0]] - (idx[0] - np.flatnonzero(before)) * step
        times[after] = times[idx[-1]] + (np.flatnonzero(after) - idx[-1]) * step
    used = [(name, c) for name, c in counts.items() if c]
    source = used[0][0] if len(used) == 1 else ", ".join(f"{name} {c}" for name, c in used)
    return times, source


def estimate_frames(path: Path) -> int:
    """A video's frame count from its container (no decoding), for progress bars."""
    info = probe(path)
    if info.n_frames:
        return info.n_frames
    return int(round((info.video_duration or info.duration) * (info.fps or 25.0)))


def probe_video(path: Path) -> MediaInfo:
    """probe() for a file that must have a video stream (InputError naming it otherwise)."""
    info = probe(path)
    if info.video_codec is None:
        raise InputError(f"{path}: no video stream (an audio-only file?)")
    return info
