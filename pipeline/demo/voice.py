"""A speaking voice whose prosody carries the labels (source-filter synthesis in numpy).

The voice speaks in phrases of 3-7 syllables, each a vowel (five formant sets) with a pitch
accent, phrases separated by a short pause. The labels drive it the way they drive speech:

- arousal: pitch level (x0.7 to x1.45 of the speaker's base pitch), pitch range (the accent on
  each syllable spans 1 to 7 semitones), loudness (-34 to -14 dBFS) and syllable rate (2.5 to
  6 per second);
- valence: spectral tilt (a brighter voice for higher valence), formants raised by up to 8 %
  (the shorter vocal tract of a smile) and the pitch contour of each syllable (rising for
  positive valence, falling for negative).

Loudness is the level of the voiced sound alone (the tilt and pitch do not change it), so
each cue moves one thing. Plain numpy keeps it deterministic from a seed on any machine (a
TTS engine's output changes with its version).
"""

from __future__ import annotations

import numpy as np

# (F1, F2, F3) in Hz for /a/, /e/, /i/, /o/, /u/ (classic adult averages).
VOWELS = np.array([[730, 1090, 2440], [530, 1840, 2480], [270, 2290, 3010],
                   [570, 840, 2410], [300, 870, 2240]], dtype=np.float64)
BANDWIDTHS = np.array([90.0, 110.0, 150.0])
FORMANT_GAINS = np.array([1.0, 0.6, 0.3])
CONTROL_HZ = 200  # rate at which slowly varying controls are computed
PHRASE_SYLLABLES = (3, 7)  # syllables per phrase (inclusive); one silent slot follows each phrase


def pitch(base_f0: np.ndarray | float, arousal: np.ndarray) -> np.ndarray:
    """Pitch level in Hz (before the syllable accents): the speaker's base pitch, x1.45 at
    arousal +1, x0.69 at -1."""
    return np.asarray(base_f0) * 2.0 ** (0.54 * np.asarray(arousal))


def pitch_range(arousal: np.ndarray) -> np.ndarray:
    """Size of each syllable's pitch accent in semitones: 1 at arousal -1 up to 7 at +1."""
    return 4.0 + 3.0 * np.asarray(arousal)


def contour(frac: np.ndarray, valence: np.ndarray, size: np.ndarray) -> np.ndarray:
    """A syllable's pitch accent in semitones at position `frac` in [0, 1) of the syllable:
    a rise-fall hat plus a glide whose direction is the sign of valence (rising when
    positive), both scaled by the accent `size`."""
    frac, valence = np.asarray(frac), np.asarray(valence)
    return np.asarray(size) * (0.5 * np.sin(np.pi * frac) + valence * (frac - 0.5))


def loudness_db(arousal: np.ndarray) -> np.ndarray:
    """RMS level of the voiced sound in dBFS: -34 dB at arousal -1 up to -14 dB at +1."""
    return -24.0 + 10.0 * np.asarray(arousal)


def syllable_rate(arousal: np.ndarray) -> np.ndarray:
    """Syllables per second: 2.5 at arousal -1 up to 6 at +1."""
    return 4.25 + 1.75 * np.asarray(arousal)


def spectral_tilt(valence: np.ndarray) -> np.ndarray:
    """Harmonic amplitude falls as k**-tilt: 2.3 at valence -1 down to 0.7 (brighter) at +1."""
    return 1.5 - 0.8 * np.asarray(valence)


def formant_scale(valence: np.ndarray) -> np.ndarray:
    """Formant frequencies are multiplied by this: x0.94 at valence -1 up to x1.08 at +1."""
    v = np.asarray(valence)
    return 1.0 + np.where(v > 0, 0.08, 0.06) * v


def syllable_plan(n_syllables: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per syllable slot: vowel index, whether it is a pause (the slot after each phrase), and
    the accent's relative size (0.6 to 1.4: not every syllable is stressed alike)."""
    pause = np.zeros(n_syllables, bool)
    i = 0
    while i < n_syllables:
        i += int(rng.integers(PHRASE_SYLLABLES[0], PHRASE_SYLLABLES[1] + 1))
        if i < n_syllables:
            pause[i] = True
        i += 1
    vowel = rng.integers(len(VOWELS), size=n_syllables)
    stress = rng.uniform(0.6, 1.4, size=n_syllables)
    return vowel, pause, stress


def synthesize(valence: np.ndarray, arousal: np.ndarray, base_f0: np.ndarray,
               fps: float, sample_rate: int, rng: np.random.Generator,
               articulation: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthesises the voice for per-frame controls (each (n_frames,)).

    Returns float32 (round(n_frames * sample_rate / fps),) in [-1, 1]; with `articulation`,
    also per sample the syllable envelope (0..1: how far into the syllable's sound, 0 in pauses)
    and the vowel's openness (its F1 over /a/'s: 1 for /a/ down to 0.37 for /i/), which move
    the speaker's lips and jaw.
    """
    n_frames = len(valence)
    n = int(round(n_frames * sample_rate / fps))
    t = np.arange(n) / sample_rate
    frame_t = (np.arange(n_frames) + 0.5) / fps

    # Slow controls at CONTROL_HZ (C points), linearly interpolated to samples.
    ct = np.arange(0, n / sample_rate + 1.0 / CONTROL_HZ, 1.0 / CONTROL_HZ)
    c_val = np.interp(ct, frame_t, valence)
    c_aro = np.interp(ct, frame_t, arousal)

    # Syllable clock (at control rate): slot index and position within the slot.
    c_syl = np.concatenate([[0.0], np.cumsum(syllable_rate(c_aro[:-1]))]) / CONTROL_HZ
    c_index = c_syl.astype(np.int64)
    n_syl = int(c_index[-1]) + 1
    vowel_of, pause, stress = syllable_plan(n_syl, rng)
    c_frac = c_syl - c_index

    # Pitch: level from arousal, then each syllable's accent (size from arousal, glide from valence).
    accent = contour(c_frac, c_val, pitch_range(c_aro) * stress[c_index])  # (C,) semitones
    c_f0 = pitch(np.interp(ct, frame_t, base_f0), c_aro) * 2.0 ** (accent / 12)
    f0 = np.interp(t, ct, c_f0)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate

    # Envelope: rises and falls once per syllable over 80 % of its slot; pause slots are silent.
    syl = np.interp(t, ct, c_syl)
    index = np.minimum(syl.astype(np.int64), n_syl - 1)
    frac = syl - index
    env = np.clip(np.sin(np.pi * frac / 0.8), 0, None) ** 0.7 * (frac < 0.8) * ~pause[index]

    # Formants per syllable, smoothed so vowels glide instead of clicking, raised with valence.
    c_formants = VOWELS[vowel_of[c_index]]  # (C, 3)
    kernel = np.ones(9) / 9
    c_formants = np.stack([np.convolve(np.pad(c_formants[:, j], 4, mode="edge"), kernel, "valid")
                           for j in range(3)], axis=1) * formant_scale(c_val)[:, None]
    c_tilt = spectral_tilt(c_val)

    # Harmonic amplitudes at control rate, normalised so the voiced sound has unit RMS.
    n_harm = min(60, int(sample_rate / 2 / max(50.0, float(c_f0.min()))))
    k = np.arange(1, n_harm + 1)[:, None]                        # (K, 1)
    fk = k * c_f0[None, :]                                       # (K, C)
    resonance = (FORMANT_GAINS / (1 + ((fk[..., None] - c_formants[None]) / BANDWIDTHS) ** 2)).sum(-1)
    amp = k ** (-c_tilt[None, :]) * (0.15 + resonance) * (fk < sample_rate / 2 - 300)  # (K, C)
    amp /= np.sqrt((amp ** 2).sum(0) / 2) + 1e-12                # sum of sines: power = sum(a^2) / 2
    voice = np.zeros(n)
    for j in range(n_harm):
        voice += np.interp(t, ct, amp[j]) * np.sin((j + 1) * phase)
    breath = 0.1 * rng.standard_normal(n)  # a little aspiration noise (-20 dB re the voice)
    gain = 10 ** (np.interp(t, ct, loudness_db(c_aro)) / 20)
    audio = np.clip((voice + breath) * env * gain, -1, 1).astype(np.float32)
    if not articulation:
        return audio
    openness = VOWELS[vowel_of[index], 0] / VOWELS[:, 0].max()
    return audio, env.astype(np.float32), openness.astype(np.float32)


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
