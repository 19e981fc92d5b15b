"""The audio cues, measured on the synthesised signal with plain numpy (autocorrelation pitch,
RMS, FFT), against the values the voice module documents:
arousal -> pitch level and range, loudness, syllable rate; valence -> brightness, pitch glide."""

import numpy as np
import pytest

from pipeline.demo import voice

SR, FPS = 16000, 15.0
HOP = 160  # 10 ms analysis frames


def render(valence, arousal, seconds=8.0, base=160.0, seed=0):
    n = int(seconds * FPS)
    return voice.synthesize(np.full(n, valence), np.full(n, arousal), np.full(n, base), FPS, SR,
                            np.random.default_rng(seed))


def analyse(x: np.ndarray, win: int = 640) -> tuple[np.ndarray, np.ndarray]:
    """Per 10 ms frame: RMS and autocorrelation F0 in Hz (0 where not clearly periodic)."""
    rms, f0 = [], []
    lo, hi = SR // 400, SR // 60
    for i in range(0, len(x) - win, HOP):
        c = x[i:i + win].astype(np.float64)
        c = c - c.mean()
        ac = np.correlate(c, c, "full")[win - 1:]
        k = lo + int(np.argmax(ac[lo:hi]))
        rms.append(np.sqrt(np.mean(c**2)))
        f0.append(SR / k if ac[0] > 0 and ac[k] / ac[0] > 0.5 else 0.0)
    return np.array(rms), np.array(f0)


def voiced_f0(x: np.ndarray) -> np.ndarray:
    """F0 of the loud, periodic frames."""
    rms, f0 = analyse(x)
    return f0[(rms > 0.3 * rms.max()) & (f0 > 0)]


def active_db(x: np.ndarray) -> float:
    """Level in dBFS of the 20 ms frames within 10 dB of the loudest (the voiced syllables)."""
    fr = x[: len(x) // 320 * 320].astype(np.float64).reshape(-1, 320)
    r = np.sqrt(np.mean(fr**2, axis=1))
    return float(20 * np.log10(np.sqrt(np.mean(r[r > 0.3 * r.max()] ** 2))))


def syllables(x: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) 10 ms frames of each syllable: runs of the smoothed RMS above 30 % of its max."""
    rms, _ = analyse(x)
    on = np.convolve(rms, np.ones(3) / 3, "same") > 0.3 * rms.max()
    edges = np.flatnonzero(np.diff(np.concatenate([[0], on.astype(np.int8), [0]])))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def brightness(x: np.ndarray) -> float:
    """Power above 1 kHz over power below."""
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / SR)
    return float(power[freqs > 1000].sum() / power[freqs <= 1000].sum())


def test_length_and_range():
    y = render(0.0, 0.0, seconds=2.0)
    assert y.shape == (int(2.0 * SR),) and y.dtype == np.float32
    assert np.abs(y).max() <= 1 and np.abs(y).max() > 0.01
    np.testing.assert_array_equal(y, render(0.0, 0.0, seconds=2.0))  # same seed, same samples


def test_documented_control_values():
    """The mappings, at the ends of the label range, as the docstrings state them."""
    assert voice.pitch(100.0, np.array([-1.0, 1.0])) == pytest.approx([100 * 2**-0.54, 100 * 2**0.54])
    assert voice.pitch_range(np.array([-1.0, 1.0])) == pytest.approx([1.0, 7.0])
    assert voice.loudness_db(np.array([-1.0, 1.0])) == pytest.approx([-34.0, -14.0])
    assert voice.syllable_rate(np.array([-1.0, 1.0])) == pytest.approx([2.5, 6.0])
    assert voice.spectral_tilt(np.array([-1.0, 1.0])) == pytest.approx([2.3, 0.7])
    assert voice.formant_scale(np.array([-1.0, 0.0, 1.0])) == pytest.approx([0.94, 1.0, 1.08])


def test_pitch_level_and_range_follow_arousal():
    low, high = voiced_f0(render(0.0, -0.8)), voiced_f0(render(0.0, 0.8))
    # level: x2**(0.54 * 1.6) = x1.82 between the two, times the larger accents' lift (< x1.15)
    ratio = np.median(high) / np.median(low)
    assert 1.75 < ratio < 2.3
    # range: accents of 1.6 vs 6.4 semitones; the 10-90 % spread of F0 in semitones
    spread = [np.diff(np.percentile(12 * np.log2(f / 160), [10, 90]))[0] for f in (low, high)]
    assert spread[1] > 2.5 * spread[0] and spread[1] > 1.5


def test_speaker_pitch_shifts_the_voice():
    assert np.median(voiced_f0(render(0.0, 0.0, base=200.0))) / np.median(voiced_f0(render(0.0, 0.0, base=140.0))) \
        == pytest.approx(200 / 140, rel=0.05)


def test_loudness_follows_arousal_only():
    # -24 + 10 a dBFS: 16 dB apart between arousal -0.8 and +0.8, whatever the valence
    assert active_db(render(0.0, 0.8)) - active_db(render(0.0, -0.8)) == pytest.approx(16.0, abs=1.5)
    assert active_db(render(0.9, 0.3)) == pytest.approx(active_db(render(-0.9, 0.3)), abs=1.0)


def test_syllable_rate_and_phrase_pauses():
    seconds = 12.0
    low, high = syllables(render(0.0, -0.8, seconds)), syllables(render(0.0, 0.8, seconds))
    # slots per second 4.25 + 1.75 a (2.85 and 5.65), one slot in about six a phrase pause
    assert len(low) / seconds == pytest.approx(2.85 * 5 / 6, rel=0.25)
    assert len(high) / seconds == pytest.approx(5.65 * 5 / 6, rel=0.25)
    for syl in (low, high):  # pauses between syllables stay well under a second (stage 1 fills < 1 s)
        gaps = np.array([b[0] - a[1] for a, b in zip(syl[:-1], syl[1:])]) * HOP / SR
        assert gaps.max() < 0.8
        assert (gaps > 1.5 * np.median(gaps)).sum() >= len(syl) / 10  # longer phrase pauses exist


def test_brightness_follows_valence():
    b = [brightness(render(v, 0.0)) for v in (-0.9, 0.0, 0.9)]
    assert b[2] > 3 * b[1] and b[1] > 2 * b[0]


def glide(x: np.ndarray) -> float:
    """Mean F0 change in semitones from the first to the last third of each syllable."""
    rms, f0 = analyse(x)
    moves = []
    for a, b in syllables(x):
        f = f0[a:b]
        if b - a >= 6 and (f > 0).all():
            st = 12 * np.log2(f)
            third = (b - a) // 3
            moves.append(st[-third:].mean() - st[:third].mean())
    return float(np.mean(moves))


def test_pitch_contour_rises_with_positive_valence():
    # glide valence * size * (2/3 of the syllable): about +-0.9 * 5.5 * 0.5 semitones at arousal 0.5
    up, down = glide(render(0.9, 0.5)), glide(render(-0.9, 0.5))
    assert up > 1.0 and down < -1.0


@pytest.mark.parametrize("mode", ["silent", "noise"])
def test_degrade(mode):
    y = render(0.0, 0.5, seconds=3.0)
    before = y.copy()
    voice.degrade(y, 16000, 32000, mode, np.random.default_rng(0))
    mid = slice(17000, 31000)
    np.testing.assert_array_equal(y[:16000], before[:16000])
    if mode == "silent":
        assert np.abs(y[mid]).max() == 0
    else:
        assert np.std(y[mid]) > 3 * np.std(before)
    with pytest.raises(ValueError, match="unknown audio degradation"):
        voice.degrade(y, 0, 10, "muffled", np.random.default_rng(0))


def test_articulation_is_the_syllables_of_the_sound():
    """With `articulation`, the same samples come with the syllable envelope (0 in pauses, where
    the voice is silent) and each syllable's vowel openness, which move the speaker's mouth."""
    n = int(4 * FPS)
    args = (np.full(n, 0.2), np.full(n, 0.3), np.full(n, 160.0), FPS, SR)
    plain = voice.synthesize(*args, np.random.default_rng(4))
    audio, env, openness = voice.synthesize(*args, np.random.default_rng(4), articulation=True)
    np.testing.assert_array_equal(audio, plain)
    assert env.shape == openness.shape == audio.shape
    assert env.min() >= 0 and env.max() <= 1 and 0.2 < (env > 0).mean() < 0.9
    vowels = voice.VOWELS[:, 0] / voice.VOWELS[:, 0].max()   # F1 over /a/'s
    assert all(np.isclose(vowels, o, atol=1e-6).any() for o in np.unique(openness))
    quiet = env == 0
    loud = np.abs(audio) > 0.3 * np.abs(audio).max()
    assert not (quiet & loud).any()     # the voice sounds only while the mouth is open
