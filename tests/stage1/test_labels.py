"""`jmt labels` (pipeline/stage1/labels.py): every entry's annotations, per task, aligned to the
frames the faces stage decoded, in their own cache; on the tiny demo corpus (all three tasks)
and on hand-made expr and au files in place of its own. Editing an annotation reruns the labels stage for that
entry alone and nothing of faces, audio or embed."""

import json
import shutil

import h5py
import numpy as np
import pytest

from pipeline import cache
from pipeline.errors import InputError
from pipeline.stage1.audio import run_audio
from pipeline.stage1.embed import run_embed
from pipeline.stage1.faces import run_faces
from pipeline.stage1.labels import run_labels
from pipeline.tasks import TASKS

from .helpers import params_at, stamps, write_labels

VA, EXPR, AU = (TASKS.get(n)() for n in ("va", "expr", "au"))
ANN = "annotations"
FRAMES = {"demo_00_left": 60, "demo_00_right": 60, "demo_01": 96, "demo_02": 60}


def read(folder, name):
    with h5py.File(cache.entry_path(folder, name)) as f:
        return cache.attrs_of(f), {t: f[cache.label_key(t)][...] for t in f.get("labels", {})}


def shared_faces(tiny_cache):
    params, _ = tiny_cache
    return {"out": str(params.path(params.faces.out))}


# the tiny demo corpus's splits per task (demo_00_right: EXPR validation, no AU labels)
DEMO_SPLITS = {"demo_00_left": {"va": "train", "expr": "train", "au": "train"},
               "demo_00_right": {"va": "train", "expr": "validation"},
               "demo_01": {"va": "validation", "expr": "validation", "au": "validation"},
               "demo_02": {"va": "test", "expr": "test", "au": "test"}}
FOLDERS = {"va": "VA_Estimation_Challenge", "expr": "EXPR_Recognition_Challenge", "au": "AU_Detection_Challenge"}
SET = {"train": "Train_Set", "validation": "Validation_Set", "test": "Test_Set"}


def test_labels_of_the_demo_corpus(tiny_cache, tiny_corpus, tmp_path):
    params = params_at(tmp_path, tiny_corpus, faces=shared_faces(tiny_cache))
    result = run_labels(params)
    assert sorted(result.done) == sorted(FRAMES) and result.skipped == [] and result.cached == []
    folder = params.path(params.labels.out)
    assert folder == tmp_path / "cache/labels"
    for name, n in FRAMES.items():
        attrs, labels = read(folder, name)
        assert attrs["schema"] == "jmt.labels/1" and attrs["stage"] == "labels" and attrs["n_frames"] == n
        assert attrs["video"].startswith("videos/") and attrs["fps"] > 0
        assert sorted(labels) == sorted(DEMO_SPLITS[name])
        rows = []
        for task, split in sorted(DEMO_SPLITS[name].items()):
            t = TASKS.get(task)()
            ann = f"{ANN}/{FOLDERS[task]}/{SET[split]}/{name}.txt"
            want = t.read_annotation(tiny_corpus / ann)
            assert len(want) == n                              # the demo writes one row per frame
            assert labels[task].dtype == np.float32
            np.testing.assert_array_equal(labels[task], want)
            rows.append({"task": task, "split": split, "annotation": ann, "rows_minus_frames": 0,
                         "valid_frames": int(t.valid(want).sum())})
            assert result.done[name][task] == {k: rows[-1][k] for k in ("split", "valid_frames", "rows_minus_frames")}
        assert attrs["tasks"] == rows
    assert (~VA.valid(read(folder, "demo_00_left")[1]["va"])).any() or \
        (~VA.valid(read(folder, "demo_00_right")[1]["va"])).any()         # the demo's -5 stretch survives
    report = json.loads((folder / "report.json").read_text())
    assert report["stage"] == "labels" and sorted(report["done"]) == sorted(FRAMES)
    again = run_labels(params)
    assert again.done == {} and sorted(again.cached) == sorted(FRAMES)


@pytest.fixture
def corpus(tiny_corpus, tmp_path):
    """A copy of the tiny corpus with hand-made expr and au annotations in place of the demo's:

        expr (EXPR_Recognition_Challenge): demo_01 Train (2 rows too many), demo_00_left Validation
        au   (AU_Detection_Challenge):     demo_00_left Train (3 rows short), demo_02 in Test_Set_names.txt
    """
    root = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, root)
    expr, au = root / ANN / "EXPR_Recognition_Challenge", root / ANN / "AU_Detection_Challenge"
    for folder in (expr, au):  # the demo's own expr and au files give way to these
        shutil.rmtree(folder)
    classes = np.arange(96 + 2) % 8
    EXPR.write_annotation(expr / "Train_Set/demo_01.txt", classes[:, None])
    EXPR.write_annotation(expr / "Validation_Set/demo_00_left.txt", np.r_[np.full(30, -1), np.full(30, 4)][:, None])
    units = np.zeros((60 - 3, 12))
    units[::2, 3] = 1
    AU.write_annotation(au / "Train_Set/demo_00_left.txt", units)
    (au / "Test_Set_names.txt").write_text("demo_02\n")
    return root


def test_per_task_labels_splits_and_alignment(tiny_cache, corpus, tmp_path):
    params = params_at(tmp_path / "w", corpus, faces=shared_faces(tiny_cache))
    result = run_labels(params)
    assert result.skipped == [] and sorted(result.done) == sorted(FRAMES)
    folder = params.path(params.labels.out)

    attrs, labels = read(folder, "demo_00_left")             # va train, expr validation, au train
    assert {t["task"]: t["split"] for t in attrs["tasks"]} == {"au": "train", "expr": "validation", "va": "train"}
    assert set(labels) == {"va", "expr", "au"}
    assert labels["expr"].shape == (60, 1) and labels["au"].shape == (60, 12)
    np.testing.assert_array_equal(labels["expr"][:, 0], np.r_[np.full(30, -1), np.full(30, 4)])
    au = next(t for t in attrs["tasks"] if t["task"] == "au")
    assert au == {"task": "au", "split": "train", "annotation": f"{ANN}/AU_Detection_Challenge/Train_Set/demo_00_left.txt",
                  "rows_minus_frames": -3, "valid_frames": 57}
    assert (labels["au"][57:] == -1).all() and AU.valid(labels["au"][:57]).all()   # missing rows invalid
    assert labels["au"][:57:2, 3].all() and not labels["au"][1:57:2, 3].any()
    assert next(t for t in attrs["tasks"] if t["task"] == "expr")["valid_frames"] == 30

    attrs, labels = read(folder, "demo_01")                  # va validation, expr train (2 extra rows dropped)
    assert {t["task"]: (t["split"], t["rows_minus_frames"]) for t in attrs["tasks"]} == {
        "expr": ("train", 2), "va": ("validation", 0)}
    np.testing.assert_array_equal(labels["expr"][:, 0], np.arange(96) % 8)

    attrs, labels = read(folder, "demo_02")                  # va test (labelled), au test (unlabelled)
    au = next(t for t in attrs["tasks"] if t["task"] == "au")
    assert au == {"task": "au", "split": "test", "annotation": None, "rows_minus_frames": 0, "valid_frames": 0}
    assert labels["au"].shape == (60, 12) and (labels["au"] == AU.invalid).all()
    assert "expr" not in labels

    attrs, labels = read(folder, "demo_00_right")            # va only
    assert list(labels) == ["va"] and [t["task"] for t in attrs["tasks"]] == ["va"]


def test_rows_too_far_from_the_frames_are_a_recorded_skip_naming_the_file(tiny_cache, corpus, tmp_path):
    bad = corpus / ANN / "EXPR_Recognition_Challenge/Train_Set/demo_02.txt"
    write_labels(bad, 60 + 6, value=3, task="expr")                     # tolerance 5
    params = params_at(tmp_path / "w", corpus, faces=shared_faces(tiny_cache))
    result = run_labels(params)
    assert [s["entry"] for s in result.skipped] == ["demo_02"]
    assert f"{bad}: 66 label rows for 60 video frames (difference +6 exceeds the tolerance of 5)" in \
        result.skipped[0]["error"]
    assert not cache.entry_path(params.path(params.labels.out), "demo_02").exists()
    report = json.loads((params.path(params.labels.out) / "report.json").read_text())
    assert [s["entry"] for s in report["skipped"]] == ["demo_02"] and "demo_02" not in report["done"]
    # with a larger tolerance it is aligned (a change of the stage's config: every entry redone)
    wider = params_at(tmp_path / "w", corpus, faces=shared_faces(tiny_cache), corpus={"label_tolerance": 6})
    again = run_labels(wider)
    assert sorted(again.done) == sorted(FRAMES) and again.skipped == []
    tasks = {t["task"]: t for t in read(wider.path(wider.labels.out), "demo_02")[0]["tasks"]}
    assert tasks["expr"]["rows_minus_frames"] == 6 and tasks["expr"]["valid_frames"] == 60


def test_a_bad_file_of_one_person_skips_only_that_video_and_writes_nothing_of_it(tiny_cache, corpus, tmp_path):
    """A video is one unit (as in faces and audio): a bad annotation of its right person skips
    both its entries, and neither is written (the report says skipped, the cache agrees)."""
    bad = corpus / ANN / "AU_Detection_Challenge/Validation_Set/demo_00_right.txt"
    bad.parent.mkdir(parents=True)
    bad.write_text("AU1,AU2\n0,1\n")
    params = params_at(tmp_path / "w", corpus, faces=shared_faces(tiny_cache))
    result = run_labels(params)
    why = {s["entry"]: s["error"] for s in result.skipped}
    assert set(why) == {"demo_00_left", "demo_00_right"}
    assert all(e.startswith(f"{bad}: line 1: expected header 'AU1,AU2,AU4,") for e in why.values())
    assert sorted(result.done) == ["demo_01", "demo_02"]
    assert cache.entries(params.path(params.labels.out)) == ["demo_01", "demo_02"]
    with pytest.raises(InputError, match="demo_00_left: .*demo_00_right.txt: line 1"):
        run_labels(params.updated(labels={"on_error": "fail"}))


def test_missing_faces_cache_is_a_recorded_skip(tiny_corpus, tmp_path):
    params = params_at(tmp_path, tiny_corpus, faces={"out": str(tmp_path / "nofaces")})
    result = run_labels(params)
    assert result.done == {} and len(result.skipped) == 4
    assert all("missing; run `jmt faces` first" in s["error"] for s in result.skipped)


@pytest.fixture
def stage1_copy(tiny_cache, corpus, tmp_path):
    """Params over the hand-made corpus with copies of the session's faces, audio and embed
    caches (the copied corpus has the same videos: every entry of them is current)."""
    shared, _ = tiny_cache
    outs = {}
    for stage in ("faces", "audio", "embed"):
        copy = tmp_path / "caches" / stage
        shutil.copytree(shared.path(getattr(shared, stage).out), copy)
        outs[stage] = {"out": str(copy)}
    return lambda **more: params_at(tmp_path / "w", corpus, **outs, **more)


def test_editing_labels_reruns_the_labels_stage_alone(stage1_copy, corpus):
    params = stage1_copy()
    assert sorted(run_labels(params).done) == sorted(FRAMES)
    folders = {s: params.path(getattr(params, s).out) for s in ("faces", "audio", "embed", "labels")}
    before = {s: stamps(f) for s, f in folders.items()}

    ann = corpus / ANN / "VA_Estimation_Challenge/Validation_Set/demo_01.txt"
    lines = ann.read_text().splitlines()
    lines[10] = "0.5,-0.5"
    ann.write_text("\n".join(lines) + "\n")
    edited = run_labels(params)
    assert list(edited.done) == ["demo_01"] and sorted(edited.cached) == sorted(set(FRAMES) - {"demo_01"})
    assert read(folders["labels"], "demo_01")[1]["va"][9].tolist() == [0.5, -0.5]
    after = stamps(folders["labels"])
    assert {k for k in after if after[k] != before["labels"][k]} == {"demo_01.h5"}

    # another split for one task: that entry again
    moved = corpus / ANN / "EXPR_Recognition_Challenge/Train_Set/demo_00_left.txt"
    (corpus / ANN / "EXPR_Recognition_Challenge/Validation_Set/demo_00_left.txt").rename(moved)
    assert list(run_labels(params).done) == ["demo_00_left"]
    assert {t["task"]: t["split"] for t in read(folders["labels"], "demo_00_left")[0]["tasks"]}["expr"] == "train"

    tolerant = stage1_copy(corpus={"label_tolerance": 7})
    assert sorted(run_labels(tolerant).done) == sorted(FRAMES)      # the stage's own config: all of it

    for stage, run in (("faces", run_faces), ("audio", run_audio), ("embed", run_embed)):
        for p in (params, tolerant):
            result = run(p)
            assert result.done == {} and sorted(result.cached) == sorted(FRAMES), stage
        assert stamps(folders[stage]) == before[stage], f"{stage} files were rewritten"
