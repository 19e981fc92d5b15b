"""What a demo person feels and shows: expression episodes -> valence/arousal, action-unit
intensities and the frame labels of the three Aff-Wild2 tasks.

A person's video is a run of expression episodes (one of the 8 EXPR classes each, 1-4 s, at an
intensity of 0.7-1). From them, per frame:

- valence/arousal: each episode's place on the circumplex (`CIRCUMPLEX`, scaled by its
  intensity, plus a small per-episode offset), blended smoothly across episode boundaries,
  plus a slow independent wander (the smooth-trajectory style of `trajectory.py`);
- AU intensities (0..1): each episode's AU profile (`PROFILES`) at its intensity, blended the
  same way, plus independent AU noise (a slow jitter, and short spontaneous bursts of single
  AUs) and, added by the generator from the voice, the lips parting (AU25) and the jaw
  dropping (AU26) with each spoken syllable;
- labels: EXPR is the episode's class (switching half-way through a blend), an AU is present
  (1) where its intensity is at least `AU_THRESHOLD`; VA is the valence/arousal itself.

The face renders the intensities (`face.expression_patch`), the voice speaks the valence/arousal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from pipeline.demo.trajectory import smooth_trajectory
from pipeline.tasks.au import AUS
from pipeline.tasks.expr import CLASSES

# (valence, arousal) of each class at full intensity.
CIRCUMPLEX: dict[str, tuple[float, float]] = {
    "Neutral": (0.0, 0.0),
    "Anger": (-0.7, 0.6),
    "Disgust": (-0.65, 0.2),
    "Fear": (-0.5, 0.8),
    "Happiness": (0.75, 0.4),
    "Sadness": (-0.65, -0.55),
    "Surprise": (0.3, 0.8),
    "Other": (0.15, -0.4),
}
# AU intensities of each class at full intensity (FACS prototypes, restricted to the 12 AUs).
PROFILES: dict[str, dict[str, float]] = {
    "Neutral": {},
    "Anger": {"AU4": 1.0, "AU7": 0.9, "AU23": 0.95},                   # brows down, lids tight, lips tight
    "Disgust": {"AU4": 0.8, "AU10": 1.0},                               # upper lip raised, brows down
    "Fear": {"AU1": 0.95, "AU2": 0.8, "AU4": 0.85, "AU25": 0.9},         # brows up and drawn together, lips apart
    "Happiness": {"AU6": 0.9, "AU12": 1.0, "AU25": 0.45},               # cheeks up, lip corners up
    "Sadness": {"AU1": 0.9, "AU4": 0.75, "AU15": 1.0},                  # inner brows up, lip corners down
    "Surprise": {"AU1": 1.0, "AU2": 1.0, "AU25": 0.95, "AU26": 0.9},    # brows up, jaw dropped
    "Other": {"AU2": 0.85, "AU24": 1.0},                                # outer brows up, lips pressed
}
AU_THRESHOLD = 0.5           # an AU label is 1 where its intensity reaches this
EPISODE_MEAN_S = 2.5         # episodes per person: round(seconds / this), at least 2
EPISODE_MIN_FRACTION = 0.6   # no episode shorter than this fraction of the mean
INTENSITY = (0.7, 1.0)       # an episode's intensity
BLEND_S = 0.3                # Gaussian width (s) of the blend between episodes
VA_OFFSET = 0.1              # per-episode offset of valence and arousal, at most
VA_WANDER = 0.2              # amplitude of the independent valence/arousal wander
MODULATION = 0.12            # slow intensity modulation within an episode (fraction)
AU_JITTER = 0.06             # amplitude of each AU's slow jitter
BURST_RATE_HZ = 1 / 25.0     # spontaneous single-AU bursts per AU per second
BURST_S = (0.6, 1.5)         # their duration
BURST_PEAK = (0.5, 0.8)      # their peak intensity
# AUs that move a feature the opposite way (or press lips that another parts): no burst of one
# while the expression shows the other.
ANTAGONISTS = {"AU12": ("AU15", "AU23"), "AU15": ("AU12",), "AU1": ("AU4",), "AU2": ("AU4",), "AU4": ("AU1", "AU2"),
               "AU23": ("AU25", "AU26"), "AU24": ("AU25", "AU26"), "AU25": ("AU23", "AU24"),
               "AU26": ("AU23", "AU24"), "AU10": ("AU12",), "AU6": ("AU15",)}
# The voice's syllables move the mouth: AU25 = SPEECH_LIPS x the syllable envelope, AU26 =
# SPEECH_JAW x envelope x the vowel's openness (F1 over /a/'s); lips part whenever the jaw drops.
SPEECH_LIPS = 0.85
SPEECH_JAW = 0.65

CLASS_INDEX = {c: k for k, c in enumerate(CLASSES)}
AU_INDEX = {a: k for k, a in enumerate(AUS)}
PROFILE_MATRIX = np.array([[PROFILES[c].get(a, 0.0) for a in AUS] for c in CLASSES])   # (8, 12)
CIRCUMPLEX_MATRIX = np.array([CIRCUMPLEX[c] for c in CLASSES])                        # (8, 2)


@dataclass(frozen=True)
class Episode:
    """One expression episode of one person: frames [start, stop)."""

    cls: int            # index into CLASSES
    start: int
    stop: int
    intensity: float
    offset: tuple[float, float]  # added to the class's (valence, arousal)

    def to_dict(self) -> dict:
        v, a = self.intensity * CIRCUMPLEX_MATRIX[self.cls] + np.asarray(self.offset)
        return {"class": self.cls, "name": CLASSES[self.cls], "start": self.start, "stop": self.stop,
                "intensity": round(self.intensity, 3), "valence": round(float(v), 3),
                "arousal": round(float(a), 3)}


@dataclass
class Timeline:
    """One person's frames: labels and what the face shows (before speech and -1 marks)."""

    episodes: list[Episode]
    va: np.ndarray          # float64 (n, 2) valence, arousal in (-1, 1)
    expr: np.ndarray        # int64 (n,) class index
    aus: np.ndarray         # float64 (n, 12) AU intensities 0..1, without speech


def episodes_per_person(seconds: float) -> int:
    return max(2, int(round(seconds / EPISODE_MEAN_S)))


def deal_classes(rng: np.random.Generator, counts: list[int], fresh: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    """Expression classes for people with `counts` episodes each, dealt in order from shuffled
    decks of all 8 classes (so every run of 8 consecutive episodes from one deck holds every
    class once); at each person index in `fresh` the rest of the deck is set aside and a new one
    started. A card equal to the person's previous one is swapped with the next card."""
    deck: list[int] = []
    out = []
    for k, count in enumerate(counts):
        if k in fresh:
            deck = []
        while len(deck) < count + 1:
            deck += [int(c) for c in rng.permutation(len(CLASSES))]
        mine: list[int] = []
        for _ in range(count):
            if mine and deck[0] == mine[-1]:
                deck[0], deck[1] = deck[1], deck[0]
            mine.append(deck.pop(0))
        out.append(tuple(mine))
    return out


def draw_episodes(rng: np.random.Generator, n_frames: int, classes: tuple[int, ...]) -> list[Episode]:
    """Episodes of the given classes covering [0, n_frames): random lengths, none shorter than
    EPISODE_MIN_FRACTION of the mean."""
    k = len(classes)
    floor = int(EPISODE_MIN_FRACTION * n_frames / k)
    spare = n_frames - k * floor
    share = rng.dirichlet(np.full(k, 4.0))
    lengths = floor + np.floor(share * spare).astype(int)
    lengths[-1] += n_frames - lengths.sum()
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return [Episode(cls=int(c), start=int(bounds[j]), stop=int(bounds[j + 1]),
                    intensity=float(rng.uniform(*INTENSITY)),
                    offset=(float(rng.uniform(-VA_OFFSET, VA_OFFSET)), float(rng.uniform(-VA_OFFSET, VA_OFFSET))))
            for j, c in enumerate(classes)]


def blend_weights(episodes: list[Episode], n_frames: int, fps: float) -> np.ndarray:
    """(episodes, n) weights summing to 1 per frame: each episode's frames, smoothed."""
    w = np.zeros((len(episodes), n_frames))
    for j, e in enumerate(episodes):
        w[j, e.start:e.stop] = 1.0
    w = gaussian_filter1d(w, sigma=BLEND_S * fps, axis=1, mode="nearest")
    return w / w.sum(0, keepdims=True)


def _bursts(rng: np.random.Generator, n_frames: int, fps: float) -> np.ndarray:
    """(n, 12) spontaneous single-AU bursts: raised-cosine bumps at random times."""
    out = np.zeros((n_frames, len(AUS)))
    seconds = n_frames / fps
    for k in range(len(AUS)):
        for _ in range(rng.poisson(BURST_RATE_HZ * seconds)):
            length = max(2, int(rng.uniform(*BURST_S) * fps))
            start = int(rng.integers(-length // 2, n_frames))
            peak = rng.uniform(*BURST_PEAK)
            shape = peak * np.sin(np.pi * (np.arange(length) + 0.5) / length) ** 2
            lo, hi = max(0, start), min(n_frames, start + length)
            if lo < hi:
                out[lo:hi, k] = np.maximum(out[lo:hi, k], shape[lo - start:hi - start])
    return out


def timeline(rng: np.random.Generator, n_frames: int, fps: float, classes: tuple[int, ...]) -> Timeline:
    """One person's episodes, valence/arousal, EXPR classes and AU intensities (no speech)."""
    episodes = draw_episodes(rng, n_frames, classes)
    w = blend_weights(episodes, n_frames, fps)                                   # (E, n)
    modulation = 1.0 + MODULATION * smooth_trajectory(rng, n_frames, fps, timescale_s=1.5)
    strength = np.array([e.intensity for e in episodes])[:, None] * w * modulation   # (E, n)
    cls = np.array([e.cls for e in episodes])
    offsets = np.array([e.offset for e in episodes])                             # (E, 2)
    target = strength.T @ CIRCUMPLEX_MATRIX[cls] + w.T @ offsets                 # (n, 2)
    wander = VA_WANDER * np.stack([smooth_trajectory(rng, n_frames, fps), smooth_trajectory(rng, n_frames, fps)], 1)
    va = np.tanh(1.1 * (target + wander))
    jitter = AU_JITTER * np.stack([smooth_trajectory(rng, n_frames, fps, timescale_s=1.0)
                                   for _ in AUS], 1)
    shown = strength.T @ PROFILE_MATRIX[cls]                                     # (n, 12)
    # a burst does not fight the expression: none of an AU whose antagonist the face shows
    against = np.stack([shown[:, [AU_INDEX[b] for b in ANTAGONISTS.get(a, ())]].max(1, initial=0.0)
                        for a in AUS], 1)
    aus = shown + _bursts(rng, n_frames, fps) * np.clip(1.0 - 2.0 * against, 0.0, 1.0) + jitter
    expr = np.zeros(n_frames, np.int64)
    for e in episodes:
        expr[e.start:e.stop] = e.cls
    return Timeline(episodes, va, expr, np.clip(aus, 0.0, 1.0))


def add_speech(aus: np.ndarray, lips: np.ndarray, jaw: np.ndarray) -> np.ndarray:
    """AU intensities (n, 12) with the mouth moving for speech: `lips` (n,) 0..1 how far into
    its syllable's sound the voice is at each frame (0 in pauses and while the person is
    silent), `jaw` (n,) the same times the vowel's openness. Returns a new array; the lips
    part whenever the jaw drops (AU25 >= AU26)."""
    out = aus.copy()
    k25, k26 = AU_INDEX["AU25"], AU_INDEX["AU26"]
    out[:, k25] = np.maximum(out[:, k25], SPEECH_LIPS * np.asarray(lips))
    out[:, k26] = np.maximum(out[:, k26], SPEECH_JAW * np.asarray(jaw))
    out[:, k25] = np.maximum(out[:, k25], out[:, k26])
    return np.clip(out, 0.0, 1.0)


def au_labels(aus: np.ndarray) -> np.ndarray:
    """AU intensities (n, 12) -> 0/1 labels."""
    return (aus >= AU_THRESHOLD).astype(np.float32)


def runs(mask: np.ndarray) -> list[list[int]]:
    """[start, stop) frame intervals where a boolean mask is true."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], np.asarray(mask).astype(np.int8), [0]])))
    return [[int(a), int(b)] for a, b in zip(edges[::2], edges[1::2])]
