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
from pipeline.cache_tools import verify
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


def dropped_of(folder, name):
    """The `dropped` attribute of an entry's labels file ([] when it has none)."""
    return read(folder, name)[0].get("dropped", [])


def test_rows_too_far_from_the_frames_drop_that_task_alone_naming_the_file(tiny_cache, corpus, tmp_path):
    bad = corpus / ANN / "EXPR_Recognition_Challenge/Train_Set/demo_02.txt"
    write_labels(bad, 60 + 6, value=3, task="expr")                     # tolerance 5
    params = params_at(tmp_path / "w", corpus, faces=shared_faces(tiny_cache))
    result = run_labels(params)
    error = f"{bad}: 66 label rows for 60 video frames (difference +6 exceeds the tolerance of 5)"
    assert result.skipped == [] and sorted(result.done) == sorted(FRAMES)
    folder = params.path(params.labels.out)
    attrs, labels = read(folder, "demo_02")                             # va and au kept, expr dropped
    assert sorted(labels) == ["au", "va"] and [t["task"] for t in attrs["tasks"]] == ["au", "va"]
    assert attrs["dropped"] == [{"task": "expr", "split": "train", "file": str(bad), "error": error}]
    report = json.loads((folder / "report.json").read_text())
    assert report["skipped"] == [] and report["done"]["demo_02"]["dropped"] == attrs["dropped"]
    assert "expr" not in report["done"]["demo_02"] and report["done"]["demo_02"]["va"]["valid_frames"] > 0
    assert report["warnings"] == [{"entry": "demo_02",
                                   "warning": f"demo_02: labels of task expr dropped: {error}"}]
    # with a larger tolerance it is aligned (a change of the stage's config: every entry redone)
    wider = params_at(tmp_path / "w", corpus, faces=shared_faces(tiny_cache), corpus={"label_tolerance": 6})
    again = run_labels(wider)
    assert sorted(again.done) == sorted(FRAMES) and again.skipped == [] and again.warnings == []
    tasks = {t["task"]: t for t in read(wider.path(wider.labels.out), "demo_02")[0]["tasks"]}
    assert tasks["expr"]["rows_minus_frames"] == 6 and tasks["expr"]["valid_frames"] == 60
    assert dropped_of(wider.path(wider.labels.out), "demo_02") == []


def test_a_bad_file_of_one_person_drops_that_task_of_that_person_alone(tiny_cache, corpus, tmp_path):
    """A bad annotation file costs its own task of its own entry, nothing else: the other person
    of the video keeps every label; an entry whose every file is bad is written with no task
    (unlabelled, as an entry no task lists). `on_error: fail` stops at the first bad file."""
    bad = corpus / ANN / "AU_Detection_Challenge/Validation_Set/demo_00_right.txt"
    bad.parent.mkdir(parents=True)
    bad.write_text("AU1,AU2\n0,1\n")
    params = params_at(tmp_path / "w", corpus, faces=shared_faces(tiny_cache))
    result = run_labels(params)
    assert result.skipped == [] and sorted(result.done) == sorted(FRAMES)
    folder = params.path(params.labels.out)
    attrs, labels = read(folder, "demo_00_right")
    assert list(labels) == ["va"] and [t["task"] for t in attrs["tasks"]] == ["va"]
    (drop,) = attrs["dropped"]
    assert (drop["task"], drop["split"], drop["file"]) == ("au", "validation", str(bad))
    assert drop["error"].startswith(f"{bad}: line 1: expected header 'AU1,AU2,AU4,")
    assert sorted(read(folder, "demo_00_left")[1]) == ["au", "expr", "va"] and dropped_of(folder, "demo_00_left") == []

    va = corpus / ANN / "VA_Estimation_Challenge/Train_Set/demo_00_right.txt"
    va.write_text("valence,arousal\n0.1,oops\n")
    again = run_labels(params)
    assert list(again.done) == ["demo_00_right"] and again.skipped == []
    attrs, labels = read(folder, "demo_00_right")
    assert labels == {} and attrs["tasks"] == [] and [d["task"] for d in attrs["dropped"]] == ["au", "va"]
    assert verify(folder) == []                                          # a readable, well-formed file
    with pytest.raises(InputError, match="demo_00_left: .*demo_00_right.txt: line 1"):
        run_labels(params.updated(labels={"on_error": "fail", "out": str(tmp_path / "fail")}))
    assert not (tmp_path / "fail").exists() or cache.entries(tmp_path / "fail") == []


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


def test_an_au_file_36_rows_short_drops_au_alone_and_stage_2_reads_the_entry_as_unlabelled_for_au(
        stage1_copy, corpus):
    """The reported case: an AU file 36 rows short (tolerance 5) made `jmt labels` skip the whole
    entry, losing its valid VA and EXPR labels. Now only its AU is dropped (report and warning
    name the entry, task and file; every later run's report repeats it while the file is
    unchanged), and stage 2 treats the entry as one AU does not list, not as an error."""
    from pipeline.corpus.entries import load_corpus
    from pipeline.stage2.data import check_complete, load_entries, split_entries

    params = stage1_copy()
    folder = params.path(params.labels.out)
    run_labels(params)
    good = read(folder, "demo_00_left")
    au = corpus / ANN / "AU_Detection_Challenge/Train_Set/demo_00_left.txt"
    units = np.zeros((60 - 36, 12))
    AU.write_annotation(au, units)
    error = f"{au}: 24 label rows for 60 video frames (difference -36 exceeds the tolerance of 5)"
    record = [{"task": "au", "split": "train", "file": str(au), "error": error}]

    result = run_labels(params)
    assert list(result.done) == ["demo_00_left"] and result.skipped == []
    assert result.done["demo_00_left"]["dropped"] == record and "au" not in result.done["demo_00_left"]
    assert any(w["warning"] == f"demo_00_left: labels of task au dropped: {error}"
               for w in result.warnings)
    attrs, labels = read(folder, "demo_00_left")
    assert sorted(labels) == ["expr", "va"] and attrs["dropped"] == record
    assert [t for t in attrs["tasks"]] == [t for t in good[0]["tasks"] if t["task"] != "au"]
    for task in ("va", "expr"):                                      # exactly what a good file gave
        np.testing.assert_array_equal(labels[task], good[1][task])

    again = run_labels(params)                                        # cached: the report still says so
    assert again.done == {} and sorted(again.cached) == sorted(FRAMES)
    assert again.warnings == [{"entry": "demo_00_left",
                               "warning": f"demo_00_left: labels of task au dropped (cached: the file is unchanged): {error}"}]
    assert json.loads((folder / "report.json").read_text())["warnings"] == again.warnings

    tasks = ["va", "expr", "au"]
    entries = load_entries(params.path(params.embed.out), folder, tasks)
    check_complete(entries, load_corpus(params), tasks)             # no error: the entry is there
    left = next(e for e in entries if e.name == "demo_00_left")
    assert left.splits == {"va": "train", "expr": "validation"}     # in no AU split
    x = left.read(0, left.n)
    assert not x["valid/au"].any() and (x["labels/au"] == AU.invalid).all() and x["valid/va"].any()
    splits = split_entries(entries, ["va", "au"])
    assert "demo_00_left" in [e.name for e in splits.train]        # trains va; au has no frame of it
    assert all(e.name != "demo_00_left" for entries in splits.validation.values() for e in entries)

    AU.write_annotation(au, np.zeros((60, 12)))                       # fixed: rebuilt with its AU
    fixed = run_labels(params)
    assert list(fixed.done) == ["demo_00_left"] and fixed.warnings == []
    assert "au" in read(folder, "demo_00_left")[1] and dropped_of(folder, "demo_00_left") == []
