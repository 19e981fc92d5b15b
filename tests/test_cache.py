"""The recorded content hash: written with every entry, the fingerprint built from it without
reading data, a hand edit caught by `jmt cache verify`, entries from before it still working."""

import shutil

import h5py
import numpy as np
import pytest

from pipeline import cache
from pipeline.cache_tools import verify
from pipeline.errors import InputError

from .embeddings import write_embeddings, write_labels


def _write(folder, name, seed=0, features=None):
    return write_embeddings(folder, name, seed=seed, features=features)


@pytest.fixture
def folder(tmp_path):
    for i in range(3):
        _write(tmp_path, f"e{i}", seed=i)
    return tmp_path


def test_written_entries_record_their_content_hash(folder):
    with h5py.File(folder / "e0.h5") as f:
        recorded = cache.recorded_hash(f)
        assert recorded == cache.content_hash(f) and len(recorded) == 64
    assert verify(folder) == []


def test_the_hash_covers_values_not_storage(tmp_path):
    contiguous = _write(tmp_path / "a", "e", features=cache.FEATURES)
    chunked = _write(tmp_path / "b", "e", features={"chunks": True, "compression": "gzip"})
    with h5py.File(contiguous) as a, h5py.File(chunked) as b:
        key = cache.stream_key("visual", "features")
        assert a[key].chunks is None and b[key].chunks is not None
        assert cache.recorded_hash(a) == cache.recorded_hash(b)
    other = _write(tmp_path / "c", "e", seed=1)
    with h5py.File(other) as c, h5py.File(contiguous) as a:
        assert cache.recorded_hash(c) != cache.recorded_hash(a)


def test_fingerprint_of_an_untouched_cache_reads_no_data(folder, monkeypatch):
    before = cache.folder_fingerprint(folder)

    def read_data(f):
        raise AssertionError(f"{f.filename}: dataset bytes hashed")

    monkeypatch.setattr(cache, "content_hash", read_data)
    assert cache.folder_fingerprint(folder) == before


def test_a_rewritten_entry_changes_the_fingerprint(folder):
    before = cache.folder_fingerprint(folder)
    _write(folder, "e1", seed=7)               # the stage wrote it again, with other numbers
    rewritten = cache.folder_fingerprint(folder)
    assert rewritten != before
    (folder / "e2.h5").unlink()                # an entry gone
    assert cache.folder_fingerprint(folder) not in (before, rewritten)


def test_a_hand_edit_is_caught_by_verify(folder):
    before = cache.folder_fingerprint(folder)
    with h5py.File(folder / "e1.h5", "r+") as f:
        key = cache.stream_key("audio", "features")
        f[key][10, 2] = f[key][10, 2] + 1           # a plausible value: only the hash can tell
    faults = verify(folder)
    assert len(faults) == 1 and "e1.h5: content differs from its recorded content_sha256" in faults[0]
    # the fingerprint trusts the recorded hashes: that is what makes it cheap (docs/cache.md)
    assert cache.folder_fingerprint(folder) == before
    with h5py.File(folder / "e2.h5", "r+") as f:
        f.attrs["split"] = "validation"            # attributes are content too
    assert any("e2.h5: content differs" in fault for fault in verify(folder))


def test_entries_written_before_hashes_were_recorded(folder, monkeypatch):
    recorded = cache.folder_fingerprint(folder)
    with h5py.File(folder / "e0.h5", "r+") as f:
        del f.attrs[cache.CONTENT_HASH]
    calls = []
    real = cache.content_hash
    monkeypatch.setattr(cache, "content_hash", lambda f: calls.append(f.filename) or real(f))
    assert cache.folder_fingerprint(folder) == recorded     # hashed from the data: the same content, the same value
    assert [p.endswith("e0.h5") for p in calls] == [True]
    assert verify(folder) == []                      # nothing recorded, nothing to contradict


def test_the_fingerprint_includes_the_entry_names(folder, tmp_path):
    """An entry renamed (the same file, the same recorded hash, the same place in the order) is
    another cache: stage 2 reads labels and splits by entry name."""
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    assert cache.folder_fingerprint(copy) == cache.folder_fingerprint(folder)
    (copy / "e1.h5").rename(copy / "e1b.h5")      # still between e0 and e2
    assert cache.entries(copy) == ["e0", "e1b", "e2"]
    assert cache.folder_fingerprint(copy) != cache.folder_fingerprint(folder)


def _jpeg_rows(path, rows):
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("crops_jpeg", (len(rows),), dtype=cache.JPEG)
        for i, row in enumerate(rows):
            ds[i] = np.frombuffer(row, np.uint8)
    return path


def test_variable_length_rows_are_hashed_with_their_lengths(tmp_path):
    """JPEG rows [ab][c] and [a][bc] hold the same bytes in the same order: only the rows'
    lengths tell the two crops apart."""
    a = _jpeg_rows(tmp_path / "a.h5", [b"ab", b"c"])
    b = _jpeg_rows(tmp_path / "b.h5", [b"a", b"bc"])
    same = _jpeg_rows(tmp_path / "same.h5", [b"ab", b"c"])
    empty = _jpeg_rows(tmp_path / "empty.h5", [b"", b"abc"])
    with h5py.File(a) as fa, h5py.File(b) as fb, h5py.File(same) as fs, h5py.File(empty) as fe:
        assert cache.content_hash(fa) == cache.content_hash(fs)
        assert len({cache.content_hash(x) for x in (fa, fb, fe)}) == 3


def test_every_stage_has_a_schema_and_files_of_another_are_refused(tmp_path):
    assert cache.SCHEMAS == {"faces": 2, "audio": 1, "labels": 1, "transcribe": 1, "embed": 2}
    assert cache.schema("embed") == "jmt.embed/2" and cache.schema("labels") == "jmt.labels/1"
    assert cache.stream_key("prosody", "mask") == "streams/prosody/mask" and cache.label_key("au") == "labels/au"
    path = write_labels(tmp_path, "e", {"va": "train", "au": "validation"})
    with h5py.File(path) as f:
        cache.check_schema(f, "labels")
        assert f.attrs["schema"] == "jmt.labels/1"
        with pytest.raises(InputError, match=r"e.h5: a 'labels' file \('jmt.labels/1'\), not 'jmt.embed/2'; "
                                            r"re-run `jmt embed`"):
            cache.check_schema(f, "embed")
    with h5py.File(path, "r+") as f:
        f.attrs["schema"] = "jmt.labels/0"
    with h5py.File(path) as f:
        with pytest.raises(InputError, match=r"an older layout \('jmt.labels/0'\), not 'jmt.labels/1'; re-run `jmt labels`"):
            cache.check_schema(f, "labels")
