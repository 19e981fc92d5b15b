"""Voice activity (`audio.mask`): the masks on demo-like and espeak-ng speech, the helpers by
hand, and the params that steer them."""

import shutil
import subprocess

import numpy as np
import pytest

from pipeline.config import AudioParams
from pipeline.demo import voice as demo_voice
from pipeline.errors import ParamsError
from pipeline.media import read_audio
from pipeline.stage1.audio import energy_db
from pipeline.stage1.voice import (MAX_LAG, VAD_CHUNK, SileroStream, chunk_scores, fill_gaps, frame_means,
                                   frame_spans, frame_voice, voicing)

from .helpers import params_at

SR, FPS = 16000, 15.0


def babble(seconds: float, seed: int = 0) -> np.ndarray:
    """The demo's synthetic voice (source-filter babble) at mid arousal, with its noise floor."""
    rng = np.random.default_rng(seed)
    n = int(seconds * FPS)
    audio = demo_voice.synthesize(np.zeros(n), np.full(n, 0.3), np.full(n, 160.0), FPS, SR, rng)
    return audio + demo_voice.noise_floor(len(audio), rng)


@pytest.fixture(scope="module")
def demo_like():
    """8 s of babble: silent over frames [30, 60) (2-4 s), drowned in noise over [75, 105) (5-7 s).
    degrade() ramps over 10 ms inside each stretch, so its first and last frames still carry a
    little voice: the checks below leave them out."""
    audio = babble(8.0)
    rng = np.random.default_rng(1)
    demo_voice.degrade(audio, int(2 * SR), int(4 * SR), "silent", rng)
    demo_voice.degrade(audio, int(5 * SR), int(7 * SR), "noise", rng)
    times = np.arange(int(8 * FPS)) / FPS
    return audio, times


def run_mask(audio, times, **cfg):
    inside = np.ones(len(times), bool)
    return frame_voice(audio, SR, times, FPS, energy_db(audio, times, FPS, SR), inside, AudioParams(**cfg))


def test_vad_mask_marks_the_silent_and_noisy_stretches(demo_like):
    audio, times = demo_like
    prob, mask = run_mask(audio, times, mask="vad")
    silent, noise = np.arange(31, 59), np.arange(76, 104)
    assert not mask[silent].any() and not mask[noise].any()
    assert prob[noise].max() < 0.5 and prob[silent].max() < 0.5
    talking = np.r_[0:30, 60:75, 105:120]
    assert mask[talking].mean() > 0.9  # syllable pauses filled (fill_gaps_s)


def test_energy_mask_finds_silence_but_not_noise(demo_like):
    audio, times = demo_like
    _, mask = run_mask(audio, times, mask="energy")
    assert not mask[31:59].any()
    assert mask[76:104].all()  # loud noise passes an energy threshold: why `vad` is the default
    assert mask[np.r_[0:30, 60:75]].mean() > 0.9


def test_without_voicing_silero_rejects_the_synthetic_voice_but_hears_espeak(demo_like, tmp_path):
    audio, times = demo_like
    _, mask = run_mask(audio, times, mask="vad", vad_voicing=False)
    assert mask[np.r_[0:30, 60:75, 105:120]].mean() < 0.5  # why vad_voicing exists
    assert shutil.which("espeak-ng"), "espeak-ng missing: `make setup` installs it (scripts/ensure-system-deps.sh)"
    wav = tmp_path / "s.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "-s", "150",
                    "I am really happy to see you today, and I hope everything goes well."], check=True)
    speech = read_audio(wav, SR)
    speech = np.concatenate([speech, np.zeros(2 * SR, np.float32)])  # then 2 s of silence
    t = np.arange(int(len(speech) / SR * FPS)) / FPS
    loud = np.flatnonzero(np.abs(speech) > 0.01)
    talking = (t >= loud[0] / SR) & (t + 1 / FPS <= loud[-1] / SR)
    _, mask = run_mask(speech, t, mask="vad", vad_voicing=False)
    assert mask[talking].mean() > 0.9 and not mask[t > loud[-1] / SR + 0.2].any()


def test_voicing_of_noise_tone_and_quiet():
    rng = np.random.default_rng(0)
    t = np.arange(SR) / SR
    tone = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 8)) * 0.1  # 150 Hz, harmonics
    assert voicing(tone, -60)[:-1].min() > 0.9  # the last chunk runs past the end (zeros)
    assert voicing(0.1 * rng.standard_normal(SR), -60).max() < 0.3
    assert voicing(1e-4 * tone, -60).max() == 0.0  # quieter than the gate


def test_frame_means_and_spans_by_hand():
    starts, stops = frame_spans(np.array([0.0, 0.1, 0.25]), fps=10.0)
    assert stops.tolist() == [0.1, 0.25, 0.35]
    # step function 1 on [0, 0.05), 0 on [0.05, 0.1), 1 on [0.1, 0.15)
    means = frame_means(np.array([1.0, 0.0, 1.0]), 0.05, starts, stops)
    np.testing.assert_allclose(means, [0.5, (0.05 * 1) / 0.15, 0.0], atol=1e-6)


def test_fill_gaps_by_hand():
    t = np.arange(12) * 0.1
    m = np.array([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 1, 0], bool)
    out = fill_gaps(m, t, t + 0.1, max_gap_s=0.25)
    # the 0.2 s gap (frames 3-4) is filled; the 0.4 s one (6-9) and the edges are not
    assert out.astype(int).tolist() == [0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 0]
    assert fill_gaps(m, t, t + 0.1, 0.0).tolist() == m.tolist()


@pytest.mark.parametrize("key,value,message", [
    ("mask", "loudness", "audio.mask"),
    ("energy_db", 3.0, "audio.energy_db"),
    ("vad_threshold", 1.0, "audio.vad_threshold"),
    ("fill_gaps_s", -0.5, "audio.fill_gaps_s"),
    ("vad_voicing", "yes", "audio.vad_voicing"),
])
def test_audio_mask_params_are_validated(tmp_path, key, value, message):
    with pytest.raises(ParamsError, match=message):
        params_at(tmp_path, tmp_path, audio={key: value})


def test_default_mask_is_vad(repo_params):
    cfg = repo_params.audio
    assert (cfg.mask, cfg.energy_db, cfg.vad_threshold) == ("vad", -45.0, 0.5)


def test_chunk_scores_as_the_track_arrives_equal_one_pass(demo_like):
    """`jmt live` scores the chunks a few at a time, one SileroStream carrying silero's state:
    the scores of one pass over the track (voicing's sums start at another chunk: ~1e-7)."""
    x16 = demo_like[0][: 3 * SR].astype(np.float32)
    n = -(-len(x16) // VAD_CHUNK)
    whole = chunk_scores(SileroStream(), x16, n, with_voicing=True, min_db=-45.0)
    stream, parts, c = SileroStream(), [], 0
    for upto in (1, 2, 5, 6, 30, 31, n):
        parts.append(chunk_scores(stream, x16[c * VAD_CHUNK:upto * VAD_CHUNK + MAX_LAG], upto - c,
                                  with_voicing=True, min_db=-45.0))
        c = upto
    np.testing.assert_allclose(np.concatenate(parts), whole, atol=1e-6, rtol=0)
    assert len(whole) == n and whole.dtype == np.float32
