"""Bad input: a clear error or a documented skip in report.json, and nothing cached is lost.
Faces, audio and embed read videos and caches only; the annotations' problems are `jmt labels`'."""

import json
import shutil
import subprocess

import h5py
import pytest

from pipeline import cache
from pipeline.errors import InputError
from pipeline.stage1.audio import run_audio
from pipeline.stage1.embed import run_embed
from pipeline.stage1.faces import run_faces
from pipeline.stage1.labels import run_labels

from .helpers import make_video, params_at, write_labels

ANN = "annotations/VA_Estimation_Challenge/Train_Set"


@pytest.fixture(scope="module")
def bad_corpus(tmp_path_factory):
    """A small Aff-Wild2-layout corpus: one good video, then every kind of bad input."""
    root = tmp_path_factory.mktemp("bad") / "corpus"
    videos = root / "videos/batch1"
    n = make_video(videos / "good.mp4")
    write_labels(root / ANN / "good.txt", n)
    return root, n


def add_bad_inputs(root, n):
    videos, ann = root / "videos/batch1", root / ANN
    (videos / "zero.mp4").write_bytes(b"")
    write_labels(ann / "zero.txt", n)
    make_video(videos / "full.mp4", seconds=2.0)
    data = (videos / "full.mp4").read_bytes()
    (videos / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (videos / "full.mp4").unlink()
    write_labels(ann / "truncated.txt", 20)
    write_labels(ann / "silent.txt", make_video(videos / "silent.mp4", with_audio=False))
    write_labels(ann / "faceless.txt", make_video(videos / "faceless.mp4", with_face=False))
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=300:duration=1",
                    "-c:a", "aac", str(videos / "audioonly.mp4")], check=True)
    write_labels(ann / "audioonly.txt", n)
    make_video(videos / "words.mp4")
    (ann / "words.txt").write_text("valence,arousal\n0.1,0.2\nhigh,low\n")
    make_video(videos / "headless.mp4")
    (ann / "headless.txt").write_text("0.1,0.2\n0.1,0.2\n")


def reasons(result):
    return {s["entry"]: s["error"] for s in result.skipped}


def test_every_bad_input_is_skipped_with_a_reason_and_good_work_is_kept(bad_corpus, tmp_path):
    root, n = bad_corpus
    corpus = tmp_path / "corpus"
    shutil.copytree(root, corpus)
    params = params_at(tmp_path / "w", corpus)
    first = run_faces(params)
    assert list(first.done) == ["good"]
    good_file = cache.entry_path(params.path(params.faces.out), "good")
    stamp = good_file.stat().st_mtime_ns

    add_bad_inputs(corpus, n)
    faces = run_faces(params)
    why = reasons(faces)
    assert faces.cached == ["good"] and good_file.stat().st_mtime_ns == stamp  # nothing lost
    assert "zero.mp4: ffprobe cannot read it" in why["zero"]
    assert "audioonly.mp4: no video stream" in why["audioonly"]
    assert set(why) == {"zero", "audioonly"}       # a bad annotation is no concern of faces
    # a truncated file keeps every frame that decoded, and the report, the stats and the cache say so
    assert set(faces.done) == {"truncated", "silent", "faceless", "words", "headless"}
    damaged = [w["warning"] for w in faces.warnings if w["entry"] == "truncated"]
    assert len(damaged) == 1 and "truncated.mp4: damaged (truncated or corrupt)" in damaged[0], faces.warnings
    assert faces.done["truncated"]["damaged"] == damaged[0]
    with h5py.File(cache.entry_path(params.path(params.faces.out), "truncated")) as f:
        assert f.attrs["damaged"] == damaged[0] and 0 < f.attrs["n_frames"] < 20
    assert not any("damaged" in w["warning"] for w in faces.warnings if w["entry"] != "truncated")
    assert any("faceless: no face found" in w["warning"] for w in faces.warnings)
    with h5py.File(cache.entry_path(params.path(params.faces.out), "faceless")) as f:
        assert not f["found"][...].any() and f.attrs["n_frames"] == n
    report = json.loads((params.path(params.faces.out) / "report.json").read_text())
    assert {s["entry"] for s in report["skipped"]} == set(why)

    labels = run_labels(params)
    why = reasons(labels)
    for name in ("zero", "audioonly"):                  # no faces file: nothing to align to
        assert "missing; run `jmt faces` first" in why[name]
    assert set(why) == {"zero", "audioonly"}
    # a bad annotation file drops its task (here the entry's only one): the entry is written unlabelled
    dropped = {name: labels.done[name]["dropped"][0]["error"] for name in ("words", "headless", "truncated")}
    assert dropped["words"].endswith("words.txt: line 3: could not convert string to float: 'high' (got 'high,low')")
    assert "headless.txt: line 1: expected header 'valence,arousal'" in dropped["headless"]
    assert "truncated.txt: 20 label rows for" in dropped["truncated"]   # the frames that decoded are fewer
    assert set(labels.done) == {"good", "silent", "faceless", "words", "headless", "truncated"}
    report = json.loads((params.path(params.labels.out) / "report.json").read_text())
    assert {s["entry"]: s["error"] for s in report["skipped"]} == why
    assert {n: d["dropped"][0]["error"] for n, d in report["done"].items() if "dropped" in d} == dropped

    audio = run_audio(params)
    assert "silent" in audio.done and any("no audio stream" in w["warning"] for w in audio.warnings)
    with h5py.File(cache.entry_path(params.path(params.audio.out), "silent")) as f:
        assert not f.attrs["has_audio"] and not f["audio_valid"][...].any()
    assert "audioonly" in reasons(audio) and "zero" in reasons(audio)
    report = json.loads((params.path(params.audio.out) / "report.json").read_text())
    assert report["stage"] == "audio" and report["cached"] == []
    assert {"good", "silent", "faceless"} <= set(report["done"])
    assert report["done"]["silent"]["valid_rate"] == 0.0 and report["done"]["good"]["valid_rate"] == 1.0
    assert {s["entry"]: s["error"] for s in report["skipped"]} == reasons(audio)
    assert set(reasons(audio)) == {"zero", "audioonly"}   # the audio track alone: a truncated video still has one
    assert report["warnings"] == [{"entry": "silent",
                                   "warning": "silent.mp4: no audio stream; its audio is masked for every frame"}]

    embed = run_embed(params)
    assert set(embed.done) == {"good", "truncated", "silent", "faceless", "words", "headless"}
    assert "missing; run `jmt faces` first" in reasons(embed)["zero"]
    with h5py.File(cache.entry_path(params.path(params.embed.out), "silent")) as f:
        assert not f[cache.stream_key("audio", "mask")][...].any() and f[cache.stream_key("visual", "mask")][...].all()
    report = json.loads((params.path(params.embed.out) / "report.json").read_text())
    assert report["stage"] == "embed" and set(report["done"]) == set(embed.done)
    skipped = {s["entry"]: s["error"] for s in report["skipped"]}
    assert skipped == reasons(embed) and "missing; run `jmt faces` first" in skipped["zero"]
    assert report["done"]["silent"]["frames"] == n and report["warnings"] == []


def test_on_error_fail_stops_with_the_reason(bad_corpus, tmp_path):
    root, n = bad_corpus
    corpus = tmp_path / "corpus"
    shutil.copytree(root, corpus)
    (corpus / ANN / "good.txt").write_text("valence,arousal\n1,x\n")
    params = params_at(tmp_path / "w", corpus, faces={"on_error": "fail"}, labels={"on_error": "fail"})
    assert list(run_faces(params).done) == ["good"]          # faces reads no annotation
    with pytest.raises(InputError, match="good.txt: line 2"):
        run_labels(params)


def test_label_count_far_off_is_an_error_naming_the_file(bad_corpus, tmp_path):
    root, n = bad_corpus
    corpus = tmp_path / "corpus"
    shutil.copytree(root, corpus)
    write_labels(corpus / ANN / "good.txt", n + 40)
    params = params_at(tmp_path / "w", corpus)
    assert list(run_faces(params).done) == ["good"]
    result = run_labels(params)
    assert f"good.txt: {n + 40} label rows for {n} video frames" in result.done["good"]["dropped"][0]["error"]


def test_missing_annotation_file_in_a_manifest(bad_corpus, tmp_path):
    root, _ = bad_corpus
    csv = tmp_path / "m.csv"
    csv.write_text(f"video,annotation,split\n{root}/videos/batch1/good.mp4,{tmp_path}/gone.txt,train\n")
    params = params_at(tmp_path / "w", root, corpus={"layout": "manifest", "manifest": str(csv)})
    assert list(run_faces(params).done) == ["good"]          # named after its video
    result = run_labels(params)
    assert "gone.txt: annotation file not found" in result.done["good"]["dropped"][0]["error"]
