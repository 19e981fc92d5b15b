"""`jmt cache info` / `jmt cache verify` on a real cache, and on damaged copies of it."""

import shutil

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.cache_tools import info, verify
from pipeline.cli import app

runner = CliRunner()


@pytest.fixture
def embeddings(tiny_cache, tmp_path):
    params, _ = tiny_cache
    copy = tmp_path / "embeddings"
    shutil.copytree(params.path(params.embed.out), copy)
    return params, copy


def test_info_summarises(tiny_cache):
    params, _ = tiny_cache
    data = info(params.path(params.embed.out))
    assert data["entries"] == 4 and data["frames"] == 60 + 60 + 96 + 60
    assert data["provenance"]["visual_backbone"] == ["fer_xception"]
    assert data["rows"][0]["dims"] == {"visual": (135,), "audio": (195,)}
    result = runner.invoke(app, ["cache", "info", str(params.path(params.faces.out))])
    assert result.exit_code == 0 and "demo_00_left" in result.output and "MTCNN" in result.output


@pytest.mark.parametrize("stage", ["faces", "audio", "embed"])
def test_sound_caches_verify(tiny_cache, stage):
    params, _ = tiny_cache
    folder = params.path(getattr(params, stage).out)
    assert verify(folder, params.root / "params.yaml") == []
    result = runner.invoke(app, ["cache", "verify", str(folder)])
    assert result.exit_code == 0 and "4 file(s) verified" in result.output


def test_nan_embedding_is_a_fault_naming_entry_and_frame(embeddings):
    _, folder = embeddings
    with h5py.File(folder / "demo_01.h5", "r+") as f:
        f["visual"][7, 3] = np.nan
    faults = verify(folder)
    assert "demo_01.h5: NaN/inf in visual at frame 7" in faults[0]
    assert len(faults) == 2 and "demo_01.h5: content differs from its recorded content_sha256" in faults[1]
    result = runner.invoke(app, ["cache", "verify", str(folder)])
    assert result.exit_code == 1 and "NaN/inf in visual at frame 7" in result.output


def test_shape_schema_and_mask_faults(embeddings):
    _, folder = embeddings
    with h5py.File(folder / "demo_02.h5", "r+") as f:
        del f["audio_mask"]
        f.attrs["schema"] = "jmt.embed/1"
    with h5py.File(folder / "demo_01.h5", "r+") as f:
        f["label_mask"][0] = not f["label_mask"][0]
    with h5py.File(folder / "demo_00_left.h5", "r+") as f:
        f.attrs["schema"] = "something/9"
    faults = "\n".join(verify(folder))
    assert "demo_02.h5: dataset 'audio_mask' missing" in faults
    assert "demo_01.h5: label_mask disagrees with labels" in faults
    assert "demo_00_left.h5: unknown schema 'something/9'" in faults


def test_an_entry_edited_by_hand_is_caught_by_its_recorded_hash(embeddings):
    _, folder = embeddings
    assert info(folder)["hashed"] == 4
    with h5py.File(folder / "demo_01.h5", "r+") as f:
        f["audio"][3, 0] = f["audio"][3, 0] + 1          # finite, in range: only the hash can tell
    faults = verify(folder)
    assert len(faults) == 1 and "demo_01.h5: content differs from its recorded content_sha256" in faults[0]
    result = runner.invoke(app, ["cache", "verify", str(folder)])
    assert result.exit_code == 1 and "content differs" in result.output


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
