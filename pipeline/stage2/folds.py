"""Cross-validation folds for `jmt compare` and `jmt tune` (`compare.folds`, `tune.folds`: k >= 2).

Rule: each task's training and validation entries are merged and split into k folds by video,
deterministically (`assign_folds`): the two people of a two-person video share a fold, and a
video's fold is the same for every task. Test never enters: a split `test` stays `test`. In
fold i, for every task that lists an entry, a split `train`/`validation` becomes `validation`
when the entry's video is in fold i, else `train`. No task is added to or removed from an entry.

A fold is a labels cache view: `<root>/folds-k<k>/fold<i>/labels/` holds a copy of every entry of
the real labels cache (`labels.out`) with the per-task splits rewritten, written through
`cache.write_entry`, so each copy records its own content hash. Training and scoring code reads
the view as it reads the real cache (`fold_params` points `labels.out` at it), and a run's key
changes through the labels fingerprint: it differs between folds and is the same on a rebuild.
`<root>/folds-k<k>/folds.json` records the assignment and, per fold and task, the entries that
train and those that validate.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import cache
from pipeline.config import Params
from pipeline.corpus.entries import load_corpus
from pipeline.errors import InputError

ALGORITHM = 1  # bump when a change alters which fold a video gets or what a view's file holds
FOLDS_JSON = "folds.json"
MOVABLE = ("train", "validation")  # the splits folds merge; any other (test) is kept as it is
# root attributes write_entry sets itself (or records after the copy); the view's own values win
_OWN = {"schema", "stage", "entry", "config", "config_hash", cache.CONTENT_HASH, "tasks"}


@dataclass(frozen=True)
class Source:
    """What folds need of one entry of the real labels cache."""

    name: str
    path: Path
    video: str | None               # the file's `video` attribute (the corpus entry's source)
    frames: int
    rows: list[dict]                # its `tasks` attribute: {task, split, ...} per task
    digest: str                     # its recorded content hash

    @property
    def eligible(self) -> bool:
        """In a training or validation split of some task (folds move it)."""
        return any(r["split"] in MOVABLE for r in self.rows)


@dataclass(frozen=True)
class Plan:
    """The k folds of a labels cache: entry -> video, video -> fold."""

    k: int
    sources: dict[str, Source]
    videos: dict[str, str]
    folds: dict[str, int]

    def rows(self, name: str, fold: int) -> list[dict]:
        """An entry's `tasks` rows in fold `fold`'s view (the official split kept beside)."""
        inside = self.folds.get(self.videos[name]) == fold
        out = []
        for row in self.sources[name].rows:
            if row["split"] in MOVABLE:
                row = {**row, "split": "validation" if inside else "train", "official_split": row["split"]}
            out.append(row)
        return out

    def members(self, fold: int) -> dict[str, dict[str, list[str]]]:
        """{"train": {task: [entries]}, "validation": {task: [entries]}} of one fold's view, in
        name order: what each task's labels say, before a run's own rule (data.split_entries)
        leaves out of training an entry another of its tasks scores."""
        out: dict[str, dict[str, list[str]]] = {"train": {}, "validation": {}}
        for name in sorted(self.sources):
            for row in self.rows(name, fold):
                if row["split"] in out:
                    out[row["split"]].setdefault(row["task"], []).append(name)
        return {split: dict(sorted(tasks.items())) for split, tasks in out.items()}


def _read_source(path: Path) -> Source:
    try:
        with cache.open_entry(path) as f:
            cache.check_schema(f, "labels")
            attrs = cache.attrs_of(f)
            rows = attrs["tasks"]
            if not isinstance(rows, list) or not all({"task", "split"} <= set(r) for r in rows):
                raise InputError(f"{path}: attribute 'tasks' is not a list of {{task, split}}; re-run jmt labels")
            return Source(path.stem, path, attrs.get("video"), int(attrs["n_frames"]), rows,
                          cache.recorded_hash(f) or cache.content_hash(f))
    except (KeyError, TypeError, ValueError, OSError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{path}: not a readable labels file ({exc!r}); re-run jmt labels") from None


def _sources(params: Params) -> dict[str, Source]:
    folder = params.path(params.labels.out)
    names = cache.entries(folder)
    if not names:
        raise InputError(f"{folder}: no labels files; run `jmt labels` first")
    return {n: _read_source(cache.entry_path(folder, n)) for n in names}


def _videos(params: Params, sources: dict[str, Source]) -> dict[str, str]:
    try:
        corpus = load_corpus(params)
    except InputError:
        corpus = None  # not at hand: the labels files say the same (jmt labels wrote it from there)
    videos = {e.name: e.source for e in corpus.entries} if corpus is not None else {}
    for name, s in sources.items():
        if name not in videos:
            if not s.video:
                raise InputError(f"{s.path}: no `video` attribute and the corpus does not list {name!r}: "
                                 "cannot tell which entries share its video; re-run jmt labels")
            videos[name] = s.video
    return videos


def video_of(params: Params) -> dict[str, str]:
    """Entry name -> its video (the corpus entry's `source`, the video's path under the corpus
    root: both people of a two-person video share it) for every corpus entry and every entry of
    the labels cache. Where the corpus is not at hand, or does not list an entry of the cache,
    the labels file's `video` attribute is used: `jmt labels` wrote it from the same `source`,
    so the folds are the same with or without the videos."""
    return _videos(params, _sources(params))


def assign_folds(videos: dict[str, str], eligible: set[str], k: int,
                 sizes: dict[str, int] | None = None) -> dict[str, int]:
    """Video -> fold (0..k-1) for every video with an entry in `eligible` (entries of `videos`).

    A video weighs the `sizes` (entry -> frames) of its eligible entries, summed (a two-person
    video scores both people), or their number when `sizes` is None. Greedy: videos heaviest
    first, each to the fold with the least weight so far (then the fewest videos, then the
    lowest index), so folds validate on similar numbers of frames although Aff-Wild2's videos
    run from seconds to a quarter of an hour. Equal weights are ordered by the sha256 of the
    video's name, not the name: names carry the source and the recording batch, and name order
    would put neighbours together; a hash is a fixed shuffle that depends on nothing else (not
    on the dicts' order, a seed or the other videos)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise InputError(f"folds: k must be an integer of at least 2 (0 means the official splits), not {k!r}")
    missing = sorted(n for n in eligible if n not in videos)
    if missing:
        raise InputError(f"folds: no video known for {len(missing)} entries ({', '.join(missing[:5])})")
    weight: dict[str, int] = {}
    for name in eligible:
        weight[videos[name]] = weight.get(videos[name], 0) + (1 if sizes is None else int(sizes[name]))
    if k > len(weight):
        raise InputError(f"folds: k = {k} folds but only {len(weight)} videos have training or validation entries")
    order = sorted(weight, key=lambda v: (-weight[v], hashlib.sha256(v.encode()).hexdigest(), v))
    load, count, out = [0] * k, [0] * k, {}
    for video in order:
        fold = min(range(k), key=lambda i: (load[i], count[i], i))
        out[video] = fold
        load[fold] += weight[video]
        count[fold] += 1
    return dict(sorted(out.items()))


def plan(params: Params, k: int) -> Plan:
    """The k folds of the labels cache params point at."""
    sources = _sources(params)
    videos = _videos(params, sources)
    eligible = {n for n, s in sources.items() if s.eligible}
    folds = assign_folds(videos, eligible, k, {n: s.frames for n, s in sources.items()})
    return Plan(k, sources, {n: videos[n] for n in sources}, folds)


def _check_fold(k: int, fold: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise InputError(f"folds: k must be an integer of at least 2 (0 means the official splits), not {k!r}")
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < k:
        raise InputError(f"folds: fold must be one of 0..{k - 1}, not {fold!r}")


def _root(params: Params, root: Path) -> Path:
    """The folds' folder (`root` relative to the params file, as every params path)."""
    return params.path(root).absolute()


def view_folder(params: Params, k: int, fold: int, root: Path) -> Path:
    """Where fold `fold` of `k`'s labels view lives."""
    return _root(params, root) / f"folds-k{k}" / f"fold{fold}" / "labels"


def _write_view(source: Source, out: Path, rows: list[dict], fold: dict[str, Any]) -> None:
    """Copies one labels entry into a view with its `tasks` rows replaced (unless the copy is
    already current: the same source content, rows and fold)."""
    hash_ = cache.config_hash({"algorithm": ALGORITHM, "source_sha256": source.digest, "tasks": rows, "fold": fold})
    if cache.is_current(out, source.name, hash_):
        return
    try:
        with cache.open_entry(source.path) as src:
            attrs = {key: value for key, value in src.attrs.items() if key not in _OWN}  # stored values, as they are
            config = json.loads(src.attrs["config"])
            datasets: list[str] = []
            src.visititems(lambda name, obj: datasets.append(name) if hasattr(obj, "dtype") else None)  # not groups
            # an empty list would be stored as an empty numeric array (see stage1/labels.py)
            attrs.update(tasks=rows or json.dumps([]), fold={**fold, "source_sha256": source.digest})
            with cache.write_entry(out, source.name, stage="labels", config=config, attrs=attrs, hash_=hash_) as f:
                for name in sorted(datasets):
                    f.create_dataset(name, data=src[name][...])
    except (KeyError, ValueError, OSError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{source.path}: cannot copy the labels file ({exc!r}); re-run jmt labels") from None


def _write_json(path: Path, data: dict) -> None:
    """Writes a JSON file atomically, and only when its content changes (a second call leaves it)."""
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    if path.is_file() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    tmp.write_text(text)
    os.replace(tmp, path)


def folds_record(p: Plan, source: Path) -> dict:
    """folds.json: the assignment, and per fold and task the entries that train and validate."""
    test: dict[str, list[str]] = {}
    for name in sorted(p.sources):
        for row in p.sources[name].rows:
            if row["split"] not in MOVABLE:
                test.setdefault(row["task"], []).append(name)
    return {"k": p.k, "algorithm": ALGORITHM, "source": str(source), "videos": p.folds,
            "entries": p.videos, "test": dict(sorted(test.items())),
            "folds": [{"fold": i, "videos": sorted(v for v, f in p.folds.items() if f == i), **p.members(i)}
                      for i in range(p.k)]}


def fold_labels(params: Params, k: int, fold: int, root: Path) -> Path:
    """Writes fold `fold` of `k`'s labels view under `<root>/folds-k<k>/fold<fold>/labels/` from
    the labels cache params point at (entries already current are left as they are; entries no
    longer in the cache are removed) and `<root>/folds-k<k>/folds.json`; returns the view's
    folder. Writes nothing outside `root`."""
    _check_fold(k, fold)
    p = plan(params, k)
    out = view_folder(params, k, fold, root)
    for name in sorted(p.sources):
        _write_view(p.sources[name], out, p.rows(name, fold), {"k": k, "fold": fold})
    for name in cache.entries(out):
        if name not in p.sources:
            cache.entry_path(out, name).unlink()
    _write_json(out.parent.parent / FOLDS_JSON, folds_record(p, params.path(params.labels.out)))
    return out


def fold_params(params: Params, k: int, fold: int, root: Path) -> Params:
    """Params whose labels cache is fold `fold` of `k`'s view (written if needed)."""
    return params.updated(labels={"out": str(fold_labels(params, k, fold, root))})


def fold_record(params: Params, k: int, fold: int, root: Path) -> dict:
    """What a run on fold `fold` of `k` records (run.json): {fold, k, train: {task: [entries]},
    validation: {task: [entries]}}, from the labels cache's rows (`Plan.members`). `root` is
    unused: the record follows from the cache alone (kept so every fold call takes the same
    arguments)."""
    _check_fold(k, fold)
    return {"fold": fold, "k": k, **plan(params, k).members(fold)}
