"""A voiced 'speaker' whose prosody follows the labels (source-filter synthesis in numpy).

- arousal (main audio cue): pitch, loudness and syllable rate rise with arousal;
- valence (weaker audio cue): spectral brightness (the harmonics' tilt) rises with valence.
Syllables cycle through five vowels (formants of adult speech) with short pauses, so the
track sounds like babble, not a tone. Plain numpy keeps it deterministic from a seed on any
machine (a TTS engine's output changes with its version).
"""

from __future__ import annotations

import numpy as np

# (F1, F2, F3) in Hz for /a/, /e/, /i/, /o/, /u/ (classic adult averages).
VOWELS = np.array([[730, 1090, 2440], [530, 1840, 2480], [270, 2290, 3010],
                   [570, 840, 2410], [300, 870, 2240]], dtype=np.float64)
BANDWIDTHS = np.array([90.0, 110.0, 150.0])
FORMANT_GAINS = np.array([1.0, 0.6, 0.3])
CONTROL_HZ = 200  # rate at which slowly varying controls are computed


def pitch(base_f0: np.ndarray | float, arousal: np.ndarray) -> np.ndarray:
    """Fundamental frequency in Hz: the speaker's base pitch, x1.5 at arousal +1, x0.67 at -1."""
    return np.asarray(base_f0) * 2.0 ** (0.58 * np.asarray(arousal))


def loudness_db(arousal: np.ndarray) -> np.ndarray:
    """Level in dBFS before envelopes: -30 dB at arousal -1 up to -14 dB at +1."""
    return -22.0 + 8.0 * np.asarray(arousal)


def syllable_rate(arousal: np.ndarray) -> np.ndarray:
    """Syllables per second: 2 at arousal -1 up to 5.5 at +1."""
    return 3.75 + 1.75 * np.asarray(arousal)


def spectral_tilt(valence: np.ndarray) -> np.ndarray:
    """Harmonic amplitude falls as k**-tilt: a smaller tilt (brighter voice) for higher valence."""
    return 1.5 - 0.6 * np.asarray(valence)


def synthesize(valence: np.ndarray, arousal: np.ndarray, base_f0: np.ndarray,
               fps: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Synthesises the voice for per-frame controls (each (n_frames,)).

    Returns float32 (round(n_frames * sample_rate / fps),) in [-1, 1].
    """
    n_frames = len(valence)
    n = int(round(n_frames * sample_rate / fps))
    t = np.arange(n) / sample_rate
    frame_t = (np.arange(n_frames) + 0.5) / fps

    # Slow controls at CONTROL_HZ, then linearly interpolated to samples.
    ct = np.arange(0, n / sample_rate + 1.0 / CONTROL_HZ, 1.0 / CONTROL_HZ)
    c_val = np.interp(ct, frame_t, valence)
    c_aro = np.interp(ct, frame_t, arousal)
    c_f0 = pitch(np.interp(ct, frame_t, base_f0), c_aro) * (1 + 0.02 * np.sin(2 * np.pi * 5.5 * ct))
    f0 = np.interp(t, ct, c_f0)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate

    # Syllable clock: envelope rises and falls once per syllable; some syllables are pauses.
    syl = np.cumsum(np.interp(t, ct, syllable_rate(c_aro))) / sample_rate
    index = syl.astype(np.int64)
    n_syl = int(index[-1]) + 1 if n else 1
    vowel_of = rng.integers(len(VOWELS), size=n_syl)
    pause = rng.random(n_syl) < 0.18
    frac = syl - index
    env = np.clip(np.sin(np.pi * frac / 0.8), 0, None) ** 0.7 * (frac < 0.8)
    env = env * ~pause[index]

    # Formants per syllable, smoothed at control rate so vowels glide instead of clicking.
    c_index = np.interp(ct, t, index).astype(np.int64) if n else np.zeros(1, np.int64)
    c_formants = VOWELS[vowel_of[np.minimum(c_index, n_syl - 1)]]  # (C, 3)
    kernel = np.ones(9) / 9
    c_formants = np.stack([np.convolve(np.pad(c_formants[:, j], 4, mode="edge"), kernel, "valid")
                           for j in range(3)], axis=1)
    c_tilt = spectral_tilt(c_val)

    voice = np.zeros(n)
    n_harm = int(sample_rate / 2 / max(60.0, float(c_f0.min())))
    for k in range(1, min(n_harm, 60) + 1):
        fk = k * c_f0  # (C,)
        resonance = (FORMANT_GAINS / (1 + ((fk[:, None] - c_formants) / BANDWIDTHS) ** 2)).sum(1)
        amp = k ** (-c_tilt) * (0.15 + resonance) * (fk < sample_rate / 2 - 300)
        voice += np.interp(t, ct, amp) * np.sin(k * phase)
    voice /= np.abs(voice).max() + 1e-9
    breath = 0.03 * rng.standard_normal(n)  # a little aspiration noise
    gain = 10 ** (np.interp(t, ct, loudness_db(c_aro)) / 20)
    return np.clip((voice + breath) * env * gain, -1, 1).astype(np.float32)


def degrade(audio: np.ndarray, start: int, stop: int, mode: str,
            rng: np.random.Generator, ramp: int = 160) -> None:
    """Makes samples [start, stop) unreliable in place: 'silent' or drowned in 'noise'."""
    seg = audio[start:stop]
    fade = np.zeros(len(seg), dtype=np.float32)  # 1 keeps the voice, 0 removes it
    r = min(ramp, len(seg) // 2)
    if r:
        fade[:r] = np.linspace(1, 0, r)
        fade[-r:] = np.linspace(0, 1, r)
    if mode == "silent":
        seg *= fade
    elif mode == "noise":  # white noise ~10 dB above the loudest speech
        seg += (1 - fade) * 0.35 * rng.standard_normal(len(seg)).astype(np.float32)
        np.clip(seg, -1, 1, out=seg)
    else:
        raise ValueError(f"unknown audio degradation {mode!r}")


def noise_floor(n: int, rng: np.random.Generator, level_db: float = -60.0) -> np.ndarray:
    """A faint room-noise floor, so 'silence' is not digital zero."""
    return (10 ** (level_db / 20) * rng.standard_normal(n)).astype(np.float32)
