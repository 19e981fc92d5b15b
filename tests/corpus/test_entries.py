"""Corpus adapters (pipeline/corpus/entries.py): the Aff-Wild2 layout with its three task folders
and per-task splits, the CSV manifest with per-task columns, the label alignment rule with each
task's invalid marker, and the entry's inputs fingerprint (with and without labels)."""

import hashlib
import shutil
import subprocess

import numpy as np
import pytest

from pipeline.corpus.entries import Label, affwild2, align_labels, inputs_fingerprint, manifest, task_folder
from pipeline.errors import InputError
from pipeline.stage1.audio import run_audio
from pipeline.tasks import TASKS

from ..stage1.helpers import params_at

VA_DIR = "annotations/VA_Estimation_Challenge"


def test_affwild2_adapter_on_the_demo_corpus(tiny_corpus):
    corpus = affwild2(tiny_corpus)
    names = {e.name: e for e in corpus.entries}
    assert set(names) == {"demo_00_left", "demo_00_right", "demo_01", "demo_02"}
    assert corpus.problems == []
    left, right = names["demo_00_left"], names["demo_00_right"]
    assert left.video == right.video and (left.side, right.side) == ("left", "right")
    assert left.source == "videos/batch1/demo_00.mp4"
    assert {n: e.split("va") for n, e in names.items()} == {
        "demo_00_left": "train", "demo_00_right": "train", "demo_01": "validation", "demo_02": "test"}
    # the demo carries all three tasks; demo_00_right is in EXPR's validation split and has no AU labels
    assert {n: {t: e.split(t) for t in e.labels} for n, e in names.items()} == {
        "demo_00_left": {"va": "train", "expr": "train", "au": "train"},
        "demo_00_right": {"va": "train", "expr": "validation"},
        "demo_01": {"va": "validation", "expr": "validation", "au": "validation"},
        "demo_02": {"va": "test", "expr": "test", "au": "test"}}
    assert left.labels["va"] == Label("train", tiny_corpus / VA_DIR / "Train_Set/demo_00_left.txt")
    assert names["demo_02"].video.parent.name == "batch2"
    assert len(corpus.videos()) == 3
    assert corpus.names("va", "train") == ["demo_00_left", "demo_00_right"]
    assert corpus.names("au", "train") == ["demo_00_left"] and corpus.names("expr", "validation") == [
        "demo_00_right", "demo_01"]
    assert left.to_dict()["labels"] == {t: {"split": "train", "annotation": str(left.labels[t].path)}
                                        for t in ("va", "expr", "au")}


def _touch(path, text="x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


HEADER = {name: ",".join(TASKS.get(name).columns) for name in TASKS.names()}


def three_task_layout(root):
    """Aff-Wild2's three tracks, each with its own videos and splits (EXPR under its older folder name):

        va:   a (Train), b (Validation), t (Test_Set_names)
        expr: a (Validation), c (Train), t (Test_Set_names)
        au:   c_left (Train), u (Validation; au only), t2 (Test_Set_names)
    """
    for video in ("a.mp4", "b.mp4", "c.avi", "t.mp4", "u.mkv", "sub/t2.mp4"):
        _touch(root / "videos" / video)
    ann = root / "annotations"
    va, expr, au = (ann / "VA_Estimation_Challenge", ann / "EXPR_Classification_Challenge",
                    ann / "AU_Detection_Challenge")
    _touch(va / "Train_Set/a.txt", f"{HEADER['va']}\n0,0\n")
    _touch(va / "Validation_Set/b.txt", f"{HEADER['va']}\n0,0\n")
    _touch(va / "Test_Set_names.txt", "t\n")
    _touch(expr / "Validation_Set/a.txt", f"{HEADER['expr']}\n1\n")
    _touch(expr / "Train_Set/c.txt", f"{HEADER['expr']}\n2\n")
    _touch(expr / "Test_Set_names.txt", "t\n")
    _touch(au / "Train_Set/c_left.txt", f"{HEADER['au']}\n" + ",".join("0" * 12) + "\n")
    _touch(au / "Validation_Set/u.txt", f"{HEADER['au']}\n" + ",".join("1" * 12) + "\n")
    _touch(au / "Test_Set_names.txt", "t2\n\n")
    return va, expr, au


def test_affwild2_three_tasks_with_their_own_splits(tmp_path):
    va, expr, au = three_task_layout(tmp_path)
    corpus = affwild2(tmp_path)
    assert corpus.problems == []
    e = {x.name: x for x in corpus.entries}
    assert sorted(e) == ["a", "b", "c", "c_left", "t", "t2", "u"]
    splits = {n: {t: x.split(t) for t in TASKS.names()} for n, x in e.items()}
    assert splits == {
        "a": {"va": "train", "expr": "validation", "au": None},          # one task's train, another's validation
        "b": {"va": "validation", "expr": None, "au": None},
        "c": {"va": None, "expr": "train", "au": None},
        "c_left": {"va": None, "expr": None, "au": "train"},             # a side of video c, au only
        "t": {"va": "test", "expr": "test", "au": None},
        "t2": {"va": None, "expr": None, "au": "test"},
        "u": {"va": None, "expr": None, "au": "validation"},             # labelled for au only
    }
    assert e["a"].labels == {"va": Label("train", va / "Train_Set/a.txt"),
                             "expr": Label("validation", expr / "Validation_Set/a.txt")}
    assert e["t"].labels == {"va": Label("test", None), "expr": Label("test", None)}   # unlabelled test entries
    assert e["c_left"].video == e["c"].video and e["c_left"].side == "left" and e["c"].side is None
    assert e["t2"].source == "videos/sub/t2.mp4"
    assert corpus.names("expr", "train") == ["c"] and corpus.names("va", "test") == ["t"]
    assert len(corpus.videos()) == 6                                     # c and c_left share one video


def test_the_current_expr_folder_name_wins_over_the_older_one(tmp_path):
    ann = tmp_path / "annotations"
    _touch(ann / "EXPR_Classification_Challenge/Train_Set/old.txt", f"{HEADER['expr']}\n1\n")
    assert task_folder(ann, "expr") == ann / "EXPR_Classification_Challenge"
    _touch(ann / "EXPR_Recognition_Challenge/Train_Set/new.txt", f"{HEADER['expr']}\n1\n")
    assert task_folder(ann, "expr") == ann / "EXPR_Recognition_Challenge"
    assert task_folder(ann, "va") is None
    for name in ("old", "new"):
        _touch(tmp_path / f"videos/{name}.mp4")
    assert [(x.name, x.split("expr")) for x in affwild2(tmp_path).entries] == [("new", "train")]


def test_test_set_files_and_lists_per_task(tmp_path):
    """A Test_Set file labels a test entry; the task's list adds the unlabelled ones (a name
    with a file is not listed again). Each task's list is its own."""
    va, expr, _ = three_task_layout(tmp_path)
    _touch(va / "Test_Set/t.txt", f"{HEADER['va']}\n0.5,0.5\n")
    _touch(va / "Test_Set_names.txt", "t u\n")                        # two names on a line
    corpus = affwild2(tmp_path)
    e = {x.name: x for x in corpus.entries}
    assert e["t"].labels["va"] == Label("test", va / "Test_Set/t.txt")
    assert e["t"].labels["expr"] == Label("test", None)
    assert e["u"].labels == {"va": Label("test", None), "au": Label("validation", tmp_path /
                                                                    "annotations/AU_Detection_Challenge/Validation_Set/u.txt")}
    assert corpus.problems == []


def test_a_name_listed_twice_for_one_task_is_a_problem_naming_both_splits(tmp_path):
    va, expr, _ = three_task_layout(tmp_path)
    _touch(va / "Validation_Set/a.txt", f"{HEADER['va']}\n0,0\n")   # a: va Train_Set and Validation_Set
    corpus = affwild2(tmp_path)
    assert corpus.problems == [{"entry": "a", "file": str(va / "Validation_Set/a.txt"),
                                "error": "listed twice for task va (train and validation): the entry is left out"}]
    names = {x.name for x in corpus.entries}
    # which split a is in cannot be told, so it is in none: never a validation video in training
    assert "a" not in names and names                                   # the others are kept


def test_unlabelled_test_entries_and_missing_videos(tmp_path):
    ann = tmp_path / VA_DIR
    _touch(tmp_path / "videos/batch1/a.mp4")
    _touch(tmp_path / "videos/batch1/t.avi")
    _touch(ann / "Train_Set/a.txt", "valence,arousal\n0,0\n")
    _touch(ann / "Train_Set/ghost.txt", "valence,arousal\n0,0\n")
    _touch(ann / "Test_Set_names.txt", "t\n")
    corpus = affwild2(tmp_path)
    assert [(e.name, e.split("va"), e.labels["va"].path) for e in corpus.entries][1] == ("t", "test", None)
    assert corpus.problems == [{"entry": "ghost", "file": str(ann / "Train_Set/ghost.txt"),
                                "error": "no video named 'ghost' under the videos folder"}]


def test_affwild2_missing_folders(tmp_path):
    with pytest.raises(InputError, match="videos: folder not found"):
        affwild2(tmp_path)
    (tmp_path / "videos").mkdir()
    (tmp_path / "annotations").mkdir()
    with pytest.raises(InputError, match=r"annotations: no task folder found \(expected one of AU_Detection_Challenge, "
                       r"EXPR_Recognition_Challenge, EXPR_Classification_Challenge, VA_Estimation_Challenge\)"):
        affwild2(tmp_path)
    (tmp_path / VA_DIR / "Train_Set").mkdir(parents=True)
    with pytest.raises(InputError, match="no annotation files found"):
        affwild2(tmp_path)


def test_manifest_adapter(tmp_path):
    (tmp_path / "v1.mp4").write_bytes(b"x")
    (tmp_path / "csv").mkdir()
    csv = tmp_path / "csv/m.csv"
    csv.write_text("video,annotation,split,name,side\n../v1.mp4,../a.txt,Train,,\n"
                   "../v1.mp4,,test,v1_right,right\n../missing.mp4,../b.txt,validation,,\n")
    corpus = manifest(csv)
    assert [(e.name, e.split("va"), e.side) for e in corpus.entries] == [("v1", "train", None),
                                                                          ("v1_right", "test", "right")]
    assert corpus.entries[0].labels == {"va": Label("train", tmp_path / "csv/../a.txt")}
    assert corpus.entries[1].labels == {"va": Label("test", None)}
    assert corpus.problems[0]["entry"] == "missing" and corpus.problems[0]["error"] == "video file not found"


def test_manifest_with_expr_and_au_columns(tmp_path):
    for v in ("v1.mp4", "v2.mp4", "v3.mp4"):
        (tmp_path / v).write_bytes(b"x")
    csv = tmp_path / "m.csv"
    csv.write_text("video,name,annotation,split,expr_annotation,expr_split,au_annotation,au_split\n"
                   "v1.mp4,one,va/1.txt,train,expr/1.txt,validation,,\n"   # va train, expr validation
                   "v2.mp4,two,,,,,au/2.txt,train\n"                        # au only
                   "v3.mp4,,,,expr/3.txt,TEST,,test\n")                     # expr labelled test, au unlabelled test
    corpus = manifest(csv)
    e = {x.name: x for x in corpus.entries}
    assert e["one"].labels == {"va": Label("train", tmp_path / "va/1.txt"),
                               "expr": Label("validation", tmp_path / "expr/1.txt")}
    assert e["two"].labels == {"au": Label("train", tmp_path / "au/2.txt")}
    assert e["v3"].labels == {"expr": Label("test", tmp_path / "expr/3.txt"), "au": Label("test", None)}  # named after its video
    only = tmp_path / "expr_only.csv"
    only.write_text("video,expr_annotation,expr_split\nv1.mp4,e.txt,train\n")
    assert [(x.name, x.split("expr"), x.split("va")) for x in manifest(only).entries] == [("v1", "train", None)]


def test_a_manifest_entry_is_named_after_its_video(tmp_path):
    """Without a `name`, an entry is its video's stem (not its annotation file's, whatever that
    is called), with `_left`/`_right` for a side: the `side` column's, else the one its
    annotation files carry (Aff-Wild2's two-person rule, `<video>_left.txt`)."""
    for v in ("clip.mp4", "duo.mp4", "pair.mp4", "solo.mp4"):
        (tmp_path / v).write_bytes(b"x")
    csv = tmp_path / "m.csv"
    csv.write_text("video,annotation,split,side,expr_annotation,expr_split\n"
                   "clip.mp4,ann/person_3.txt,train,,ann/expr_3.txt,validation\n"   # annotation names of its own
                   "duo.mp4,ann/duo_left.txt,train,,,\n"                            # sides from the file names
                   "duo.mp4,,,,ann/duo_right.txt,validation\n"
                   "pair.mp4,ann/a.txt,train,left,,\n"                              # sides from the column
                   "pair.mp4,ann/b.txt,train,right,,\n"
                   "solo.mp4,,test,,,\n")
    e = {x.name: x for x in manifest(csv).entries}
    assert {n: x.side for n, x in e.items()} == {"clip": None, "duo_left": "left", "duo_right": "right",
                                                   "pair_left": "left", "pair_right": "right", "solo": None}
    assert e["clip"].labels == {"va": Label("train", tmp_path / "ann/person_3.txt"),
                                "expr": Label("validation", tmp_path / "ann/expr_3.txt")}
    assert e["duo_left"].video == e["duo_right"].video == tmp_path / "duo.mp4"
    assert e["duo_right"].labels == {"expr": Label("validation", tmp_path / "ann/duo_right.txt")}
    assert e["solo"].labels == {"va": Label("test", None)}
    named = tmp_path / "named.csv"                                        # a name column still wins
    named.write_text("video,annotation,split,name\nclip.mp4,ann/x.txt,train,mine\nduo.mp4,ann/duo_left.txt,train,\n")
    assert [(x.name, x.side) for x in manifest(named).entries] == [("mine", None), ("duo_left", "left")]


@pytest.mark.parametrize(
    ("text", "message"),
    [("video,split\n", "column 'split' needs column 'annotation' beside it"),
     ("video,name\n", r"missing column\(s\) a task's annotation,split"),
     ("annotation,split\n", r"missing column\(s\) video"),
     ("video,annotation,split,expr_annotation\n", "column 'expr_annotation' needs column 'expr_split'"),
     ("video,annotation,split,va_annotation,va_split\n", "va's columns given twice"),
     ("video,annotation,split\nv.mp4,a.txt,dev\n", "line 2: split 'dev' is not one of"),
     ("video,annotation,split,au_annotation,au_split\nv.mp4,a.txt,train,b.txt,dev\n",
      "line 2: au_split 'dev' is not one of train, validation, test"),
     ("video,annotation,split\nv.mp4,a.txt,\n", "line 2: split '' is not one of"),   # a file needs a split
     ("video,annotation,split,name,side\nv.mp4,,test,x,up\n", "line 2: side 'up'"),
     ("video,annotation,split\nv.mp4,a.txt,train\nv.mp4,b.txt,test\n",
      r"entry names must be unique; repeated: v \(give those rows a name or a side column\)"),
     ("video,annotation,split,expr_annotation,expr_split\nv.mp4,v_left.txt,train,v_right.txt,train\n",
      "line 2: annotation files name both sides of v.mp4; give the row a side"),
     ("video,annotation,split,name\nv.mp4,,test,ok\nv.mp4,,test,../../evil\n",
      r"line 3: entry name '../../evil' cannot be a cache file name: it starts with '.'"),
     ("video,annotation,split,name\nv.mp4,,test,sub/dir\n", r"line 2: entry name 'sub/dir' .* holds '/'"),
     ("video,annotation,split,name\nv.mp4,,test,a\\b\n", r"line 2: .* holds '\\\\'"),
     ("video,annotation,split,name\nv.mp4,,test,.tmp-1-x\n", "line 2: .* starts with '.'")],
)
def test_manifest_errors_name_file_and_line(tmp_path, text, message):
    (tmp_path / "v.mp4").write_bytes(b"x")
    csv = tmp_path / "m.csv"
    csv.write_text(text)
    with pytest.raises(InputError, match=message) as info:
        manifest(csv)
    assert str(info.value).startswith(str(csv))


def test_align_labels_rule():
    labels = np.arange(20, dtype=np.float32).reshape(10, 2) / 100
    same, d = align_labels(labels, 10, invalid=-5, tolerance=3, source="x.txt")
    assert d == 0 and np.array_equal(same, labels)
    fewer, d = align_labels(labels, 8, invalid=-5, tolerance=3, source="x.txt")      # extra rows dropped
    assert d == 2 and np.array_equal(fewer, labels[:8])
    more, d = align_labels(labels, 12, invalid=-5, tolerance=3, source="x.txt")      # missing rows invalid
    assert d == -2 and np.array_equal(more[:10], labels) and (more[10:] == -5).all()
    with pytest.raises(InputError, match=r"x.txt: 10 label rows for 20 video frames \(difference -10 exceeds the tolerance of 3\)"):
        align_labels(labels, 20, invalid=-5, tolerance=3, source="x.txt")
    with pytest.raises(InputError, match=r"difference \+4 exceeds the tolerance of 3"):
        align_labels(labels, 6, invalid=-5, tolerance=3, source="x.txt")
    exact, d = align_labels(labels, 7, invalid=-5, tolerance=3, source="x.txt")     # at the tolerance: fine
    assert d == 3 and exact.shape == (7, 2)


@pytest.mark.parametrize("name", TASKS.names())
def test_align_labels_fills_with_each_tasks_invalid_marker(name):
    task = TASKS.get(name)()
    labels = np.zeros((10, task.values), np.float32)
    aligned, d = align_labels(labels, 13, invalid=task.invalid, tolerance=5, source=f"{name}.txt")
    assert d == -3 and aligned.shape == (13, task.values) and aligned.dtype == np.float32
    assert (aligned[10:] == task.invalid).all() and (aligned[:10] == 0).all()
    np.testing.assert_array_equal(task.valid(aligned), np.arange(13) < 10)


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_inputs_fingerprint_with_and_without_labels(tmp_path):
    va, expr, _ = three_task_layout(tmp_path)
    a = {x.name: x for x in affwild2(tmp_path).entries}["a"]
    plain = inputs_fingerprint(a)
    assert plain == {"name": "a", "side": None, "video_sha256": _sha256(tmp_path / "videos/a.mp4")}
    full = inputs_fingerprint(a, labels=True)
    assert full == {**plain, "labels": {"expr": {"split": "validation", "sha256": _sha256(expr / "Validation_Set/a.txt")},
                                        "va": {"split": "train", "sha256": _sha256(va / "Train_Set/a.txt")}}}
    t = {x.name: x for x in affwild2(tmp_path).entries}["t"]
    assert inputs_fingerprint(t, labels=True)["labels"] == {"expr": {"split": "test", "sha256": None},
                                                            "va": {"split": "test", "sha256": None}}
    # editing an annotation or moving the entry to another split changes only the labelled fingerprint
    (va / "Train_Set/a.txt").write_text(f"{HEADER['va']}\n0.5,0\n")
    edited = {x.name: x for x in affwild2(tmp_path).entries}["a"]
    assert inputs_fingerprint(edited) == plain and inputs_fingerprint(edited, labels=True) != full
    (va / "Train_Set/a.txt").rename(va / "Validation_Set/a.txt")
    moved = {x.name: x for x in affwild2(tmp_path).entries}["a"]
    assert inputs_fingerprint(moved) == plain
    assert inputs_fingerprint(moved, labels=True)["labels"]["va"]["split"] == "validation"


def test_inputs_fingerprint_follows_the_video_and_audio_ignores_the_labels(tiny_corpus, tmp_path):
    """Stable while the files are unchanged; a re-muxed video (same frames and sound, other
    bytes) changes it and the audio stage rebuilds exactly that video's entries; an edited
    annotation changes nothing the audio stage reads (only `jmt labels` reads it)."""
    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, corpus)
    entries = {e.name: e for e in affwild2(corpus).entries}
    before = {name: inputs_fingerprint(e) for name, e in entries.items()}
    left = entries["demo_00_left"]
    assert before["demo_00_left"]["video_sha256"] == _sha256(left.video)
    assert {n: inputs_fingerprint(e) for n, e in entries.items()} == before   # stable
    params = params_at(tmp_path / "work", corpus)
    assert len(run_audio(params).done) == 4

    remuxed = left.video.with_name("remuxed.mp4")
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(left.video), "-c", "copy", "-metadata",
                    "comment=edited", str(remuxed)], check=True)
    remuxed.replace(left.video)
    after = inputs_fingerprint(left)
    assert after["video_sha256"] == _sha256(left.video) != before["demo_00_left"]["video_sha256"]
    again = run_audio(params)                    # one video, two entries: both rebuilt
    assert sorted(again.done) == ["demo_00_left", "demo_00_right"]
    assert sorted(again.cached) == ["demo_01", "demo_02"]

    ann = entries["demo_02"].labels["va"].path
    labelled = inputs_fingerprint(entries["demo_02"], labels=True)
    lines = ann.read_text().splitlines()
    lines[5] = "0.5,-0.5"
    ann.write_text("\n".join(lines) + "\n")
    assert inputs_fingerprint(entries["demo_02"]) == before["demo_02"]
    assert inputs_fingerprint(entries["demo_02"], labels=True)["labels"]["va"]["sha256"] == _sha256(ann) != \
        labelled["labels"]["va"]["sha256"]
    third = run_audio(params)
    assert third.done == {} and len(third.cached) == 4


def test_a_test_list_name_that_is_not_a_file_name_is_a_recorded_problem(tmp_path):
    ann = tmp_path / VA_DIR
    _touch(tmp_path / "videos/batch1/a.mp4")
    _touch(ann / "Train_Set/a.txt", "valence,arousal\n0,0\n")
    _touch(ann / "Test_Set_names.txt", "a\n../../outside\n")
    corpus = affwild2(tmp_path)
    assert [e.name for e in corpus.entries] == ["a"]
    assert corpus.problems == [{"entry": "../../outside", "file": f"{ann / 'Test_Set_names.txt'}: line 2",
                                "error": "entry name '../../outside' cannot be a cache file name: it starts with '.'"}]


def test_a_bad_manifest_name_stops_jmt_faces_before_it_writes_anything(tmp_path):
    """The reported crash: a manifest name with `..` made `jmt faces` write (and fail) outside its
    folder. Now it is a one-line error naming the CSV line, and nothing is written anywhere."""
    from typer.testing import CliRunner

    from pipeline.cli import app

    from ..stage1.helpers import make_video, write_params

    make_video(tmp_path / "corpus/v.mp4", seconds=0.5)
    csv = tmp_path / "corpus/m.csv"
    csv.write_text("video,annotation,split,name\nv.mp4,,test,../../escaped\n")
    params = write_params(tmp_path / "work", tmp_path / "corpus", corpus={"layout": "manifest", "manifest": str(csv)})
    before = sorted(p for p in tmp_path.rglob("*"))
    result = CliRunner().invoke(app, ["faces", "--params", str(params)])
    assert result.exit_code == 2
    assert f"{csv}: line 2: entry name '../../escaped' cannot be a cache file name" in result.output
    assert sorted(p for p in tmp_path.rglob("*")) == before  # no cache folder, no file outside it


def test_cache_paths_refuse_names_that_leave_the_folder(tmp_path):
    from pipeline import cache

    for name in ("../x", "a/b", "..", ".hidden", "", "tab\there"):
        with pytest.raises(InputError, match="cannot be a cache file name"):
            cache.entry_path(tmp_path, name)
        with pytest.raises(InputError, match="cannot be a cache file name"):
            with cache.write_entry(tmp_path / "out", name, stage="embed", config={}, attrs={}):
                pass
    assert not (tmp_path / "out").exists()
    assert cache.entry_path(tmp_path, "video10_1-30-1280x720_left") == tmp_path / "video10_1-30-1280x720_left.h5"
