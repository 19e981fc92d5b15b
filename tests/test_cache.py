"""The recorded content hash: written with every entry, the fingerprint built from it without
reading data, a hand edit caught by `jmt cache verify`, entries from before it still working."""

import h5py
import pytest

from pipeline import cache
from pipeline.cache_tools import verify

from .embeddings import write_embeddings


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
        assert a["visual"].chunks is None and b["visual"].chunks is not None
        assert cache.recorded_hash(a) == cache.recorded_hash(b)
    other = _write(tmp_path / "c", "e", seed=1)
    with h5py.File(other) as c, h5py.File(contiguous) as a:
        assert cache.recorded_hash(c) != cache.recorded_hash(a)


def test_fingerprint_of_an_untouched_cache_reads_no_data(folder, monkeypatch):
    before = cache.fingerprint(folder)

    def read_data(f):
        raise AssertionError(f"{f.filename}: dataset bytes hashed")

    monkeypatch.setattr(cache, "content_hash", read_data)
    assert cache.fingerprint(folder) == before


def test_a_rewritten_entry_changes_the_fingerprint(folder):
    before = cache.fingerprint(folder)
    _write(folder, "e1", seed=7)               # the stage wrote it again, with other numbers
    rewritten = cache.fingerprint(folder)
    assert rewritten != before
    (folder / "e2.h5").unlink()                # an entry gone
    assert cache.fingerprint(folder) not in (before, rewritten)


def test_a_hand_edit_is_caught_by_verify(folder):
    before = cache.fingerprint(folder)
    with h5py.File(folder / "e1.h5", "r+") as f:
        f["audio"][10, 2] = f["audio"][10, 2] + 1   # a plausible value: only the hash can tell
    faults = verify(folder)
    assert len(faults) == 1 and "e1.h5: content differs from its recorded content_sha256" in faults[0]
    # the fingerprint trusts the recorded hashes: that is what makes it cheap (docs/cache.md)
    assert cache.fingerprint(folder) == before
    with h5py.File(folder / "e2.h5", "r+") as f:
        f.attrs["split"] = "validation"            # attributes are content too
    assert any("e2.h5: content differs" in fault for fault in verify(folder))


def test_entries_written_before_hashes_were_recorded(folder, monkeypatch):
    recorded = cache.fingerprint(folder)
    with h5py.File(folder / "e0.h5", "r+") as f:
        del f.attrs[cache.CONTENT_HASH]
    calls = []
    real = cache.content_hash
    monkeypatch.setattr(cache, "content_hash", lambda f: calls.append(f.filename) or real(f))
    assert cache.fingerprint(folder) == recorded     # hashed from the data: the same content, the same value
    assert [p.endswith("e0.h5") for p in calls] == [True]
    assert verify(folder) == []                      # nothing recorded, nothing to contradict
