"""Invariants of the generated demo corpus (layout, labels, media, determinism, safety)."""

import hashlib
import json

import numpy as np
import pytest

from pipeline.corpus.entries import affwild2
from pipeline.demo import expression, generate
from pipeline.demo.generate import (ANNOTATIONS, FOLDERS, MANIFEST, SPLITS, TASK_NAMES, VideoPlan, generate_demo,
                                    plan_videos, video_content)
from pipeline.errors import InputError
from pipeline.media import iter_frames, probe, read_audio
from pipeline.tasks import TASKS

VA = TASKS.get("va")()
HEADER = ",".join(VA.columns)
read_annotation = VA.read_annotation
HEADERS = {"va": "valence,arousal", "expr": "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other",
           "au": "AU1,AU2,AU4,AU6,AU7,AU10,AU12,AU15,AU23,AU24,AU25,AU26"}   # the published headers
AFFWILD2_FOLDERS = {"va": "annotations/VA_Estimation_Challenge", "expr": "annotations/EXPR_Recognition_Challenge",
                    "au": "annotations/AU_Detection_Challenge"}


def manifest(root):
    return json.loads((root / MANIFEST).read_text())


def entries_of(plans):
    """task -> split -> entry names, from plans."""
    return generate.task_entries(plans)


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
    """Paired intervals over videos need several per split (docs/demo-corpus.md); the VA task
    keeps the corpus's shape: 14 train, 8 validation, 8 test videos (15/8/8 entries)."""
    full = repo_params.demo.full
    assert min(full.validation, full.test) >= 8 and full.train >= 8
    va = entries_of(plan_videos(repo_params.demo, full))["va"]
    assert [len(va[s]) for s in SPLITS] == [full.train + 1, full.validation, full.test]
    tiny = entries_of(plan_videos(repo_params.demo, repo_params.demo.tiny))["va"]
    assert [len(tiny[s]) for s in SPLITS] == [2, 1, 1]


@pytest.mark.parametrize("size", ["full", "tiny"])
def test_tasks_have_their_own_splits_and_videos(repo_params, size):
    """As in Aff-Wild2: some entries are in one task's training split and another's validation
    split, some are labelled for one or two tasks only; every task still has every split."""
    plans = plan_videos(repo_params.demo, getattr(repo_params.demo, size))
    by = {}
    for plan in plans:
        for p, name in enumerate(plan.annotation_names()):
            tasks = plan.tasks_of(p)
            assert tasks["va"] == plan.split     # VA labels everyone, in the video's split
            by[name] = tasks
    differ = {n: t for n, t in by.items() if len(set(t.values())) > 1}
    partial = {n: t for n, t in by.items() if len(t) < len(TASK_NAMES)}
    assert any(t["va"] == "Train_Set" and t.get("expr") == "Validation_Set" for t in differ.values())
    assert partial and all("va" in t for t in partial.values())
    for task, splits in entries_of(plans).items():
        assert all(splits[s] for s in SPLITS), (task, splits)
    if size == "full":
        assert any(t["va"] == "Validation_Set" and t.get("expr") == "Train_Set" for t in differ.values())
        assert any(t["va"] == "Train_Set" and t.get("au") == "Validation_Set" for t in differ.values())
        assert any(t["va"] == "Validation_Set" and t.get("au") == "Train_Set" for t in differ.values())
        assert any(len(t) == 1 for t in partial.values()) and any(len(t) == 2 for t in partial.values())
        assert sum(len(t) < 3 for t in by.values()) <= 6  # a few, not most


def test_full_corpus_shows_every_class_in_every_task_split(repo_params):
    """Scoring EXPR (macro F1 over 8 classes) and AU needs every class in every split: the
    classes are dealt from decks of all 8 over the corpus, so each task split holds each class
    in at least two episodes (and every AU through the classes that show it)."""
    plans = plan_videos(repo_params.demo, repo_params.demo.full)
    for task in ("expr", "au"):
        for split in SPLITS:
            counts = np.zeros(len(expression.CLASSES), int)
            for plan in plans:
                for p in range(len(plan.sides)):
                    if plan.tasks_of(p).get(task) == split:
                        np.add.at(counts, list(plan.expressions[p]), 1)
            assert counts.min() >= 2, (task, split, counts)
    # the deal depends on the seed, and is reproduced by it
    other = plan_videos(repo_params.demo, repo_params.demo.full, seed=1)
    assert [p.expressions for p in other] != [p.expressions for p in plans]
    assert [p.expressions for p in plan_videos(repo_params.demo, repo_params.demo.full)] == \
        [p.expressions for p in plans]


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
    assert FOLDERS == AFFWILD2_FOLDERS and ANNOTATIONS == AFFWILD2_FOLDERS["va"]
    for v in m["videos"]:
        batch = "batch2" if v["split"] == "Test_Set" else "batch1"
        assert v["video"] == f"videos/{batch}/{v['name']}.mp4"
        for p in v["persons"]:
            assert generate.BASE_F0_HZ[0] <= p["base_f0_hz"] <= generate.BASE_F0_HZ[1]
            stem = v["name"] if p["side"] is None else f"{v['name']}_{p['side']}"
            assert p["annotation"] == f"{ANNOTATIONS}/{v['split']}/{stem}.txt"
            for task, info in p["labels"].items():
                assert info["annotation"] == f"{AFFWILD2_FOLDERS[task]}/{info['split']}/{stem}.txt"
    two = [v for v in m["videos"] if len(v["persons"]) == 2]
    assert len(two) == 1 and [p["side"] for p in two[0]["persons"]] == ["left", "right"]
    for task in TASK_NAMES:
        folder = tiny_corpus / AFFWILD2_FOLDERS[task]
        assert sorted(p.name for p in folder.iterdir()) == ["Test_Set", "Test_Set_names.txt", "Train_Set",
                                                             "Validation_Set"]
        files = {s: sorted(f.stem for f in (folder / s).glob("*.txt")) for s in SPLITS}
        assert files == {s: sorted(n) for s, n in m["tasks"][task]["entries"].items()}
        assert (folder / "Test_Set_names.txt").read_text().split() == m["tasks"][task]["entries"]["Test_Set"]
    test_names = (tiny_corpus / ANNOTATIONS / "Test_Set_names.txt").read_text().split()
    assert test_names == [v["name"] for v in m["videos"] if v["split"] == "Test_Set"]


def test_the_corpus_adapter_reads_every_task(tiny_corpus):
    """pipeline.corpus.entries reads the three tasks' folders: the right person of the
    two-person video is VA train and EXPR validation, with no AU labels."""
    corpus = affwild2(tiny_corpus)
    assert corpus.problems == []
    e = {x.name: x for x in corpus.entries}
    assert set(e) == {"demo_00_left", "demo_00_right", "demo_01", "demo_02"}
    assert {t: e["demo_00_right"].split(t) for t in TASK_NAMES} == {"va": "train", "expr": "validation", "au": None}
    assert {t: e["demo_00_left"].split(t) for t in TASK_NAMES} == {"va": "train", "expr": "train", "au": "train"}
    assert all(e["demo_02"].split(t) == "test" for t in TASK_NAMES)
    for task in TASK_NAMES:
        assert {x.split(task) for x in corpus.entries} - {None} == {"train", "validation", "test"}


def test_annotations_match_frames_and_manifest(tiny_corpus):
    n_invalid = {t: 0 for t in TASK_NAMES}
    for v in manifest(tiny_corpus)["videos"]:
        info = probe(tiny_corpus / v["video"])
        decoded = sum(len(b) for b in iter_frames(tiny_corpus / v["video"], 64, 48))
        assert info.n_frames == decoded == v["n_frames"]
        for p in v["persons"]:
            assert p["labels"]["va"]["annotation"] == p["annotation"]
            assert p["labels"]["va"]["invalid"] == p["invalid_labels"]
            for task, ann in p["labels"].items():
                fmt = TASKS.get(task)()
                path = tiny_corpus / ann["annotation"]
                assert path.read_text().splitlines()[0] == HEADERS[task]
                labels = fmt.read_annotation(path)
                assert labels.shape == (v["n_frames"], fmt.values)
                invalid = ~fmt.valid(labels)
                assert (labels[invalid] == fmt.invalid).all()    # a whole row: -5,-5 / -1 / twelve -1
                expected = np.zeros(v["n_frames"], bool)
                for a, b in ann["invalid"]:
                    expected[a:b] = True
                np.testing.assert_array_equal(invalid, expected)
                n_invalid[task] += int(invalid.sum())
                valid = labels[~invalid]
                if task == "va":
                    assert np.abs(valid).max() <= 1 and np.abs(valid).max() > 0.05
                    # smooth: consecutive valid frames change by a few hundredths at most
                    steps = np.abs(np.diff(labels, axis=0))[~(invalid[1:] | invalid[:-1])]
                    assert steps.max() < 0.15
                elif task == "expr":
                    assert set(np.unique(valid)) <= set(range(8))
                else:
                    assert set(np.unique(valid)) == {0.0, 1.0}
    assert all(n > 0 for n in n_invalid.values()), n_invalid  # the corpus exercises every invalid marker


def test_labels_are_the_manifests_episodes_and_action_units(tiny_corpus):
    """EXPR files hold the episodes' classes, AU files the manifest's AU stretches, and VA sits
    on the circumplex of the episode (Happiness positive, Sadness negative and calm...)."""
    seen = set()
    for v in manifest(tiny_corpus)["videos"]:
        for p in v["persons"]:
            n = v["n_frames"]
            episodes = p["expressions"]
            assert episodes[0]["start"] == 0 and episodes[-1]["stop"] == n
            assert all(a["stop"] == b["start"] for a, b in zip(episodes, episodes[1:]))
            classes = np.concatenate([[e["class"]] * (e["stop"] - e["start"]) for e in episodes])
            shown = np.zeros((n, len(expression.AUS)))
            for k, a in enumerate(expression.AUS):
                for s0, s1 in p["action_units"][a]:
                    shown[s0:s1, k] = 1
            va = read_annotation(tiny_corpus / p["annotation"])
            for task, ann in p["labels"].items():
                labels = TASKS.get(task)().read_annotation(tiny_corpus / ann["annotation"])
                ok = TASKS.get(task)().valid(labels)
                if task == "expr":
                    np.testing.assert_array_equal(labels[ok, 0], classes[ok])
                if task == "au":
                    np.testing.assert_array_equal(labels[ok], shown[ok])
            for e in episodes:
                seen.add(e["name"])
                core = slice(e["start"] + 4, e["stop"] - 4)
                ok = (va[core] != -5).all(1)
                vm, am = va[core][ok].mean(0)
                assert (vm, am) == pytest.approx((e["valence"], e["arousal"]), abs=0.35), e
                if e["name"] == "Happiness":
                    assert vm > 0.2
                if e["name"] in ("Sadness", "Anger", "Disgust", "Fear"):
                    assert vm < -0.1
                if e["name"] in ("Anger", "Fear", "Surprise"):
                    assert am > 0.2
                if e["name"] == "Sadness":
                    assert am < -0.1
                if e["name"] == "Neutral":
                    assert abs(vm) < 0.3 and abs(am) < 0.3
    assert seen == set(expression.CLASSES)  # the tiny corpus shows every class once


def test_speech_moves_the_speakers_mouth(repo_params):
    """AU25 (lips part) follows the voice's syllables of whoever speaks: in the two-person
    video it is on far more while a person speaks than while the other one does."""
    demo = repo_params.demo
    size = demo.full.model_copy(update={"seconds": 40.0})
    plan = VideoPlan(index=0, name="talk", split="Train_Set", batch="batch1", fps=15.0, n_frames=600,
                     sides=("left", "right"))
    c = video_content(plan, demo, size, seed=0)
    k25, k26 = expression.AU_INDEX["AU25"], expression.AU_INDEX["AU26"]
    for p in range(2):
        quiet = expression.PROFILE_MATRIX[c.expr[p], k25] == 0   # expressions that do not part the lips
        speaking = c.speaker == p
        on = c.au_labels[p][:, k25]
        assert (speaking & quiet).sum() > 60 and (~speaking & quiet).sum() > 60
        assert on[speaking & quiet].mean() > 0.4 and on[~speaking & quiet].mean() < 0.1
        assert (c.aus[p][:, k25] >= c.aus[p][:, k26]).all()
    # and the mouth opens and closes with the syllables (several runs per second of speech)
    runs = expression.runs(c.au_labels[0][:, k25] > 0)
    assert len(runs) > 1.0 * (c.speaker == 0).sum() / plan.fps


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
    (the tiny corpus's valence barely moves in some videos). Pitch above the speaker's base:
    with four speakers, whose arousal differs more between than within them, the base pitch
    would decide the pooled r."""
    from pipeline.demo.check import voice_cues

    m = manifest(tiny_corpus)
    assert m["voice_lead_s"] == generate.VOICE_LEAD_S
    cues = voice_cues(tiny_corpus, m)
    assert cues["r_level_db_arousal"] > 0.7 and cues["r_f0_rel_octaves_arousal"] > 0.7


def test_same_seed_same_bytes_other_seed_differs(tiny_corpus, tmp_path, repo_params):
    again = tmp_path / "again"
    generate_demo(repo_params.demo, again, tiny=True, seed=0)
    digest = lambda root: {f: hashlib.sha256((root / f).read_bytes()).hexdigest()  # noqa: E731
                           for f in manifest(root)["files"]}
    assert digest(again) == digest(tiny_corpus)
    other = tmp_path / "other"
    generate_demo(repo_params.demo, other, tiny=True, seed=1)
    for task in TASK_NAMES:
        first = manifest(tiny_corpus)["videos"][0]["persons"][0]["labels"][task]["annotation"]
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
