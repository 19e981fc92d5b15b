"""ffmpeg / ffprobe helpers (through ffmpeg-python, which drives the system binaries)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class MediaInfo:
    """What ffprobe says about a media file."""

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


def _rate(text: str | None) -> float | None:
    if not text or text in ("0/0", "0"):
        return None
    num, _, den = text.partition("/")
    return float(num) / float(den or 1)


def probe(path: Path) -> MediaInfo:
    """Runs ffprobe; raises InputError naming the file when it is missing or unreadable."""
    require_ffmpeg()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        info = ffmpeg.probe(str(path))
    except ffmpeg.Error as exc:
        msg = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
        raise InputError(f"{path}: ffprobe cannot read it: {msg[-1] if msg else 'unknown error'}") from None
    v = next((s for s in info["streams"] if s.get("codec_type") == "video"), None)
    a = next((s for s in info["streams"] if s.get("codec_type") == "audio"), None)

    def dur(s: dict | None) -> float | None:
        return float(s["duration"]) if s and "duration" in s else None

    return MediaInfo(
        path=path,
        duration=float(info.get("format", {}).get("duration", 0.0)),
        video_duration=dur(v), audio_duration=dur(a),
        fps=_rate(v.get("avg_frame_rate")) if v else None,
        n_frames=int(v["nb_frames"]) if v and "nb_frames" in v else None,
        width=v.get("width") if v else None, height=v.get("height") if v else None,
        video_codec=v.get("codec_name") if v else None,
        audio_codec=a.get("codec_name") if a else None,
        sample_rate=int(a["sample_rate"]) if a and "sample_rate" in a else None,
    )


def iter_frames(path: Path, width: int, height: int, *, batch: int = 32):
    """Decodes a video as a stream of uint8 RGB batches (b, H, W, 3), never all in memory.

    Frames are scaled to width x height. Every decoded frame is kept (`-vsync passthrough`),
    so the count matches the container's frames, not a resampled rate. A decoding error
    (corrupt or truncated file) raises InputError naming the file after the frames that
    could be decoded.
    """
    require_ffmpeg()
    args = (
        ffmpeg.input(str(path))
        .output("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}",
                vsync="passthrough")
        .global_args("-loglevel", "error", "-nostdin")
        .compile()
    )
    frame_bytes = width * height * 3
    # stderr goes to a file: a pipe could fill up with error lines and stall the decoder.
    with tempfile.TemporaryFile() as errfile:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=errfile)
        try:
            while True:
                buf = proc.stdout.read(frame_bytes * batch)
                n = len(buf) // frame_bytes
                if n:
                    yield np.frombuffer(buf[: n * frame_bytes], np.uint8).reshape(n, height, width, 3)
                if len(buf) < frame_bytes * batch:
                    break
        finally:
            proc.stdout.close()
            code = proc.wait()
        if code != 0:
            errfile.seek(0)
            err = errfile.read().decode(errors="replace").strip()
            raise InputError(f"{path}: ffmpeg cannot decode it: {err[-300:] or f'exit code {code}'}")


def read_audio(path: Path, sample_rate: int) -> np.ndarray:
    """Decodes a file's audio track to mono float32 at `sample_rate` (ffmpeg resamples)."""
    require_ffmpeg()
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
    return np.frombuffer(out, np.float32).copy()


def video_timestamps(path: Path) -> np.ndarray:
    """Presentation times (s) of the video stream's frames, from packets (no decoding).

    Packets come in decode order; sorting their pts gives display order. Returns float64 (n,).
    """
    require_ffmpeg()
    try:
        info = ffmpeg.probe(str(path), select_streams="v:0", show_entries="packet=pts_time")
    except ffmpeg.Error as exc:
        msg = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
        raise InputError(f"{path}: ffprobe cannot read it: {msg[-1] if msg else 'unknown error'}") from None
    pts = [float(p["pts_time"]) for p in info.get("packets", []) if p.get("pts_time") not in (None, "N/A")]
    return np.sort(np.asarray(pts, dtype=np.float64))


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
