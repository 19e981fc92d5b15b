"""`jmt cache info` / `jmt cache verify` on real caches (faces, audio, labels, embeddings of the
tiny corpus), and on damaged copies of them."""

import json
import shutil

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline import cache
from pipeline.cache_tools import info, verify
from pipeline.cli import app
from pipeline.stage1.labels import run_labels
from pipeline.tasks import TASKS

from .embeddings import write_labels
from .stage1.helpers import params_at

runner = CliRunner()
FEATURES = {s: cache.stream_key(s, "features") for s in ("visual", "audio")}


@pytest.fixture
def embeddings(tiny_cache, tmp_path):
    params, _ = tiny_cache
    copy = tmp_path / "embeddings"
    shutil.copytree(params.path(params.embed.out), copy)
    return params, copy


@pytest.fixture(scope="module")
def labels(tiny_cache, tmp_path_factory):
    """`jmt labels` of the tiny corpus (va), from the session's faces cache: (params, folder)."""
    shared, _ = tiny_cache
    params = params_at(tmp_path_factory.mktemp("labels"), shared.path(shared.corpus.root),
                       faces={"out": str(shared.path(shared.faces.out))})
    assert len(run_labels(params).done) == 4
    return params, params.path(params.labels.out)


def test_info_summarises(tiny_cache):
    params, _ = tiny_cache
    data = info(params.path(params.embed.out))
    assert data["entries"] == 4 and data["frames"] == 60 + 60 + 96 + 60 and data["hashed"] == 4
    (backbones,) = data["provenance"]["stream backbones"]        # one value: every entry the same
    assert [(s["name"], s["backbone"], s["input"], s["dim"]) for s in backbones] == [
        ("visual", "fer_xception", "crops", 135), ("audio", "logmel_stats", "logmel", 195)]
    assert data["provenance"]["schema"] == ["jmt.embed/2"]
    assert data["rows"][0]["dims"] == {"visual": (135,), "audio": (195,)} and data["rows"][0]["split"] is None
    result = runner.invoke(app, ["cache", "info", str(params.path(params.faces.out))])
    assert result.exit_code == 0 and "demo_00_left" in result.output and "MTCNN" in result.output
    result = runner.invoke(app, ["cache", "info", str(params.path(params.embed.out))])
    assert result.exit_code == 0 and "visual[135]" in result.output and "fer_xception" in result.output


def test_info_of_a_labels_cache_shows_each_tasks_split(labels, tmp_path):
    _, folder = labels
    rows = {r["entry"]: r for r in info(folder)["rows"]}
    assert rows["demo_01"]["split"] == "au validation, expr validation, va validation"  # the demo: every task
    assert rows["demo_01"]["dims"] == {"va": (2,), "expr": (1,), "au": (12,)}
    assert rows["demo_00_right"]["split"] == "expr validation, va train"
    assert rows["demo_00_left"]["frames"] == 60
    write_labels(tmp_path, "both", {"va": "train", "au": "validation"})
    (row,) = info(tmp_path / "both.h5")["rows"]
    assert row["split"] == "va train, au validation" and row["dims"] == {"va": (2,), "au": (12,)}
    result = runner.invoke(app, ["cache", "info", str(folder)])
    assert result.exit_code == 0 and "va validation" in result.output


@pytest.mark.parametrize("stage", ["faces", "audio", "labels", "embed"])
def test_sound_caches_verify(tiny_cache, labels, stage):
    params, _ = tiny_cache
    folder = labels[1] if stage == "labels" else params.path(getattr(params, stage).out)
    assert verify(folder, params.root / "params.yaml") == []
    result = runner.invoke(app, ["cache", "verify", str(folder)])
    assert result.exit_code == 0 and "4 file(s) verified" in result.output


def test_nan_embedding_is_a_fault_naming_entry_and_frame(embeddings):
    _, folder = embeddings
    with h5py.File(folder / "demo_01.h5", "r+") as f:
        f[FEATURES["visual"]][7, 3] = np.nan
    faults = verify(folder)
    assert "demo_01.h5: NaN/inf in the visual stream at frame 7" in faults[0]
    assert len(faults) == 2 and "demo_01.h5: content differs from its recorded content_sha256" in faults[1]
    result = runner.invoke(app, ["cache", "verify", str(folder)])
    assert result.exit_code == 1 and "NaN/inf in the visual stream at frame 7" in result.output


def test_stream_and_schema_faults(embeddings):
    _, folder = embeddings
    with h5py.File(folder / "demo_02.h5", "r+") as f:
        del f[cache.stream_key("audio", "mask")]
    with h5py.File(folder / "demo_01.h5", "r+") as f:
        streams = cache.attrs_of(f)["streams"]
        streams[0]["dim"] = 134                                  # the features are 135 wide
        f.attrs["streams"] = json.dumps(streams)
    with h5py.File(folder / "demo_00_right.h5", "r+") as f:
        del f.attrs["streams"]
    with h5py.File(folder / "demo_00_left.h5", "r+") as f:
        f.attrs["schema"] = "jmt.embed/1"                        # the two-stream layout of old
    faults = "\n".join(verify(folder))
    assert "demo_02.h5: dataset 'streams/audio/mask' missing" in faults
    assert "demo_01.h5: streams/visual/features has shape (96, 135), expected (96, 134)" in faults
    assert "demo_00_right.h5: attribute 'streams' missing or empty" in faults
    assert "demo_00_left.h5: unknown schema 'jmt.embed/1' (this jmt writes jmt.embed/2; re-run `jmt embed`)" in faults


def test_a_stream_stored_with_another_dtype_is_a_fault(embeddings):
    _, folder = embeddings
    with h5py.File(folder / "demo_02.h5", "r+") as f:
        key = FEATURES["audio"]
        data = f[key][...]
        del f[key]
        f.create_dataset(key, data=data.astype(np.float32))
    assert "demo_02.h5: streams/audio/features has dtype float32, expected float16" in "\n".join(verify(folder))


BAD_VALUES = {"va": 2.0, "expr": 9.0, "au": 0.5}


@pytest.mark.parametrize("task", TASKS.names())
def test_a_label_out_of_range_is_caught(tmp_path, task):
    write_labels(tmp_path, "e", {task: "train", **({} if task == "va" else {"va": "validation"})})
    assert verify(tmp_path) == []
    with h5py.File(tmp_path / "e.h5", "r+") as f:
        f[cache.label_key(task)][12, 0] = BAD_VALUES[task]
    faults = verify(tmp_path)
    assert faults[0] == f"{tmp_path / 'e.h5'}: {task} label out of range at frame 12"
    assert len(faults) == 2 and "content differs" in faults[1]


def test_labels_file_faults(tmp_path):
    for name in ("missing", "shape", "unknown"):
        write_labels(tmp_path, name, {"va": "train", "au": "test"})
    with h5py.File(tmp_path / "missing.h5", "r+") as f:
        del f[cache.label_key("au")]
    with h5py.File(tmp_path / "shape.h5", "r+") as f:
        data = f[cache.label_key("au")][...]
        del f[cache.label_key("au")]
        f.create_dataset(cache.label_key("au"), data=data[:, :11])
    with h5py.File(tmp_path / "unknown.h5", "r+") as f:
        tasks = cache.attrs_of(f)["tasks"]
        tasks[1]["task"] = "vad"
        f.attrs["tasks"] = json.dumps(tasks)
    faults = "\n".join(verify(tmp_path))
    assert "missing.h5: dataset 'labels/au' missing" in faults
    assert "shape.h5: labels/au has shape (50, 11) float32, expected (50, 12) float32" in faults
    assert "unknown.h5: unknown task 'vad'" in faults


def test_an_entry_edited_by_hand_is_caught_by_its_recorded_hash(embeddings):
    _, folder = embeddings
    assert info(folder)["hashed"] == 4
    with h5py.File(folder / "demo_01.h5", "r+") as f:
        f[FEATURES["audio"]][3, 0] = f[FEATURES["audio"]][3, 0] + 1   # finite, in range: only the hash can tell
    faults = verify(folder)
    assert len(faults) == 1 and "demo_01.h5: content differs from its recorded content_sha256" in faults[0]
    result = runner.invoke(app, ["cache", "verify", str(folder)])
    assert result.exit_code == 1 and "content differs" in result.output


def test_a_labels_entry_edited_by_hand_is_caught(labels, tmp_path):
    _, shared = labels
    folder = tmp_path / "labels"
    shutil.copytree(shared, folder)
    with h5py.File(folder / "demo_01.h5", "r+") as f:
        y = f[cache.label_key("va")]
        y[4] = [0.25, -0.25]                                      # in range: only the hash can tell
    faults = verify(folder)
    assert len(faults) == 1 and "demo_01.h5: content differs" in faults[0]


def test_truncated_file_partial_leftover_and_missing_entry(embeddings):
    params, folder = embeddings
    data = (folder / "demo_02.h5").read_bytes()
    (folder / "demo_02.h5").write_bytes(data[: len(data) // 3])
    (folder / ".tmp-123-demo_01.h5").write_bytes(b"partial")
    (folder / "demo_00_right.h5").unlink()
    faults = "\n".join(verify(folder, params.root / "params.yaml"))
    assert "demo_02.h5: cannot open" in faults
    assert "1 partial file(s) from an interrupted run" in faults
    assert "entry 'demo_00_right' of the corpus is missing" in faults


def test_faces_crop_mask_mismatch(tiny_cache, tmp_path):
    params, _ = tiny_cache
    folder = tmp_path / "faces"
    shutil.copytree(params.path(params.faces.out), folder)
    with h5py.File(folder / "demo_02.h5", "r+") as f:
        found = f["found"][...]
        i = int(np.flatnonzero(found)[0])
        f["found"][i] = False
    assert verify(folder) == [f"{folder / 'demo_02.h5'}: crop presence disagrees with `found` at frame {i}",
                              f"{folder / 'demo_02.h5'}: content differs from its recorded content_sha256 (edited "
                              "after it was written?); re-run the stage for this entry"]


def test_no_such_path():
    result = runner.invoke(app, ["cache", "info", "/nonexistent/x"])
    assert result.exit_code == 2 and "no such cache file or folder" in result.output


def test_verify_media_checks_a_faces_files_orientation_against_its_video(tmp_path):
    """A phone clip's faces file records the turn it applied; one cached as stored (by a jmt that
    did not apply turns: squeezed faces), or with another turn, is a fault naming both."""
    from pipeline.stage1.faces import run_faces

    from .stage1.helpers import make_video, phone_copy
    from .stage1.helpers import write_labels as write_va

    corpus = tmp_path / "corpus"
    (corpus / "videos/batch1").mkdir(parents=True)
    n = make_video(tmp_path / "upright.mp4", seconds=1.0)
    phone_copy(tmp_path / "upright.mp4", corpus / "videos/batch1/turned.mp4", 90)
    write_va(corpus / "annotations/VA_Estimation_Challenge/Train_Set/turned.txt", n)
    params = params_at(tmp_path / "w", corpus)
    run_faces(params)
    folder = params.path(params.faces.out)
    assert verify(folder, params.root / "params.yaml", media=True) == []
    path = cache.entry_path(folder, "turned")
    with h5py.File(path, "r+") as f:
        assert (f.attrs["rotation"], f.attrs["orientation"]) == (270, "rotated 270 degrees clockwise (display matrix)")
        f.attrs["rotation"] = 90
        f.attrs[cache.CONTENT_HASH] = cache.content_hash(f)   # as a writer with a bug would leave it
    faults = verify(folder, params.root / "params.yaml", media=True)
    assert len(faults) == 1 and "turned.h5" in faults[0] and "is shown rotated 270 degrees clockwise" in faults[0]
    with h5py.File(path, "r+") as f:
        for key in ("rotation", "mirrored", "orientation"):   # a file from before turns were applied
            del f.attrs[key]
        f.attrs[cache.CONTENT_HASH] = cache.content_hash(f)
    faults = verify(folder, params.root / "params.yaml", media=True)
    assert len(faults) == 1 and "frames cached as stored" in faults[0] and "squeezed" in faults[0]
