"""The audio cues: arousal drives pitch, loudness and syllable rate; valence drives brightness."""

import numpy as np
import pytest

from pipeline.demo import voice

SR, FPS = 16000, 15.0


def f0_estimate(x: np.ndarray) -> float:
    """Median autocorrelation pitch over the louder 1024-sample chunks."""
    chunks = [x[i:i + 1024] for i in range(0, len(x) - 1024, 512)]
    rms = np.sqrt(np.mean(x**2))
    est = []
    for c in chunks:
        if np.sqrt(np.mean(c**2)) < rms:
            continue
        ac = np.correlate(c, c, "full")[1023:]
        lo, hi = SR // 400, SR // 60
        est.append(SR / (lo + np.argmax(ac[lo:hi])))
    return float(np.median(est))


def brightness(x: np.ndarray) -> float:
    """Power above 1 kHz over power below."""
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / SR)
    return float(power[freqs > 1000].sum() / power[freqs <= 1000].sum())


def render(valence, arousal, seconds=6.0, base=160.0, seed=0):
    n = int(seconds * FPS)
    return voice.synthesize(np.full(n, valence), np.full(n, arousal), np.full(n, base), FPS, SR,
                            np.random.default_rng(seed))


def test_length_and_range():
    y = render(0.0, 0.0, seconds=2.0)
    assert y.shape == (int(2.0 * SR),) and y.dtype == np.float32
    assert np.abs(y).max() <= 1 and np.abs(y).max() > 0.01


@pytest.mark.parametrize("arousal", [-0.8, 0.0, 0.8])
def test_pitch_follows_arousal(arousal):
    y = render(0.0, arousal)
    assert f0_estimate(y) == pytest.approx(float(voice.pitch(160.0, arousal)), rel=0.06)


def test_loudness_and_rate_rise_with_arousal():
    low, high = render(0.0, -0.8), render(0.0, 0.8)
    rms = lambda x: np.sqrt(np.mean(x**2))  # noqa: E731
    assert rms(high) > 3 * rms(low)
    # syllable rate: count envelope peaks of the smoothed magnitude
    def syllables(x):
        env = np.convolve(np.abs(x), np.ones(400) / 400, "same")
        on = env > 0.3 * env.max()
        return int(np.sum(on[1:] & ~on[:-1]))
    assert syllables(high) > 1.5 * syllables(low)


def test_brightness_follows_valence():
    assert brightness(render(0.9, 0.0)) > 3 * brightness(render(0.0, 0.0)) / 2 > 3 * brightness(render(-0.9, 0.0)) / 2


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
