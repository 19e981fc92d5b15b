"""`jmt audio`: each video's audio track -> log-mel spectrogram and every frame's window.

ffmpeg decodes the track to mono at `audio.sample_rate` (no torchcodec needed); torchaudio
computes the log-mel spectrogram (`audio.n_mels` bands, `win_ms` window, `hop_ms` hop).
Each video frame i hears the `window_s` seconds ending when the frame ends
(t_i + 1/fps), as in the JMT authors' code: `frame_end[i]` is the spectrogram index where
that window ends, so stage 1 and 2 read `logmel[frame_end[i] - W : frame_end[i]]`.
The decoded track itself is kept too (`waveform`, int16) for the waveform backbones, which
get each frame's window in samples from `sample_windows`.
A video without an audio track gets an all-masked entry and a warning, not a crash.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Annotated, Callable

import numpy as np
import torch
import torchaudio
import typer

from pipeline import cache
from pipeline.config import DEFAULT_PARAMS, Params, load_params
from pipeline.corpus.entries import CorpusEntry, load_corpus
from pipeline.errors import InputError
from pipeline.media import audio_span, estimate_frames, frame_times, place_track, probe_video, read_audio
from pipeline.stage1.runner import StageResult, run_stage
from pipeline.stage1.voice import frame_spans, frame_voice

ALGORITHM = 3  # bump when a code change alters what this stage writes (see faces.ALGORITHM); 2: + waveform
# 3: frame_times for every frame, the track placed on the file's clock, vad_prob and voice
LOG_FLOOR = 1e-6  # logmel = log(mel power + LOG_FLOOR)
FRAME_DATASETS = ["frame_end", "audio_valid", "energy_db", "vad_prob", "voice", "timestamps"]


def stage_config(params: Params) -> dict:
    """The content-relevant config of the audio stage (hashed into every entry)."""
    return {"algorithm": ALGORITHM, **params.audio.model_dump(exclude={"out", "on_error"})}


def window_frames(params: Params) -> int:
    """Spectrogram frames in one video frame's window."""
    return int(round(params.audio.window_s * 1000.0 / params.audio.hop_ms))


def sample_windows(timestamps: np.ndarray, fps: float, window_s: float, sr: int) -> np.ndarray:
    """Each video frame's audio window in samples, int64 (n, 2) [start, end): the `window_s`
    seconds ending when the frame ends (t_i + 1/fps), all of one length; start < 0 or end past
    the track means silence there (the waveform backbones' input, as `frame_end` is logmel's)."""
    end = np.round((np.asarray(timestamps, np.float64) + 1.0 / fps) * sr).astype(np.int64)
    return np.stack([end - int(round(window_s * sr)), end], axis=1)


def write_waveform(f, audio: np.ndarray) -> None:
    """Stores the decoded mono track as int16 (x 1/32767), gzip-chunked (docs/cache.md)."""
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
    if len(pcm):  # 64 Ki-sample (4 s) chunks; HDF5 cannot chunk an empty dataset
        f.create_dataset("waveform", data=pcm, chunks=(min(len(pcm), 1 << 16),),
                         compression="gzip", compression_opts=1)
    else:
        f.create_dataset("waveform", data=pcm)
    f.attrs["waveform_scale"] = 1.0 / 32767.0


def read_waveform(f) -> np.ndarray:
    """An audio cache file's waveform as float32 in [-1, 1]; a clear error for old files."""
    if "waveform" not in f:
        raise InputError(f"{f.filename}: audio cache has no waveform (written by an older jmt); "
                         "re-run `jmt audio`")
    return f["waveform"][...].astype(np.float32) * np.float32(f.attrs["waveform_scale"])


def mel_spectrogram(params: Params, *, center: bool = True) -> torchaudio.transforms.MelSpectrogram:
    """The audio stage's mel power spectrogram (window `win_ms`, hop `hop_ms`, n_fft the next
    power of two); `center` False: frames start at sample 0 (`jmt live` pads itself)."""
    cfg = params.audio
    win = int(round(cfg.win_ms * cfg.sample_rate / 1000))
    hop = int(round(cfg.hop_ms * cfg.sample_rate / 1000))
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=cfg.sample_rate, n_fft=1 << (win - 1).bit_length(), win_length=win, hop_length=hop,
        f_min=cfg.f_min, f_max=min(cfg.f_max, cfg.sample_rate / 2), n_mels=cfg.n_mels,
        power=2.0, center=center)


def logmel(audio: np.ndarray, params: Params) -> np.ndarray:
    """float32 (n_samples,) -> (spectrogram frames, n_mels) natural-log mel power."""
    mel = mel_spectrogram(params)
    with torch.no_grad():
        spec = mel(torch.as_tensor(audio, dtype=torch.float32))   # (n_mels, frames)
    return torch.log(spec + LOG_FLOOR).T.contiguous().numpy()


def window_ends(timestamps: np.ndarray, fps: float, hop_s: float, n_spec: int | None) -> np.ndarray:
    """For each video frame, int64 (n,): the spectrogram index where its window ends (exclusive;
    spectrogram frame j is centred at j * hop_s): the last frame centred at or before the frame's
    end (t + 1/fps), clipped to [0, n_spec]; `n_spec` None: the spectrogram goes on (`jmt live`)."""
    ends = np.asarray(timestamps, np.float64) + 1.0 / fps
    end = np.floor(ends / hop_s + 1e-9).astype(np.int64) + 1
    return np.clip(end, 0, n_spec) if n_spec is not None else np.maximum(end, 0)


def inside_track(timestamps: np.ndarray, fps: float, audio_start: float, audio_end: float,
                 has_audio: bool) -> np.ndarray:
    """For each video frame, bool (n,): whether it overlaps the audio track, which plays from
    `audio_start` to `audio_end` s on the file's clock (inf: a track still playing)."""
    t = np.asarray(timestamps, np.float64)
    eps = 1e-6  # times are read from ffprobe with 1 us resolution
    return (t < audio_end - eps) & (t + 1.0 / fps > audio_start + eps) & has_audio


def frame_windows(timestamps: np.ndarray, fps: float, n_spec: int, hop_s: float,
                  audio_seconds: float, audio_start: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """For each video frame: the spectrogram index where its window ends (`window_ends`), and
    whether the frame lies inside the audio track (`inside_track`), which plays from
    `audio_start` to `audio_seconds` s on the file's clock."""
    return (window_ends(timestamps, fps, hop_s, n_spec),
            inside_track(timestamps, fps, audio_start, audio_seconds, n_spec > 0))


def frame_samples(start: float, stop: float, sr: int) -> tuple[int, int]:
    """The track samples [lo, hi) played while a frame is on screen, [start, stop) s."""
    return max(0, int(start * sr)), max(0, int(stop * sr))


def level_db(samples: np.ndarray) -> float:
    """RMS level (dBFS) of a frame's samples, rounded to float32 as the cache stores it; -120
    (the floor) where there are none."""
    if not len(samples):
        return -120.0
    level = 10 * np.log10(np.mean(samples.astype(np.float64) ** 2) + 1e-12)
    return max(float(np.float32(level)), -120.0)


def energy_db(audio: np.ndarray, timestamps: np.ndarray, fps: float, sr: int) -> np.ndarray:
    """`level_db` of the samples shown with each frame (until the next one), float32 (n,)."""
    out = np.full(len(timestamps), -120.0, np.float32)
    for i, (t, stop) in enumerate(zip(*frame_spans(timestamps, fps))):
        out[i] = level_db(audio[slice(*frame_samples(t, stop, sr))])
    return out


def process_video(video: Path, entries: list[CorpusEntry], hashes: dict[str, str], params: Params,
                  advance: Callable[[int], None]) -> dict[str, dict]:
    """Computes one video's spectrogram and frame windows; writes one file per entry."""
    cfg, out = params.audio, params.path(params.audio.out)
    t0 = time.time()
    info = probe_video(video)
    timing = frame_times(video)
    timestamps = timing.times
    fps = info.fps or 25.0
    if len(timestamps) == 0:
        raise InputError(f"{video}: no video frames")
    sr = cfg.sample_rate
    if info.audio_codec is None:
        warnings.warn(f"{video.name}: no audio stream; its audio is masked for every frame")
        audio, start, seconds = np.zeros(0, np.float32), 0.0, 0.0
    else:  # sample k plays at k / sr s on the clock of `timestamps` (silence before a late track)
        audio, span = read_audio(video, sr), audio_span(video)
        start = span.start if span else 0.0
        seconds = min(span.end, len(audio) / sr) if span and span.end else len(audio) / sr
        # read_audio has placed the start already; the codec's tail padding goes
        audio, _, _ = place_track(audio, 0, audio_start=0.0, audio_end=seconds, sr=sr)
    spec = logmel(audio, params) if len(audio) else np.zeros((0, cfg.n_mels), np.float32)
    frame_end, valid = frame_windows(timestamps, fps, len(spec), cfg.hop_ms / 1000.0, seconds, start)
    level = energy_db(audio, timestamps, fps, sr)
    vad_prob, voice = frame_voice(audio, sr, timestamps, fps, level, valid, cfg)
    stats = {}
    for e in entries:
        with cache.write_entry(out, e.name, stage="audio", config=stage_config(params), hash_=hashes[e.name],
                               attrs={"video": e.source, "fps": fps, "side": e.side,
                                      "has_audio": info.audio_codec is not None,
                                      "audio_seconds": seconds, "audio_start": start,
                                      "timestamps_source": timing.source,
                                      "window_frames": window_frames(params),
                                      "log_floor": LOG_FLOOR, "n_frames": len(timestamps),
                                      "sample_rate": sr, "window_s": cfg.window_s}) as f:
            write_waveform(f, audio)
            if len(spec):
                f.create_dataset("logmel", data=spec, chunks=(min(len(spec), 4096), cfg.n_mels),
                                 compression="gzip", compression_opts=1)
            else:  # no audio track: an empty spectrogram (HDF5 cannot chunk zero rows)
                f.create_dataset("logmel", data=spec)
            app = cache.Appender(f, cache.LAYOUTS["audio"], FRAME_DATASETS)
            app.append(frame_end=frame_end, audio_valid=valid, energy_db=level, vad_prob=vad_prob,
                       voice=voice, timestamps=timestamps)
        stats[e.name] = {"frames": len(timestamps), "audio_seconds": round(seconds, 3),
                         "valid_rate": round(float(valid.mean()), 4), "voice_rate": round(float(voice.mean()), 4),
                         "seconds": round(time.time() - t0, 2)}
    advance(len(timestamps) * len(entries))
    return stats


class AudioProcess:
    """One video's audio, in whichever process runs it (this one, or a Ray worker)."""

    def __init__(self, params: Params) -> None:
        self.params = params

    def __call__(self, video: Path, entries: list[CorpusEntry], hashes: dict[str, str],
                 advance: Callable[[int], None]) -> dict[str, dict]:
        return process_video(video, entries, hashes, self.params, advance)


def run_audio(params: Params) -> StageResult:
    """Runs the audio stage over the corpus (engine: params.run); returns what it did (also in
    report.json)."""
    return run_stage("audio", params.path(params.audio.out), load_corpus(params), stage_config(params),
                     params.audio.on_error, AudioProcess(params), estimate_frames,
                     run=params.run, resources=params.run.audio)


def command(params: Annotated[Path, typer.Option(help="Params file.")] = DEFAULT_PARAMS) -> None:
    """Compute log-mel spectrograms and per-frame audio windows (stage 1)."""
    run_audio(load_params(params))
