import hashlib
import shutil
import subprocess

import numpy as np
import pytest

from pipeline.corpus.entries import affwild2, align_labels, fingerprint, manifest
from pipeline.errors import InputError
from pipeline.stage1.audio import run_audio

from ..stage1.helpers import params_at


def test_affwild2_adapter_on_the_demo_corpus(tiny_corpus):
    corpus = affwild2(tiny_corpus)
    names = {e.name: e for e in corpus.entries}
    assert set(names) == {"demo_00_left", "demo_00_right", "demo_01", "demo_02"}
    assert corpus.problems == []
    left, right = names["demo_00_left"], names["demo_00_right"]
    assert left.video == right.video and (left.side, right.side) == ("left", "right")
    assert left.source == "videos/batch1/demo_00.mp4"
    assert {e.split for e in corpus.entries} == {"train", "validation", "test"}
    assert names["demo_02"].video.parent.name == "batch2"
    assert len(corpus.videos()) == 3


def _layout(tmp_path):
    ann = tmp_path / "annotations/VA_Estimation_Challenge"
    (ann / "Train_Set").mkdir(parents=True)
    (tmp_path / "videos/batch1").mkdir(parents=True)
    return ann


def test_unlabelled_test_entries_and_missing_videos(tmp_path):
    ann = _layout(tmp_path)
    (tmp_path / "videos/batch1/a.mp4").write_bytes(b"x")
    (tmp_path / "videos/batch1/t.avi").write_bytes(b"x")
    (ann / "Train_Set/a.txt").write_text("valence,arousal\n0,0\n")
    (ann / "Train_Set/ghost.txt").write_text("valence,arousal\n0,0\n")
    (ann / "Test_Set_names.txt").write_text("t\n")
    corpus = affwild2(tmp_path)
    assert [(e.name, e.split, e.annotation) for e in corpus.entries][1] == ("t", "test", None)
    assert corpus.problems == [{"entry": "ghost", "file": str(ann / "Train_Set/ghost.txt"),
                                "error": "no video named 'ghost' under the videos folder"}]


def test_affwild2_missing_folders(tmp_path):
    with pytest.raises(InputError, match="videos: folder not found"):
        affwild2(tmp_path)
    _layout(tmp_path)
    with pytest.raises(InputError, match="no annotation files found"):
        affwild2(tmp_path)


def test_manifest_adapter(tmp_path):
    (tmp_path / "v1.mp4").write_bytes(b"x")
    (tmp_path / "csv").mkdir()
    csv = tmp_path / "csv/m.csv"
    csv.write_text("video,annotation,split,name,side\n../v1.mp4,../a.txt,Train,,\n"
                   "../v1.mp4,,test,v1_right,right\n../missing.mp4,../b.txt,validation,,\n")
    corpus = manifest(csv)
    assert [(e.name, e.split, e.side) for e in corpus.entries] == [("a", "train", None), ("v1_right", "test", "right")]
    assert corpus.entries[1].annotation is None
    assert corpus.problems[0]["entry"] == "b" and corpus.problems[0]["error"] == "video file not found"


@pytest.mark.parametrize(
    ("text", "message"),
    [("video,split\n", r"missing column\(s\) annotation"),
     ("video,annotation,split\nv.mp4,a.txt,dev\n", "line 2: split 'dev' is not one of"),
     ("video,annotation,split,name,side\nv.mp4,,test,x,up\n", "line 2: side 'up'"),
     ("video,annotation,split\nv.mp4,a.txt,train\nv.mp4,a.txt,test\n", "entry names must be unique; repeated: a"),
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
    same, d = align_labels(labels, 10, tolerance=3, source="x.txt")
    assert d == 0 and np.array_equal(same, labels)
    fewer, d = align_labels(labels, 8, tolerance=3, source="x.txt")      # extra rows dropped
    assert d == 2 and np.array_equal(fewer, labels[:8])
    more, d = align_labels(labels, 12, tolerance=3, source="x.txt")      # missing rows -> -5
    assert d == -2 and np.array_equal(more[:10], labels) and (more[10:] == -5).all()
    with pytest.raises(InputError, match=r"x.txt: 10 label rows for 20 video frames \(difference -10 exceeds the tolerance of 3\)"):
        align_labels(labels, 20, tolerance=3, source="x.txt")


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fingerprint_changes_with_content(tiny_corpus, tmp_path):
    """Stable while the files are unchanged; a re-muxed video (same frames and sound, other
    bytes) or an edited annotation changes it, and the stage rebuilds exactly those entries."""
    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, corpus)
    entries = {e.name: e for e in affwild2(corpus).entries}
    before = {name: fingerprint(e) for name, e in entries.items()}
    left = entries["demo_00_left"]
    assert before["demo_00_left"]["video_sha256"] == _sha256(left.video)
    assert before["demo_00_left"]["annotation_sha256"] == _sha256(left.annotation)
    assert {n: fingerprint(e) for n, e in entries.items()} == before        # stable
    params = params_at(tmp_path / "work", corpus)
    assert len(run_audio(params).done) == 4

    remuxed = left.video.with_name("remuxed.mp4")
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(left.video), "-c", "copy", "-metadata",
                    "comment=edited", str(remuxed)], check=True)
    remuxed.replace(left.video)
    after = fingerprint(left)
    assert after["video_sha256"] == _sha256(left.video) != before["demo_00_left"]["video_sha256"]
    assert after["annotation_sha256"] == before["demo_00_left"]["annotation_sha256"]
    again = run_audio(params)                    # one video, two entries: both rebuilt
    assert sorted(again.done) == ["demo_00_left", "demo_00_right"]
    assert sorted(again.cached) == ["demo_01", "demo_02"]

    ann = entries["demo_02"].annotation
    lines = ann.read_text().splitlines()
    lines[5] = "0.5,-0.5"
    ann.write_text("\n".join(lines) + "\n")
    assert fingerprint(entries["demo_02"])["annotation_sha256"] == _sha256(ann) != \
        before["demo_02"]["annotation_sha256"]
    third = run_audio(params)
    assert list(third.done) == ["demo_02"] and len(third.cached) == 3


def test_a_test_list_name_that_is_not_a_file_name_is_a_recorded_problem(tmp_path):
    ann = _layout(tmp_path)
    (tmp_path / "videos/batch1/a.mp4").write_bytes(b"x")
    (ann / "Train_Set/a.txt").write_text("valence,arousal\n0,0\n")
    (ann / "Test_Set_names.txt").write_text("a\n../../outside\n")
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
