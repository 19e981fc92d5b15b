"""pipeline/stage1/runner.py: what one unit of a stage does where it runs (`attempt`), and the
entry hash (only the labels stage's holds the annotations)."""

import warnings

import pytest

from pipeline import cache, engine
from pipeline.corpus.entries import CorpusEntry, Label
from pipeline.engine import EngineError
from pipeline.errors import InputError
from pipeline.stage1.runner import attempt, entry_hash


class Recorder:
    """A stage's process: writes every entry it is given (as a stage does), remembers which."""

    def __init__(self, fail: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail

    def __call__(self, video, entries, hashes, advance):
        self.calls.append([e.name for e in entries])
        out = {}
        for e in entries:
            if e.name == self.fail:
                raise InputError(f"{video}: cannot read {e.name}")
            with cache.write_entry(self.folder, e.name, stage="labels", config={}, hash_=hashes[e.name],
                                   attrs={"n_frames": 1, "tasks": []}):
                pass
            out[e.name] = {"frames": 1}
            advance(1)
        warnings.warn(f"{video.name}: looked at {len(entries)}")
        return out


def _entries(tmp_path):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"frames")
    entries = [CorpusEntry(name=f"v_{side}", video=video, side=side, source="v.mp4",
                     labels={"va": Label("train", None)}) for side in ("left", "right")]
    return video, entries, {e.name: entry_hash({"stage": 1}, e) for e in entries}


def test_a_retried_unit_reports_what_its_first_try_committed_as_cached(tmp_path):
    """On Ray (a marker given) a unit run again after its worker died finds the entries its
    first try committed: it reports them cached and does only the rest."""
    out = tmp_path / "out"
    video, entries, hashes = _entries(tmp_path)
    process = Recorder()
    process.folder = out
    with engine.shared_storage(out) as marker:
        with cache.write_entry(out, "v_left", stage="labels", config={}, hash_=hashes["v_left"],
                               attrs={"n_frames": 1, "tasks": []}):
            pass                                                # the first try got this far
        outcome = attempt(process, out, marker, video, entries, hashes)
        assert process.calls == [["v_right"]]
        assert outcome["cached"] == ["v_left"] and list(outcome["done"]) == ["v_right"]
        assert outcome["error"] is None and outcome["warnings"] == ["v.mp4: looked at 1"]
        again = attempt(process, out, marker, video, entries, hashes)   # a third try: nothing left
        assert process.calls == [["v_right"]] and again["cached"] == ["v_left", "v_right"] and again["done"] == {}
        # an entry written with another config is not current: it is redone
        stale = {**hashes, "v_left": "another"}
        attempt(process, out, marker, video, entries, stale)
        assert process.calls[-1] == ["v_left"]


def test_locally_the_drivers_list_is_taken_as_it_is(tmp_path):
    """The local engine (no marker): the driver has just checked what is current, the unit does
    what it is given."""
    out = tmp_path / "out"
    video, entries, hashes = _entries(tmp_path)
    process = Recorder()
    process.folder = out
    outcome = attempt(process, out, None, video, entries, hashes)
    assert process.calls == [["v_left", "v_right"]] and outcome["cached"] == []
    assert sorted(outcome["done"]) == ["v_left", "v_right"] and not list(out.glob(".jmt-*"))


def test_an_input_error_is_returned_not_raised_and_storage_is_checked(tmp_path):
    out = tmp_path / "out"
    video, entries, hashes = _entries(tmp_path)
    process = Recorder(fail="v_right")
    process.folder = out
    with engine.shared_storage(out) as marker:
        outcome = attempt(process, out, marker, video, entries, hashes)
        assert outcome["error"] == f"{video}: cannot read v_right" and outcome["done"] == {}
        with pytest.raises(EngineError, match="does not see"):
            attempt(process, tmp_path / "elsewhere", marker, video, entries, hashes)


def test_only_the_labels_stage_hashes_the_annotations(tmp_path):
    ann = tmp_path / "a.txt"
    ann.write_text("valence,arousal\n0,0\n")
    video = tmp_path / "v.mp4"
    video.write_bytes(b"frames")
    e = CorpusEntry(name="v", video=video, labels={"va": Label("train", ann)})
    moved = CorpusEntry(name="v", video=video, labels={"va": Label("validation", ann)})
    assert entry_hash({"s": 1}, e) == entry_hash({"s": 1}, moved)
    assert entry_hash({"s": 1}, e, with_labels=True) != entry_hash({"s": 1}, moved, with_labels=True)
    before = entry_hash({"s": 1}, e, with_labels=True)
    ann.write_text("valence,arousal\n0.5,0\n")
    assert entry_hash({"s": 1}, e, with_labels=True) != before
    assert entry_hash({"s": 2}, e) != entry_hash({"s": 1}, e)
    renamed = CorpusEntry(name="w", video=video, labels=e.labels)
    assert entry_hash({"s": 1}, renamed) != entry_hash({"s": 1}, e)
