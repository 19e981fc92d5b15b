"""Spoken words for the demo corpus (`demo.speech: words`): espeak-ng says English words whose
sentiment follows the speaker's valence, in the voice's speaking turns, with a WebVTT
transcript (a cue per word) beside each video.

Rules (docs/demo-corpus.md, "Words"):

- which words: the speaker's valence and arousal at the word's start (the labels
  `generate.VOICE_LEAD_S` ahead, as for the voice) pick one of five lists (`WORDS`):
  valence above `VALENCE_SPLIT` positive, below minus it negative, neutral between; positive
  and negative words split by arousal (above `AROUSAL_SPLIT`: "wonderful", "furious"; below:
  "peaceful", "tragic"). Every word is rated with its list's sign by VADER and by the NRC emotion
  lexicon (neutral: by neither) and is in pocketsphinx's default English dictionary;
- delivery: arousal sets espeak-ng's speed (`speed_wpm`, 130-220 words a minute), its pitch
  (`pitch`, -p 30-70 plus the speaker's offset) and the word's level (`voice.loudness_db`,
  -34 to -14 dBFS RMS over the word: the voice's rule, so the level carries arousal in both
  variants); the two people of a video speak with two espeak-ng voices (`VOICES`);
- timing: phrases of 2-5 words with `word_gap` between words and `phrase_pause` after each
  phrase (both shorter with higher arousal), inside the speaker's turns; a word that would
  run past its turn's end is not said. Times come from placement, exact to the sample;
- the audio stretch: words overlapping it are still spoken (the lips move) but are not
  `heard`: the transcript leaves them out, as a captioner would;
- the mouth: the envelope of the placed speech (`envelope`) opens the lips, the jaw
  `OPENNESS` as far, through `expression.add_speech` as for the voice.

espeak-ng is run once per distinct (word, voice, speed, pitch); its output is the same for the
same version, so the corpus is deterministic given the seed and `espeak-ng --version`.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.io import wavfile
from scipy.ndimage import uniform_filter1d
from scipy.signal import resample_poly

from pipeline.demo import voice
from pipeline.errors import JmtError

ESPEAK = "espeak-ng"
ESPEAK_APT = "espeak-ng"             # the Debian/Ubuntu package that installs it
VALENCE_SPLIT = 0.25                 # |valence| above this: positive / negative words
AROUSAL_SPLIT = 0.0                  # arousal above this: the aroused list of the sign
WORDS: dict[str, tuple[str, ...]] = {
    "positive_high": ("triumph", "perfect", "enjoy", "champion", "brilliant", "wonderful",
                      "laugh", "hero", "proud", "love", "joy", "gorgeous"),
    "positive_low": ("sympathy", "relief", "loyal", "comfort", "sweet", "safe",
                     "peaceful", "lovely", "kind", "harmony", "faithful", "smile"),
    "neutral": ("street", "train", "river", "house", "table", "pencil",
                "metal", "apple", "window", "twelve", "paper", "kitchen"),
    "negative_low": ("tragic", "misery", "exhausted", "sorrow", "sadness", "sadly",
                     "regret", "miserable", "tired", "lost", "depressed", "broken"),
    "negative_high": ("nasty", "hostile", "disaster", "violent", "threat", "cruel",
                      "bad", "awful", "terrible", "furious", "fight", "disgusting"),
}
SIGN = {"positive_high": 1, "positive_low": 1, "neutral": 0, "negative_low": -1, "negative_high": -1}
# The two people of a video speak with two of espeak-ng's Klatt voices, pitched apart (-p offset):
# pocketsphinx recognised the Klatt voices far better than the default ones (docs/demo-corpus.md).
VOICES = (("en-us+klatt", -6), ("en-us+klatt3", 6))
SPEED_WPM = (130.0, 220.0)           # espeak-ng -s at arousal -1 and +1
PITCH = (30.0, 70.0)                 # espeak-ng -p at arousal -1 and +1 (before the speaker's offset)
BASE_PITCH_SPAN = 10.0               # -p offset of the speaker: -10 to +10 over generate.BASE_F0_HZ
BASE_F0_MID_HZ, BASE_F0_HALF_HZ = 160.0, 25.0   # generate.BASE_F0_HZ (135-185 Hz) as centre, half-width
PHRASE_WORDS = (2, 5)                # words per phrase (inclusive)
TURN_MARGIN_S = 0.05                 # no word starts or ends closer than this to a turn's edge
OPENNESS = 0.7                       # how far the jaw drops with the lips (the voice: 0.37-1 by vowel)
ESPEAK_RATE = 22050                  # espeak-ng's output rate
TRIM_DB = -40.0                      # leading/trailing sound below this (re the word's loudest 10 ms) is cut
ENVELOPE_S = 0.02                    # RMS window of the mouth envelope


@dataclass(frozen=True)
class Word:
    """One spoken word: times in seconds on the video's clock, [start, end)."""

    text: str
    start: float
    end: float
    person: int
    heard: bool        # False: it overlaps the audio stretch (not in the transcript)
    valence: float     # what picked it (the speaker's labels, the voice lead ahead)
    arousal: float

    def to_dict(self, sides: tuple[str | None, ...]) -> dict:
        return {"word": self.text, "start": round(self.start, 6), "end": round(self.end, 6),
                "side": sides[self.person], "heard": self.heard,
                "valence": round(self.valence, 4), "arousal": round(self.arousal, 4)}


def require_espeak() -> str:
    """The espeak-ng executable's path, or a JmtError saying how to install it."""
    path = shutil.which(ESPEAK)
    if path is None:
        raise JmtError(f"demo.speech 'words' needs the {ESPEAK} executable, not found on PATH: "
                       f"install it (apt-get install {ESPEAK_APT}), or set demo.speech: voice")
    return path


@functools.lru_cache(maxsize=1)
def espeak_version() -> str:
    """`espeak-ng --version`'s line (the words depend on it)."""
    out = subprocess.run([require_espeak(), "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def word_list(valence: float, arousal: float) -> str:
    """The name of the list (`WORDS`) a word is drawn from at this valence and arousal."""
    if abs(valence) <= VALENCE_SPLIT:
        return "neutral"
    sign = "positive" if valence > 0 else "negative"
    return f"{sign}_{'high' if arousal > AROUSAL_SPLIT else 'low'}"


def speed_wpm(arousal: float) -> int:
    """espeak-ng's speed (-s, words a minute): 130 at arousal -1 up to 220 at +1."""
    return int(round(np.interp(arousal, (-1, 1), SPEED_WPM)))


def pitch(arousal: float, base_f0: float, voice_offset: float = 0.0) -> int:
    """espeak-ng's pitch (-p, 0-99): 30 at arousal -1 up to 70 at +1, plus the speaker's offset
    (-10 to +10 as its base pitch goes from 135 to 185 Hz) and its voice's (`VOICES`)."""
    offset = BASE_PITCH_SPAN * np.clip((base_f0 - BASE_F0_MID_HZ) / BASE_F0_HALF_HZ, -1, 1)
    return int(np.clip(round(np.interp(arousal, (-1, 1), PITCH) + offset + voice_offset), 0, 99))


def word_gap(arousal: float) -> float:
    """Silence between the words of a phrase, s: 0.17 at arousal -1 down to 0.07 at +1."""
    return 0.12 - 0.05 * arousal


def phrase_pause(arousal: float) -> float:
    """Silence after a phrase, s: 0.5 at arousal -1 down to 0.2 at +1 (the voice's pause slot)."""
    return 0.35 - 0.15 * arousal


def trim(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """The word without its leading and trailing silence (10 ms frames below `TRIM_DB` re its
    loudest frame)."""
    hop = max(1, sample_rate // 100)
    n = len(audio) // hop
    if n == 0:
        return audio
    power = (audio[: n * hop].astype(np.float64).reshape(n, hop) ** 2).mean(1)
    loud = np.flatnonzero(power >= power.max() * 10 ** (TRIM_DB / 10))
    return audio[loud[0] * hop: (loud[-1] + 1) * hop]


@functools.lru_cache(maxsize=4096)
def _espeak(word: str, voice_name: str, speed: int, pitch_: int) -> np.ndarray:
    """espeak-ng's int16 output for one word at its 22,050 Hz (cached: the corpus repeats words)."""
    exe = require_espeak()
    with tempfile.TemporaryDirectory(prefix="jmt-espeak-") as tmp:
        wav = Path(tmp) / "word.wav"
        subprocess.run([exe, "-v", voice_name, "-s", str(speed), "-p", str(pitch_), "-a", "100",
                        "-z", "-w", str(wav), "--", word], check=True, capture_output=True)
        rate, data = wavfile.read(wav)
    if rate != ESPEAK_RATE or data.ndim != 1:
        raise JmtError(f"{ESPEAK} wrote {rate} Hz audio of shape {data.shape}; expected mono {ESPEAK_RATE} Hz")
    data.setflags(write=False)
    return data


def say(word: str, voice_name: str, speed: int, pitch_: int, level_db: float,
        sample_rate: int) -> np.ndarray:
    """One word as float32 at `sample_rate`: espeak-ng's output resampled, trimmed and scaled to
    `level_db` dBFS RMS."""
    raw = _espeak(word, voice_name, speed, pitch_).astype(np.float64) / 32768.0
    g = np.gcd(sample_rate, ESPEAK_RATE)
    audio = trim(resample_poly(raw, sample_rate // g, ESPEAK_RATE // g), sample_rate)
    rms = np.sqrt(np.mean(audio ** 2)) + 1e-12
    return np.clip(audio * (10 ** (level_db / 20) / rms), -1, 1).astype(np.float32)


def envelope(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """A word's mouth envelope per sample, 0..1: its RMS over `ENVELOPE_S`, over the word's
    loudest, square-rooted (the mouth opens for the quieter consonants too)."""
    power = uniform_filter1d(audio.astype(np.float64) ** 2, max(1, int(ENVELOPE_S * sample_rate)))
    power = np.maximum(power, 0.0)  # the running mean can dip below 0 by rounding
    return np.sqrt(np.sqrt(power / (power.max() + 1e-20))).astype(np.float32)


def _turns(speaker: np.ndarray) -> list[tuple[int, int, int]]:
    """(person, start frame, stop frame) of each speaking turn."""
    edges = np.flatnonzero(np.diff(speaker)) + 1
    bounds = np.concatenate([[0], edges, [len(speaker)]])
    return [(int(speaker[a]), int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def speak(valence: np.ndarray, arousal: np.ndarray, speaker: np.ndarray, base_f0: np.ndarray,
          fps: float, sample_rate: int, rng: np.random.Generator,
          gap: tuple[float, float] | None = None
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Word]]:
    """The spoken words of one video, for per-frame controls (each (n_frames,)): `valence` and
    `arousal` of whoever speaks (the lead applied), `speaker` its index, `base_f0` (people,) Hz;
    `gap` the audio stretch in seconds (words overlapping it are not heard).

    Returns, like `voice.synthesize(..., articulation=True)`: float32 audio
    (round(n_frames * sample_rate / fps),), the mouth envelope per sample (0..1, 0 between
    words) and the jaw's openness per sample; plus the words in time order."""
    require_espeak()
    n_frames = len(valence)
    n = int(round(n_frames * sample_rate / fps))
    audio = np.zeros(n, np.float32)
    env = np.zeros(n, np.float32)
    voices = [VOICES[k] for k in rng.permutation(len(VOICES))]  # person -> (voice, -p offset)
    words: list[Word] = []
    for person, f0, f1 in _turns(np.asarray(speaker)):
        t, stop = f0 / fps + TURN_MARGIN_S, f1 / fps - TURN_MARGIN_S
        left, last = 0, ""  # words left in the phrase; the previous word (not said twice in a row)
        while t < stop:
            if left == 0:
                left = int(rng.integers(PHRASE_WORDS[0], PHRASE_WORDS[1] + 1))
            j = min(int(t * fps), n_frames - 1)
            v, a = float(valence[j]), float(arousal[j])
            choices = [w for w in WORDS[word_list(v, a)] if w != last]
            text = choices[int(rng.integers(len(choices)))]
            name, offset = voices[person % len(voices)]
            sound = say(text, name, speed_wpm(a), pitch(a, float(base_f0[person]), offset),
                        float(voice.loudness_db(a)), sample_rate)
            s0 = int(round(t * sample_rate))
            if (s0 + len(sound)) / sample_rate > stop:
                break  # it would run past the turn: the speaker stops here
            audio[s0: s0 + len(sound)] = sound
            env[s0: s0 + len(sound)] = envelope(sound, sample_rate)
            start, end = s0 / sample_rate, (s0 + len(sound)) / sample_rate
            heard = not (gap and start < gap[1] and end > gap[0])
            words.append(Word(text, start, end, person, heard, v, a))
            left, last = left - 1, text
            t = end + (word_gap(a) if left else phrase_pause(a))
    return audio, env, np.full(n, OPENNESS, np.float32), words


def _timestamp(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def write_vtt(path: Path, words: list[Word], sides: tuple[str | None, ...]) -> None:
    """The WebVTT transcript: one cue per heard word (times to the millisecond), with a
    `<v left>` / `<v right>` voice tag where the video shows two people."""
    import webvtt

    captions = [webvtt.Caption(start=_timestamp(w.start), end=_timestamp(w.end),
                               text=w.text if sides[w.person] is None else f"<v {sides[w.person]}>{w.text}</v>")
                for w in words if w.heard]
    Path(path).write_text(webvtt.WebVTT(captions=captions).content)


def manifest() -> dict:
    """What corpus.json records about the words variant."""
    return {"mode": "words", "engine": ESPEAK, "engine_version": espeak_version(),
            "voices": [{"voice": v, "pitch_offset": o} for v, o in VOICES],
            "valence_split": VALENCE_SPLIT, "arousal_split": AROUSAL_SPLIT,
            "words": {k: list(v) for k, v in WORDS.items()}, "speed_wpm": list(SPEED_WPM),
            "pitch": list(PITCH), "openness": OPENNESS}
