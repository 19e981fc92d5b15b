"""One frame timing for every stage: awkward real files through faces, audio and embed.

A B-frame AVI (MPEG-4 Part 2 + AC3, a third of its packets without pts), a variable-frame-
rate MP4, an MKV whose audio starts 1 s after the video and an MP4 whose audio ends 1 s
before it: every cache gets one row per decoded frame, the same increasing times, and the
frames outside the audio track are masked.
"""

import shutil
import subprocess

import h5py
import numpy as np
import pytest

from pipeline import cache
from pipeline.cache_tools import verify
from pipeline.demo import voice
from pipeline.media import iter_frames, write_wav
from pipeline.stage1.audio import run_audio
from pipeline.stage1.embed import run_embed
from pipeline.stage1.faces import run_faces

from .helpers import datasets, params_at

FPS = 25.0


def ffmpeg_run(*args):
    subprocess.run(["ffmpeg", "-v", "error", "-y", *map(str, args)], check=True)


# name -> (the frame times by construction, the [start, end) s of its audio track)
EXPECTED = {
    "bframes": (0.04 + np.arange(100) * 0.04, (0.0, 4.0)),   # AVI shows B-frame streams one frame late
    "vfr": (np.array([0.1 * i if i < 10 else 0.2 * i - 1.0 for i in range(20)]), (0.0, 2.8)),
    "late": (np.arange(100) * 0.04, (1.0, 3.0)),
    "early": (np.arange(100) * 0.04, (0.0, 3.0)),
}


@pytest.fixture(scope="module")
def timed(tmp_path_factory):
    """The four files as a manifest corpus, through faces, audio and embed."""
    root = tmp_path_factory.mktemp("timing")
    n = int(2 * FPS)
    speech = voice.synthesize(np.zeros(n), np.full(n, 0.5), np.full(n, 150.0), FPS, 16000,
                              np.random.default_rng(0))
    write_wav(root / "voice2s.wav", speech, 16000)  # 2 s of the demo voice
    src = ["-f", "lavfi", "-i", "testsrc=size=160x120:rate=25:duration=4"]
    ffmpeg_run(*src, "-f", "lavfi", "-i", "sine=sample_rate=48000:duration=4", "-c:v", "mpeg4", "-bf", 2,
               "-c:a", "ac3", root / "bframes.avi")
    ffmpeg_run("-f", "lavfi", "-i", "testsrc=size=160x120:rate=10", "-f", "lavfi", "-i",
               "sine=sample_rate=16000:duration=2.8", "-frames:v", 20,
               "-vf", "setpts='if(lt(N,10),N*0.1,N*0.2-1.0)/TB'", "-fps_mode", "vfr",
               "-c:v", "libx264", "-c:a", "aac", root / "vfr.mp4")
    ffmpeg_run(*src, "-itsoffset", 1, "-i", root / "voice2s.wav", "-c:v", "libx264",
               "-c:a", "pcm_s16le", root / "late.mkv")
    ffmpeg_run(*src, "-f", "lavfi", "-i", "sine=sample_rate=16000:duration=3", "-c:v", "libx264",
               "-c:a", "aac", root / "early.mp4")
    csv = root / "manifest.csv"
    csv.write_text("video,annotation,split,name\n" + "".join(
        f"{v},,train,{v.split('.')[0]}\n" for v in ("bframes.avi", "vfr.mp4", "late.mkv", "early.mp4")))
    params = params_at(root / "work", root, corpus={"layout": "manifest", "manifest": str(csv)},
                       faces={"on_error": "fail"}, audio={"on_error": "fail", "mask": "energy"},
                       embed={"on_error": "fail"})
    run_faces(params), run_audio(params), run_embed(params)
    return root, params


def read(params, stage, name):
    folder = params.path(getattr(params, stage).out)
    with h5py.File(cache.entry_path(folder, name), "r") as f:
        per_frame = {k: v for k, v in datasets(f).items() if len(v) == len(f["timestamps"])}
        return per_frame | dict(f.attrs)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_stage_has_one_row_per_decoded_frame_at_the_same_times(timed, name):
    root, params = timed
    video = next(root.glob(f"{name}.*"))
    decoded = sum(len(b) for b in iter_frames(video, 32, 32))
    times, _ = EXPECTED[name]
    faces, audio, embed = (read(params, s, name) for s in ("faces", "audio", "embed"))
    assert faces["n_frames"] == audio["n_frames"] == embed["n_frames"] == decoded == len(times)
    np.testing.assert_allclose(faces["timestamps"], times, atol=1e-3)
    np.testing.assert_array_equal(audio["timestamps"], faces["timestamps"])
    np.testing.assert_array_equal(embed["timestamps"], faces["timestamps"])
    assert faces["timestamps_source"] == audio["timestamps_source"]
    assert ("packet dts" in faces["timestamps_source"]) == (name == "bframes")


@pytest.mark.parametrize("name", ["late", "early"])
def test_frames_outside_the_audio_track_are_masked(timed, name):
    _, params = timed
    audio, embed = read(params, "audio", name), read(params, "embed", name)
    times = audio["timestamps"]
    start, end = EXPECTED[name][1]
    inside = (times + 1 / FPS > start + 1e-6) & (times < end - 1e-6)  # frame overlaps the track
    assert inside.sum() == 50 if name == "late" else inside.sum() == 75
    np.testing.assert_array_equal(audio["audio_valid"], inside)
    assert audio["audio_start"] == pytest.approx(start, abs=1e-3)
    assert not audio["voice"][~inside].any()
    assert (audio["energy_db"][~inside] == -120).all()   # no samples there
    assert audio["voice"][inside].mean() > 0.9            # a tone / the voice is loud (energy mask)
    np.testing.assert_array_equal(embed[cache.stream_key("audio", "mask")], audio["audio_valid"] & audio["voice"])


def test_cache_verify_rereads_the_videos(timed, tmp_path):
    root, params = timed
    assert verify(params.path(params.embed.out), params.root / "params.yaml", media=True) == []
    folder = tmp_path / "audio"
    shutil.copytree(params.path(params.audio.out), folder)
    with h5py.File(cache.entry_path(folder, "late"), "r+") as f:
        f["timestamps"][5] += 0.02
        # as a writer with a timing bug would leave it: content hash consistent, times wrong
        f.attrs[cache.CONTENT_HASH] = cache.content_hash(f)
    faults = verify(folder, params.root / "params.yaml", media=True)
    assert len(faults) == 1 and "late.h5" in faults[0] and "frame 5" in faults[0]
