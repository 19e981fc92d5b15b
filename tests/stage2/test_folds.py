"""Cross-validation folds (pipeline/stage2/folds.py): the assignment, the labels views, and what
training code reads from them. Synthetic caches (tests/embeddings.py) behind a manifest corpus
with a two-person video; the demo cache for the real thing."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline import cache
from pipeline.errors import InputError
from pipeline.stage2 import folds
from pipeline.stage2.data import load_splits

from ..embeddings import write_embeddings, write_labels
from ..stage1.helpers import params_at

TASKS = ["va", "expr", "au"]
# entry -> (video, side, task -> official split): a two-person video whose people differ for
# expr, an entry va alone lists, test entries, one test for expr but train for va
ENTRIES = {
    "v0_left": ("v0", "left", {"va": "train", "expr": "train"}),
    "v0_right": ("v0", "right", {"va": "train", "expr": "validation"}),
    "v1": ("v1", None, {"va": "train"}),
    "v2": ("v2", None, {"va": "validation", "expr": "validation"}),
    "v3": ("v3", None, {"va": "train", "au": "train"}),
    "v4": ("v4", None, {"va": "validation", "au": "validation"}),
    "v5": ("v5", None, {"va": "test", "expr": "test"}),
    "v6": ("v6", None, {"va": "train", "expr": "test"}),
    "v7": ("v7", None, {"va": "validation", "au": "train"}),
}
ELIGIBLE_VIDEOS = {"v0", "v1", "v2", "v3", "v4", "v6", "v7"}


def synthetic(folder: Path, *, embeddings: bool = False):
    """Params of a manifest corpus (empty video files: nothing decodes them) and a labels cache
    (plus embeddings) of ENTRIES under folder."""
    corpus = folder / "corpus"
    corpus.mkdir(parents=True)
    with (corpus / "manifest.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video", "name", "side", *(c for t in TASKS for c in (f"{t}_annotation", f"{t}_split"))])
        for name, (video, side, splits) in ENTRIES.items():
            (corpus / f"{video}.mp4").touch()
            w.writerow([f"{video}.mp4", name, side or "", *(c for t in TASKS for c in ("", splits.get(t, "")))])
    for i, (name, (_, _, splits)) in enumerate(ENTRIES.items()):
        write_labels(folder / "labels", name, splits, seed=i, n=40 + 10 * i)
        if embeddings:
            write_embeddings(folder / "embeddings", name, seed=i, n=40 + 10 * i)
    return params_at(folder, corpus, corpus={"layout": "manifest", "manifest": str(corpus / "manifest.csv")},
                     labels={"out": str(folder / "labels")}, embed={"out": str(folder / "embeddings")})


def view_rows(folder: Path) -> dict[str, dict[str, str]]:
    """entry -> task -> split, as a view's files say."""
    out = {}
    for name in cache.entries(folder):
        with cache.open_entry(cache.entry_path(folder, name)) as f:
            cache.check_schema(f, "labels")
            out[name] = {r["task"]: r["split"] for r in cache.attrs_of(f)["tasks"]}
    return out


def snapshot(folder: Path) -> dict[Path, tuple[int, int]]:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- the assignment --------------------------------------------------------------------------

def test_assign_folds_covers_each_video_once_balanced_and_deterministic():
    videos = {f"e{i}": f"vid{i}" for i in range(10)} | {"two_left": "two", "two_right": "two"}
    eligible = set(videos) - {"e9"}
    sizes = {n: 10 + 37 * i % 90 for i, n in enumerate(videos)}
    got = folds.assign_folds(videos, eligible, 3, sizes)
    assert set(got) == {videos[n] for n in eligible}          # every eligible video, no other
    assert set(got.values()) == {0, 1, 2}
    # the order of the inputs does not matter
    assert folds.assign_folds(dict(reversed(videos.items())), set(sorted(eligible, reverse=True)), 3,
                              dict(reversed(sizes.items()))) == got
    load = [sum(sizes[n] for n in eligible if got[videos[n]] == i) for i in range(3)]
    heaviest = max(sum(sizes[n] for n in eligible if videos[n] == v) for v in got)
    assert max(load) - min(load) <= heaviest, load
    # without sizes: entries counted, so single-person videos spread evenly
    plain = folds.assign_folds({f"e{i}": f"vid{i}" for i in range(10)}, {f"e{i}" for i in range(10)}, 3)
    assert sorted(list(plain.values()).count(i) for i in range(3)) == [3, 3, 4]


def test_assign_folds_rejects_bad_k():
    videos = {"a": "x", "b": "x", "c": "y"}
    with pytest.raises(InputError, match=r"k = 3 .* only 2 videos"):
        folds.assign_folds(videos, set(videos), 3)
    for k in (0, 1, True):
        with pytest.raises(InputError, match="at least 2"):
            folds.assign_folds(videos, set(videos), k)


# ---- videos ----------------------------------------------------------------------------------

def test_video_of_reads_the_corpus_and_falls_back_to_the_labels(tmp_path):
    params = synthetic(tmp_path)
    videos = folds.video_of(params)
    assert videos["v0_left"] == videos["v0_right"] == "v0.mp4"
    assert len({videos[n] for n in ENTRIES}) == len(ENTRIES) - 1
    # the corpus not at hand: each labels file's `video` attribute (write_labels: `<entry>.mp4`)
    gone = params.updated(corpus={"manifest": str(tmp_path / "nowhere.csv")})
    assert folds.video_of(gone) == {n: f"{n}.mp4" for n in ENTRIES}


# ---- the labels views ------------------------------------------------------------------------

def test_fold_views_follow_the_rule(tmp_path):
    params = synthetic(tmp_path)
    root = tmp_path / "folds"
    before = snapshot(tmp_path)
    k = 3
    views = {i: view_rows(folds.fold_labels(params, k, i, root)) for i in range(k)}
    official = {n: s for n, (_, _, s) in ENTRIES.items()}
    scored_videos = []
    for i, rows in views.items():
        assert set(rows) == set(ENTRIES)
        in_fold = set()
        for name, splits in rows.items():
            assert set(splits) == set(official[name])             # no task added or dropped (v1: va only)
            for task, split in splits.items():
                if official[name][task] == "test":
                    assert split == "test"                         # test never enters
                else:
                    assert split in ("train", "validation")
            moved = {s for t, s in splits.items() if official[name][t] != "test"}
            assert len(moved) <= 1, (i, name, splits)              # one fold for every task
            if moved == {"validation"}:
                in_fold.add(ENTRIES[name][0])
        assert rows["v0_left"]["va"] == rows["v0_right"]["va"] == rows["v0_right"]["expr"]
        scored_videos.append(in_fold)
    # folds are disjoint and cover every video with a training or validation entry
    assert sum(len(v) for v in scored_videos) == len(ELIGIBLE_VIDEOS) == len(set().union(*scored_videos))
    assert all(scored_videos)
    # the labels themselves are copied unchanged, and each copy records its own content hash
    for name in ENTRIES:
        with cache.open_entry(cache.entry_path(params.path(params.labels.out), name)) as src, \
                cache.open_entry(cache.entry_path(root / "folds-k3" / "fold1" / "labels", name)) as view:
            assert cache.recorded_hash(view) == cache.content_hash(view) != cache.recorded_hash(src)
            for task in official[name]:
                np.testing.assert_array_equal(view[cache.label_key(task)][...], src[cache.label_key(task)][...])
            assert view.attrs["n_frames"] == src.attrs["n_frames"] and view.attrs["video"] == src.attrs["video"]
    # folds.json records the assignment and each fold's entries, the same as fold_record
    record = json.loads((root / "folds-k3" / "folds.json").read_text())
    assert set(record["videos"]) == {f"{v}.mp4" for v in ELIGIBLE_VIDEOS}
    assert record["test"] == {"expr": ["v5", "v6"], "va": ["v5"]}
    for i in range(k):
        mine = folds.fold_record(params, k, i, root)
        assert mine["fold"] == i and mine["k"] == k
        assert {s: mine[s] for s in ("train", "validation")} == {s: record["folds"][i][s] for s in ("train", "validation")}
        assert {ENTRIES[n][0] for names in mine["validation"].values() for n in names} == scored_videos[i]
        assert "v1" not in mine["validation"].get("expr", []) + mine["train"].get("expr", [])
    # nothing written outside root
    after = snapshot(tmp_path)
    assert {p: v for p, v in after.items() if root not in p.parents} == before


def test_fold_fingerprints_differ_per_fold_and_are_stable(tmp_path):
    params = synthetic(tmp_path)
    root = tmp_path / "folds"
    prints = [cache.folder_fingerprint(folds.fold_labels(params, 3, i, root)) for i in range(3)]
    assert len(set(prints)) == 3 and cache.folder_fingerprint(params.path(params.labels.out)) not in prints
    # a second call rewrites nothing; a rebuild from scratch gives the same files' hashes
    stamps = snapshot(root)
    assert folds.fold_labels(params, 3, 0, root) == root.absolute() / "folds-k3" / "fold0" / "labels"
    assert snapshot(root) == stamps
    shutil.rmtree(root)
    assert [cache.folder_fingerprint(folds.fold_labels(params, 3, i, root)) for i in range(3)] == prints
    # another k: other views, beside these
    assert cache.folder_fingerprint(folds.fold_labels(params, 2, 0, root)) not in prints
    # the source changes: the view follows (an entry moved to test, an entry gone)
    write_labels(tmp_path / "labels", "v7", {"va": "test", "au": "train"}, seed=7, n=110)
    cache.entry_path(tmp_path / "labels", "v1").unlink()
    view = folds.fold_labels(params, 3, 0, root)
    rows = view_rows(view)
    assert "v1" not in rows and rows["v7"]["va"] == "test"
    assert cache.folder_fingerprint(view) != prints[0]


def test_fold_params_give_load_splits_the_folds_validation(tmp_path):
    params = synthetic(tmp_path, embeddings=True)
    root = tmp_path / "folds"
    for i in range(3):
        fp = folds.fold_params(params, 3, i, root)
        assert fp.path(fp.labels.out) == root.absolute() / "folds-k3" / f"fold{i}" / "labels"
        record = folds.fold_record(params, 3, i, root)
        splits = load_splits(fp, TASKS, preload_max_mb=0)
        assert {t: [e.name for e in v] for t, v in splits.validation.items() if v} == record["validation"]
        assert {t: [e.name for e in v] for t, v in splits.test.items() if v} == {"va": ["v5"], "expr": ["v5", "v6"]}
        scored = {e.name for v in splits.validation.values() for e in v}
        assert scored and not scored & {e.name for e in splits.train}


def test_fold_labels_errors_name_the_file(tmp_path):
    params = synthetic(tmp_path)
    with pytest.raises(InputError, match="fold must be one of 0..2"):
        folds.fold_labels(params, 3, 3, tmp_path / "folds")
    with pytest.raises(InputError, match="k = 8 .* only 7 videos"):
        folds.fold_labels(params, 8, 0, tmp_path / "folds")
    bad = cache.entry_path(tmp_path / "labels", "v3")
    bad.write_bytes(b"not hdf5")
    with pytest.raises(InputError, match=r"v3\.h5"):
        folds.fold_labels(params, 3, 0, tmp_path / "folds")
    bad.unlink()
    write_embeddings(tmp_path / "labels", "v3")  # another stage's file in the labels folder
    with pytest.raises(InputError, match=r"v3\.h5.*'jmt\.embed/2'"):
        folds.fold_labels(params, 3, 0, tmp_path / "folds")
    empty = params.updated(labels={"out": str(tmp_path / "none")})
    with pytest.raises(InputError, match="none: no labels files"):
        folds.fold_labels(empty, 3, 0, tmp_path / "folds")


# ---- the demo cache --------------------------------------------------------------------------

def test_demo_cache_folds(tiny_cache, tmp_path):
    """The demo corpus: a two-person training video (its right person expr validation) and a
    validation video make two folds; the test video stays test."""
    params, _ = tiny_cache
    videos = folds.video_of(params)
    assert videos["demo_00_left"] == videos["demo_00_right"] != videos["demo_01"]
    seen = []
    for i in range(2):
        fp = folds.fold_params(params, 2, i, tmp_path)
        splits = load_splits(fp, TASKS, preload_max_mb=0)
        val = {t: [e.name for e in v] for t, v in splits.validation.items()}
        assert {t: [e.name for e in v] for t, v in splits.test.items()} == dict.fromkeys(TASKS, ["demo_02"])
        if "demo_01" in val["va"]:
            assert val == dict.fromkeys(TASKS, ["demo_01"])
            assert [e.name for e in splits.train] == ["demo_00_left", "demo_00_right"]  # right: expr train now
        else:
            assert val == {"va": ["demo_00_left", "demo_00_right"], "expr": ["demo_00_left", "demo_00_right"],
                           "au": ["demo_00_left"]}
            assert [e.name for e in splits.train] == ["demo_01"]
        assert folds.fold_record(params, 2, i, tmp_path)["validation"] == val
        seen.append(cache.folder_fingerprint(fp.path(fp.labels.out)))
    assert len(set(seen)) == 2 and cache.folder_fingerprint(params.path(params.labels.out)) not in seen
