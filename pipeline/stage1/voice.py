"""Voice activity per video frame: the audio mask that stage 2 sees (`audio.mask` in params).

Two detectors, both mapped to video frames over the samples shown with each frame
([t_i, t_{i+1})), both only inside the audio track:

- `energy`: the frame's RMS level (`energy_db`, dBFS) above `audio.energy_db`;
- `vad`: silero-vad (MIT; the model ships inside the `silero-vad` wheel, runs offline), its
  speech probability per 32 ms chunk (with `audio.vad_voicing`, the larger of it and the
  chunk's periodicity, see `voicing`) averaged over the frame, above `audio.vad_threshold`.

Then gaps shorter than `audio.fill_gaps_s` between voiced frames are filled (a hangover
for the pauses between syllables and words): the truth wanted for a per-frame emotion model
is "the speaker is talking in this stretch", not "a vowel sounds in this frame".
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import torch

from pipeline.config import AudioParams

VAD_RATE = 16000   # silero-vad runs at 16 kHz; other rates are resampled
VAD_CHUNK = 512    # samples per speech probability at 16 kHz (32 ms)
PITCH_HZ = (60.0, 500.0)  # voicing: the pitch range searched for periodicity
MAX_LAG = int(VAD_RATE / PITCH_HZ[0])  # voicing: samples it reads past a chunk (the longest pitch period)


@functools.lru_cache(maxsize=1)
def silero() -> torch.jit.ScriptModule:
    """silero-vad's model (one per process; `SileroStream` runs it over a track)."""
    # silero_vad sets torch's thread count to 1 when imported: keep the caller's setting.
    threads = torch.get_num_threads()
    try:
        with warnings.catch_warnings():  # its loader's deprecation notices (importlib, torch.jit)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            from silero_vad import load_silero_vad
            return load_silero_vad(onnx=False)
    finally:
        torch.set_num_threads(threads)


class SileroStream:
    """silero-vad over one 16 kHz track, chunk after chunk, as the model is meant to run: its
    state carries over from one call's last chunk to the next call's first (offline: the whole
    track in one call; `jmt live`: the chunks as they arrive). ~1 ms a chunk on one thread."""

    def __init__(self) -> None:
        self.model = silero()
        self.model.reset_states()

    @torch.no_grad()
    def __call__(self, chunks: np.ndarray) -> np.ndarray:
        """float32 (n, VAD_CHUNK) consecutive chunks -> float32 (n,) speech probabilities."""
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # one small call per chunk: threads only add overhead (~70x slower on a busy CPU)
        try:
            probs = [float(self.model(c, VAD_RATE)) for c in torch.as_tensor(chunks).reshape(-1, 1, VAD_CHUNK)]
        finally:
            torch.set_num_threads(threads)
        return np.asarray(probs, np.float32)


def to_vad_rate(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """The track as float32 at VAD_RATE (16 kHz)."""
    x = np.asarray(audio, np.float32)
    if sample_rate == VAD_RATE:
        return x
    import torchaudio
    return torchaudio.functional.resample(torch.as_tensor(x), sample_rate, VAD_RATE).numpy()


def voicing(x16: np.ndarray, min_db: float) -> np.ndarray:
    """Periodicity of each VAD_CHUNK chunk of a 16 kHz track, float32 in [0, 1]: the highest
    normalised autocorrelation over pitch periods in PITCH_HZ (near 1 for a voiced vowel,
    ~0.15 for white noise); 0 for chunks quieter than `min_db` dBFS RMS.

    silero-vad alone calls a synthetic source-filter voice (pure vowels, no consonants)
    non-speech after a second or two, as it does singing; voicing catches it.
    """
    n = -(-len(x16) // VAD_CHUNK)
    max_lag, min_lag = MAX_LAG, int(VAD_RATE / PITCH_HZ[1])
    x = np.zeros(n * VAD_CHUNK + max_lag, np.float64)
    x[: len(x16)] = x16
    nfft = 1 << (VAD_CHUNK + max_lag - 1).bit_length()
    out = np.zeros(n, np.float32)
    sq = np.concatenate([[0.0], np.cumsum(x * x)])
    for b0 in range(0, n, 1024):  # blocks of chunks: memory stays small on long tracks
        idx = np.arange(b0, min(n, b0 + 1024))
        starts = idx * VAD_CHUNK
        head = x[starts[:, None] + np.arange(VAD_CHUNK)]                      # (b, CHUNK)
        seg = x[starts[:, None] + np.arange(VAD_CHUNK + max_lag)]             # (b, CHUNK + max_lag)
        xc = np.fft.irfft(np.conj(np.fft.rfft(head, nfft)) * np.fft.rfft(seg, nfft), nfft)
        lags = np.arange(min_lag, max_lag + 1)
        cross = xc[:, lags]                                                   # (b, lags)
        e0 = sq[starts + VAD_CHUNK] - sq[starts]                              # (b,)
        e_lag = sq[starts[:, None] + lags + VAD_CHUNK] - sq[starts[:, None] + lags]
        r = cross / np.sqrt(e0[:, None] * e_lag + 1e-20)
        level = 10 * np.log10(e0 / VAD_CHUNK + 1e-12)
        out[idx] = np.where(level > min_db, np.clip(r.max(1), 0, 1), 0.0)
    return out


def chunk_scores(stream: SileroStream, x16: np.ndarray, n: int, *, with_voicing: bool,
                 min_db: float) -> np.ndarray:
    """The `vad` score of the first `n` VAD_CHUNK chunks of a 16 kHz track `x16`, float32 (n,):
    silero-vad's speech probability (`stream`, which goes on from the chunk before) or,
    with_voicing, the larger of it and the chunk's `voicing` (which also reads the MAX_LAG
    samples after the chunk: give them). Samples past `x16` are silence."""
    x = np.zeros(n * VAD_CHUNK, np.float32)
    m = min(len(x16), len(x))
    x[:m] = x16[:m]
    score = stream(x.reshape(n, VAD_CHUNK))                    # (n,)
    if with_voicing:
        score = np.maximum(score, voicing(x16, min_db)[:n])
    return score


def frame_spans(timestamps: np.ndarray, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """[start, stop) s of each frame on screen: until the next frame, the last for 1/fps."""
    t = np.asarray(timestamps, np.float64)
    return t, np.append(t[1:], t[-1] + 1.0 / fps) if len(t) else t


def frame_means(values: np.ndarray, step_s: float, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Time-weighted mean of a step function (values[k] on [k*step_s, (k+1)*step_s)) over each
    [start, stop); 0 outside the function's support. Exact, through its running integral."""
    knots = np.arange(len(values) + 1) * step_s
    integral = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64) * step_s])
    area = np.interp(stops, knots, integral) - np.interp(starts, knots, integral)
    return (area / np.maximum(stops - starts, 1e-9)).astype(np.float32)


def fill_gaps(mask: np.ndarray, starts: np.ndarray, stops: np.ndarray, max_gap_s: float) -> np.ndarray:
    """Fills runs of False between two True frames that last less than max_gap_s
    (morphological closing in time: the edges of a voiced stretch are not moved)."""
    out = np.asarray(mask, bool).copy()
    edges = np.flatnonzero(np.diff(np.concatenate([[1], out.astype(np.int8), [1]])))
    for a, b in zip(edges[::2], edges[1::2]):           # [a, b) is a run of False
        if 0 < a and b < len(out) and stops[b - 1] - starts[a] < max_gap_s:
            out[a:b] = True
    return out


def vad_frame_probs(audio: np.ndarray, sample_rate: int, starts: np.ndarray, stops: np.ndarray,
                    *, with_voicing: bool, min_db: float) -> np.ndarray:
    """The `vad` score of each frame, float32 (n,) in [0, 1]: per 32 ms chunk, silero-vad's
    speech probability (or, with_voicing, the larger of it and the chunk's `voicing`),
    averaged over the frame's [start, stop) s."""
    x16 = to_vad_rate(audio, sample_rate)
    if len(x16) == 0:
        return np.zeros(len(starts), np.float32)
    score = chunk_scores(SileroStream(), x16, -(-len(x16) // VAD_CHUNK), with_voicing=with_voicing, min_db=min_db)
    return frame_means(score, VAD_CHUNK / VAD_RATE, starts, stops)


def voice_mask(score: np.ndarray, threshold: float, inside: np.ndarray, starts: np.ndarray,
               stops: np.ndarray, fill_gaps_s: float) -> np.ndarray:
    """Frames with voice: score above threshold inside the track, short gaps filled."""
    voiced = (np.asarray(score) > threshold) & inside
    return fill_gaps(voiced, starts, stops, fill_gaps_s) & inside


def frame_voice(audio: np.ndarray, sample_rate: int, timestamps: np.ndarray, fps: float,
                level_db: np.ndarray, inside: np.ndarray, cfg: AudioParams) -> tuple[np.ndarray, np.ndarray]:
    """The audio stage's voice datasets for one track: (vad_prob float32 (n,), voice bool (n,)).

    `vad_prob` is always computed (so one cache can be re-masked either way); `voice` is
    the mask `cfg.mask` picks: `vad` thresholds vad_prob at `cfg.vad_threshold`, `energy`
    thresholds `level_db` at `cfg.energy_db`; both fill gaps under `cfg.fill_gaps_s`.
    """
    starts, stops = frame_spans(timestamps, fps)
    prob = vad_frame_probs(audio, sample_rate, starts, stops, with_voicing=cfg.vad_voicing,
                           min_db=cfg.energy_db)
    score, threshold = (prob, cfg.vad_threshold) if cfg.mask == "vad" else (level_db, cfg.energy_db)
    return prob, voice_mask(score, threshold, inside, starts, stops, cfg.fill_gaps_s)
