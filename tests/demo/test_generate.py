"""Invariants of the generated demo corpus (layout, labels, media, determinism, safety)."""

import hashlib
import json

import numpy as np
import pytest

from pipeline.tasks import TASKS
from pipeline.demo import generate
from pipeline.demo.generate import ANNOTATIONS, MANIFEST, VideoPlan, generate_demo, plan_videos, video_content
from pipeline.errors import InputError
from pipeline.media import iter_frames, probe, read_audio

HEADER = ",".join(TASKS.get("va").columns)
read_annotation = TASKS.get("va")().read_annotation


def manifest(root):
    return json.loads((root / MANIFEST).read_text())


def test_plan_matches_params(repo_params):
    demo = repo_params.demo
    for size in (demo.tiny, demo.full):
        plans = plan_videos(demo, size)
        splits = [p.split for p in plans]
        assert splits.count("Train_Set") == size.train
        assert splits.count("Validation_Set") == size.validation
        assert splits.count("Test_Set") == size.test
        assert sum(len(p.sides) == 2 for p in plans) == 1  # one two-person video
        assert {p.fps for p in plans} == {demo.fps, demo.odd_fps}
        assert len({p.name for p in plans}) == len(plans)


def test_full_size_has_enough_videos_per_split(repo_params):
    """Paired intervals over videos need several per split (docs/demo-corpus.md)."""
    full = repo_params.demo.full
    assert min(full.validation, full.test) >= 8 and full.train >= 8


def test_voice_leads_the_labels_by_half_a_second(repo_params):
    """The speech level follows arousal 0.5 s ahead: the smoothed per-frame level (numpy)
    correlates best with the arousal label 0.5 s later (docs/demo-corpus.md)."""
    demo = repo_params.demo
    size = demo.full.model_copy(update={"seconds": 40.0, "audio_gap_seconds": 0.0})
    plan = VideoPlan(index=3, name="lead", split="Train_Set", batch="batch1", fps=15.0,
                     n_frames=600, sides=(None,))
    c = video_content(plan, demo, size, seed=0)
    hop = demo.sample_rate // 15
    frames = c.audio[: 600 * hop].astype(np.float64).reshape(600, hop)
    level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-10)
    # a centred 1 s mean of the loud frames' level (pauses carry no level)
    loud = level > np.percentile(level, 40)
    kernel = np.ones(15)
    smooth = np.convolve(np.where(loud, level, 0), kernel, "same") / np.maximum(np.convolve(loud, kernel, "same"), 1)
    aro = c.labels[0][:, 1]
    lags = np.arange(-15, 16)  # frames: the label at t + lag against the level at t
    r = [np.corrcoef(smooth[30:-30], aro[30 + k:600 - 30 + k])[0, 1] for k in lags]
    assert lags[int(np.argmax(r))] / 15.0 == pytest.approx(0.5, abs=0.2)
    assert max(r) > 0.8


def test_layout_is_affwild2(tiny_corpus):
    m = manifest(tiny_corpus)
    listed = {p.relative_to(tiny_corpus).as_posix() for p in tiny_corpus.rglob("*") if p.is_file()}
    assert listed == set(m["files"]) | {MANIFEST}
    for v in m["videos"]:
        batch = "batch2" if v["split"] == "Test_Set" else "batch1"
        assert v["video"] == f"videos/{batch}/{v['name']}.mp4"
        for p in v["persons"]:
            assert generate.BASE_F0_HZ[0] <= p["base_f0_hz"] <= generate.BASE_F0_HZ[1]
            stem = v["name"] if p["side"] is None else f"{v['name']}_{p['side']}"
            assert p["annotation"] == f"{ANNOTATIONS}/{v['split']}/{stem}.txt"
    two = [v for v in m["videos"] if len(v["persons"]) == 2]
    assert len(two) == 1 and [p["side"] for p in two[0]["persons"]] == ["left", "right"]
    test_names = (tiny_corpus / ANNOTATIONS / "Test_Set_names.txt").read_text().split()
    assert test_names == [v["name"] for v in m["videos"] if v["split"] == "Test_Set"]


def test_annotations_match_frames_and_manifest(tiny_corpus):
    n_invalid = 0
    for v in manifest(tiny_corpus)["videos"]:
        info = probe(tiny_corpus / v["video"])
        decoded = sum(len(b) for b in iter_frames(tiny_corpus / v["video"], 64, 48))
        assert info.n_frames == decoded == v["n_frames"]
        for p in v["persons"]:
            path = tiny_corpus / p["annotation"]
            assert path.read_text().splitlines()[0] == HEADER
            labels = read_annotation(path)
            assert labels.shape == (v["n_frames"], 2)
            invalid = (labels == -5).all(1)
            expected = np.zeros(v["n_frames"], bool)
            for a, b in p["invalid_labels"]:
                expected[a:b] = True
            np.testing.assert_array_equal(invalid, expected)
            n_invalid += int(invalid.sum())
            valid = labels[~invalid]
            assert np.abs(valid).max() <= 1 and np.abs(valid).max() > 0.05
            # smooth: consecutive valid frames change by a few hundredths at most
            steps = np.abs(np.diff(labels, axis=0))[~(invalid[1:] | invalid[:-1])]
            assert steps.max() < 0.15
    assert n_invalid > 0  # the corpus exercises -5 frames


def test_streams_and_durations(tiny_corpus):
    for v in manifest(tiny_corpus)["videos"]:
        info = probe(tiny_corpus / v["video"])
        assert (info.video_codec, info.audio_codec) == ("h264", "aac")
        assert (info.width, info.height) == (v["width"], v["height"])
        assert info.fps == pytest.approx(v["fps"])
        assert info.sample_rate == v["sample_rate"]
        assert abs(info.video_duration - info.audio_duration) < 1 / v["fps"]
        assert info.video_duration == pytest.approx(v["n_frames"] / v["fps"], abs=1e-3)


def test_unreliable_stretches_are_in_the_media(tiny_corpus):
    """Silent / noisy audio gaps and hidden faces are really there, apart from each other."""
    modes = set()
    for v in manifest(tiny_corpus)["videos"]:
        sr, fps = v["sample_rate"], v["fps"]
        audio = read_audio(tiny_corpus / v["video"], sr)
        assert 0 <= len(audio) - v["n_samples"] <= 1024  # AAC pads the tail
        (a, b), = v["audio_gap"]
        gap = audio[int(a * sr / fps) + 400:int(b * sr / fps) - 400]
        rest = np.concatenate([audio[: int(a * sr / fps)], audio[int(b * sr / fps):]])
        rms = lambda x: float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))  # noqa: E731
        if v["audio_gap_mode"] == "silent":
            assert rms(gap) < 0.05 * rms(rest)
        else:
            assert rms(gap) > 3 * rms(rest)
        modes.add(v["audio_gap_mode"])
        hidden = [s for p in v["persons"] for s in p["face_hidden"]]
        assert len(hidden) == 1
        (h0, h1), = hidden
        assert h1 <= a or h0 >= b  # never both modalities at once
        modes.add(v["face_hidden_mode"])
    assert modes == {"silent", "noise", "occluder", "out_of_frame"}


def test_decoded_voice_carries_arousal(tiny_corpus):
    """After AAC, the speech level and pitch (numpy, pipeline.demo.check) still follow the
    speaker's arousal `voice_lead_s` ahead; valence's brightness is tested in test_voice.py
    (the tiny corpus's valence barely moves in some videos)."""
    from pipeline.demo.check import voice_cues

    m = manifest(tiny_corpus)
    assert m["voice_lead_s"] == generate.VOICE_LEAD_S
    cues = voice_cues(tiny_corpus, m)
    assert cues["r_level_db_arousal"] > 0.7 and cues["r_f0_octaves_arousal"] > 0.7


def test_same_seed_same_bytes_other_seed_differs(tiny_corpus, tmp_path, repo_params):
    again = tmp_path / "again"
    generate_demo(repo_params.demo, again, tiny=True, seed=0)
    digest = lambda root: {f: hashlib.sha256((root / f).read_bytes()).hexdigest()  # noqa: E731
                           for f in manifest(root)["files"]}
    assert digest(again) == digest(tiny_corpus)
    other = tmp_path / "other"
    generate_demo(repo_params.demo, other, tiny=True, seed=1)
    first = manifest(tiny_corpus)["videos"][0]["persons"][0]["annotation"]
    assert (other / first).read_text() != (tiny_corpus / first).read_text()


def test_refuses_a_folder_with_other_files(tmp_path, repo_params):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(InputError, match=r"mine: folder is not empty and holds no demo corpus \(thesis.tex\)"):
        generate_demo(repo_params.demo, out, tiny=True)
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]
    assert (out / "thesis.tex").read_text() == "precious"
    assert not list(tmp_path.glob(".mine.partial-*"))


def test_regenerating_replaces_only_its_own_files(tmp_path, repo_params, monkeypatch):
    out = tmp_path / "demo"
    generate_demo(repo_params.demo, out, tiny=True, seed=0)
    (out / "notes.md").write_text("keep me")
    first = manifest(out)["files"]
    generate_demo(repo_params.demo, out, tiny=True, seed=3)
    assert (out / "notes.md").read_text() == "keep me"
    assert manifest(out)["seed"] == 3 and manifest(out)["files"] == first


def test_crash_leaves_nothing_half_written(tmp_path, repo_params, monkeypatch):
    real = generate.render_video
    calls = []

    def flaky(plan, *args, **kwargs):
        calls.append(plan.name)
        if len(calls) == 2:
            raise RuntimeError("simulated crash")
        return real(plan, *args, **kwargs)

    monkeypatch.setattr(generate, "render_video", flaky)
    out = tmp_path / "demo"
    with pytest.raises(RuntimeError, match="simulated crash"):
        generate_demo(repo_params.demo, out, tiny=True)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no staging folder left either


def test_refuses_a_file_as_output(tmp_path, repo_params):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(InputError, match="exists and is not a folder"):
        generate_demo(repo_params.demo, path, tiny=True)


@pytest.mark.slow
def test_mtcnn_finds_visible_faces_in_the_videos(tiny_corpus):
    """Acceptance: MTCNN finds >= 95 % of visible faces in the decoded (H.264) videos."""
    from pipeline.demo.check import check_corpus

    report = check_corpus(tiny_corpus)
    assert report["detect_rate_visible"] >= 0.95
    occluded = [r for r in report["videos"] if r["hidden_mode"] == "occluder"]
    assert occluded and all(r["found_hidden"] <= 0.1 * r["hidden_person_frames"] for r in occluded)
    assert report["lines_match_frames"]
