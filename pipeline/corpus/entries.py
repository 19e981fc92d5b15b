"""Corpus adapters: find the annotated entries of a corpus (Aff-Wild2 layout or a CSV manifest).

An *entry* is one annotated person in one video, the unit every cache stores: Aff-Wild2's
two-person videos give two entries (`<video>_left`, `<video>_right`) sharing one video file
and one audio track. An entry carries, per task (`pipeline.tasks`: va, expr, au), its split and
annotation file: in Aff-Wild2 the three tasks have their own video sets and splits, so an
entry may be labelled for one task only, or be in one task's training set and another's
validation set. Problems with single entries (a missing video, a name that cannot be a file
name) are collected, not raised, so a stage can skip them, record them in its report and go on.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.cache import name_problem
from pipeline.errors import InputError
from pipeline.tasks import TASKS

AFFWILD2_SPLITS = {"Train_Set": "train", "Validation_Set": "validation", "Test_Set": "test"}
SPLITS = ("train", "validation", "test")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm")
SIDES = ("left", "right")
TEST_LIST = "Test_Set_names.txt"  # in a task's folder: its unlabelled test entries, one name per line


@dataclass(frozen=True)
class Label:
    """One task's annotation of an entry: its split, and the file (None: an unlabelled test entry)."""

    split: str
    path: Path | None


@dataclass(frozen=True)
class CorpusEntry:
    """One annotated person in one video, as the corpus lists it (stage 2 reads what the caches hold
    of it as `stage2.data.CachedEntry`)."""

    name: str                 # unique key, e.g. "video5_left" (the annotation files' stem)
    video: Path
    side: str | None = None   # left | right for two-person videos
    source: str = ""          # the video's path relative to the corpus root (what caches record)
    labels: dict[str, Label] = field(default_factory=dict, hash=False)  # task -> split and file

    def split(self, task: str) -> str | None:
        """The entry's split for a task, or None when the task does not list it."""
        label = self.labels.get(task)
        return label.split if label else None

    def to_dict(self) -> dict:
        return {"name": self.name, "video": str(self.video), "side": self.side,
                "labels": {t: {"split": lab.split, "annotation": str(lab.path) if lab.path else None}
                           for t, lab in self.labels.items()}}


@dataclass
class Corpus:
    """The entries found, and the problems that made others unusable."""

    root: Path
    entries: list[CorpusEntry] = field(default_factory=list)
    problems: list[dict] = field(default_factory=list)  # {"entry": name, "file": ..., "error": ...}

    def videos(self) -> dict[Path, list[CorpusEntry]]:
        """Entries grouped by video file (a two-person video has two)."""
        groups: dict[Path, list[CorpusEntry]] = {}
        for e in self.entries:
            groups.setdefault(e.video, []).append(e)
        return groups

    def names(self, task: str, split: str) -> list[str]:
        """The entries of one task's split."""
        return [e.name for e in self.entries if e.split(task) == split]


def _index_videos(folder: Path) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file():
            index.setdefault(path.stem, path)
    return index


def _split_side(name: str, videos: dict[str, Path]) -> tuple[str, str | None]:
    """Maps an annotation name to (video stem, side): `x_left` -> (`x`, "left")."""
    if name in videos:
        return name, None
    for side in SIDES:
        if name.endswith(f"_{side}") and name[: -len(side) - 1] in videos:
            return name[: -len(side) - 1], side
    return name, None


def task_folder(annotations: Path, task: str) -> Path | None:
    """The folder of a task's annotations under Aff-Wild2's `annotations/` (the first of the
    task's folder names that exists: EXPR has an older name), or None."""
    for name in TASKS.get(task).folders:
        if (annotations / name).is_dir():
            return annotations / name
    return None


def affwild2(root: Path, *, videos_dir: str = "videos", annotations_dir: str = "annotations") -> Corpus:
    """Entries of a corpus in the Aff-Wild2 layout.

    Videos: any file under `<root>/<videos_dir>/` (sub-folders such as batch1/ included) with a
    video suffix. Labels, per task: `<annotations_dir>/<task folder>/<Split>/<name>.txt` for
    Train_Set, Validation_Set and (when present) Test_Set, the task folders being
    VA_Estimation_Challenge, EXPR_Recognition_Challenge (or its older name
    EXPR_Classification_Challenge) and AU_Detection_Challenge. Unlabelled test entries: names
    listed one per line in `<task folder>/Test_Set_names.txt` without a Test_Set file.
    """
    root = Path(root)
    vdir, adir = root / videos_dir, root / annotations_dir
    for folder in (vdir, adir):
        if not folder.is_dir():
            raise InputError(f"{folder}: folder not found (Aff-Wild2 layout: {videos_dir}/ and "
                             f"{annotations_dir}/<task folder>/ under the corpus root)")
    folders = {t: task_folder(adir, t) for t in TASKS.names()}
    folders = {t: f for t, f in folders.items() if f is not None}
    if not folders:
        names = ", ".join(n for t in TASKS.names() for n in TASKS.get(t).folders)
        raise InputError(f"{adir}: no task folder found (expected one of {names})")
    found: dict[str, dict[str, Label]] = {}   # name -> task -> label
    where: dict[str, str] = {}                 # name -> the first file that named it
    problems: list[dict] = []
    for task, folder in folders.items():
        for split_dir, split in AFFWILD2_SPLITS.items():
            for ann in sorted((folder / split_dir).glob("*.txt")):
                _collect(found, where, problems, ann.stem, task, Label(split, ann), str(ann))
        listed = folder / TEST_LIST
        if listed.is_file():
            lines = listed.read_text(encoding="utf-8", errors="replace").splitlines()
            for number, line in enumerate(lines, start=1):
                for name in line.split():
                    if task not in found.get(name, {}):
                        _collect(found, where, problems, name, task, Label("test", None),
                                 f"{listed}: line {number}")
    corpus = Corpus(root=root, problems=problems)
    if not found and not problems:
        raise InputError(f"{adir}: no annotation files found in {', '.join(AFFWILD2_SPLITS)} of "
                         f"{', '.join(str(f.relative_to(root)) for f in folders.values())}")
    videos = _index_videos(vdir)
    for name in sorted(found):
        if "*twice" not in found[name]:  # an entry listed twice for a task is a recorded problem only
            _add(corpus, name, found[name], videos, where[name])
    return corpus


def _collect(found: dict, where: dict, problems: list, name: str, task: str, label: Label, origin: str) -> None:
    """Records that `name` has `label` for `task`; a name whose file name cannot be one, or
    listed twice for one task, is a problem instead."""
    problem = name_problem(name)
    if problem:  # the name becomes a file name in every cache folder
        problems.append({"entry": name, "file": origin,
                         "error": f"entry name {name!r} cannot be a cache file name: {problem}"})
        return
    have = found.setdefault(name, {})
    if task in have:  # which split is it in? Neither is trusted: the entry is left out (and recorded)
        problems.append({"entry": name, "file": origin,
                         "error": f"listed twice for task {task} ({have[task].split} and {label.split}): "
                                  "the entry is left out"})
        have["*twice"] = label
        return
    have[task] = label
    where.setdefault(name, origin)


def _add(corpus: Corpus, name: str, labels: dict[str, Label], videos: dict[str, Path], origin: str) -> None:
    stem, side = _split_side(name, videos)
    if stem not in videos:
        corpus.problems.append({"entry": name, "file": origin,
                                "error": f"no video named {stem!r} under the videos folder"})
        return
    corpus.entries.append(CorpusEntry(name=name, video=videos[stem], side=side,
                                source=_relative(videos[stem], corpus.root), labels=labels))


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:  # outside the corpus root (a manifest may point anywhere)
        return str(path)


def _manifest_columns(fieldnames: list[str], path: Path) -> dict[str, tuple[str, str]]:
    """task -> (annotation column, split column) of a manifest header: `<task>_annotation` and
    `<task>_split` for any task, `annotation` and `split` for va (the original layout)."""
    names = set(fieldnames)
    out = {}
    for task in TASKS.names():
        pairs = [(f"{task}_annotation", f"{task}_split")] + ([("annotation", "split")] if task == "va" else [])
        for ann, split in pairs:
            if (ann in names) != (split in names):
                have, lack = (ann, split) if ann in names else (split, ann)
                raise InputError(f"{path}: column {have!r} needs column {lack!r} beside it")
            if ann in names:
                if task in out:
                    raise InputError(f"{path}: va's columns given twice (annotation,split and va_annotation,va_split)")
                out[task] = (ann, split)
    if "video" not in names or not out:
        missing = ", ".join(c for c in ("video",) if c not in names) or "a task's annotation,split"
        raise InputError(f"{path}: missing column(s) {missing}; expected header "
                         "video,annotation,split[,name,side][,expr_annotation,expr_split][,au_annotation,au_split]")
    return out


def manifest(path: Path) -> Corpus:
    """Entries from a CSV with a `video` column and, per task, an annotation and a split column:
    `annotation`,`split` (valence-arousal, the original layout) and optional `expr_annotation`,
    `expr_split`, `au_annotation`, `au_split` (any registered task as `<task>_annotation`,
    `<task>_split`); optional `name` and `side`. An empty split: not in that task; an empty
    annotation with a split: an unlabelled entry of that split (test). Relative paths are
    relative to the CSV's folder.

    An entry without a `name` is named after its video: `<video stem>`, or `<video stem>_<side>`
    with a side, which the `side` column gives or else the annotation files' names
    (`<video stem>_left.txt`, as in the Aff-Wild2 layout)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: manifest file not found")
    corpus = Corpus(root=path.parent)
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = _manifest_columns(reader.fieldnames or [], path)
        for line, row in enumerate(reader, start=2):
            labels: dict[str, Label] = {}
            for task, (ann_col, split_col) in columns.items():
                split = (row[split_col] or "").strip().lower()
                ann = (row[ann_col] or "").strip()
                if not split and not ann:
                    continue
                if split not in SPLITS:
                    raise InputError(f"{path}: line {line}: {split_col} {row[split_col]!r} is not one of "
                                     f"{', '.join(SPLITS)}")
                labels[task] = Label(split, path.parent / ann if ann else None)
            video = path.parent / (row["video"] or "").strip()
            side = (row.get("side") or "").strip() or None
            if side not in (None, *SIDES):
                raise InputError(f"{path}: line {line}: side {side!r} is not left or right")
            side = side or _annotated_side(video, labels, f"{path}: line {line}")
            name = (row.get("name") or "").strip() or (f"{video.stem}_{side}" if side else video.stem)
            problem = name_problem(name)
            if problem:
                raise InputError(f"{path}: line {line}: entry name {name!r} cannot be a cache file name: "
                                 f"{problem}")
            if not video.is_file():
                corpus.problems.append({"entry": name, "file": str(video), "error": "video file not found"})
                continue
            corpus.entries.append(CorpusEntry(name=name, video=video, side=side, source=_relative(video, corpus.root),
                                        labels=labels))
    names = [e.name for e in corpus.entries]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:  # e.g. two people of one video without a side: the default name is the video's
        raise InputError(f"{path}: entry names must be unique; repeated: {', '.join(dupes)} "
                         "(give those rows a name or a side column)")
    return corpus


def _annotated_side(video: Path, labels: dict[str, Label], where: str) -> str | None:
    """The side a manifest row's annotation file names carry (Aff-Wild2's two-person rule:
    `<video stem>_left.txt` / `_right.txt`), or None; files naming both sides are an error."""
    sides = {s for lab in labels.values() if lab.path for s in SIDES if lab.path.stem == f"{video.stem}_{s}"}
    if len(sides) > 1:
        raise InputError(f"{where}: annotation files name both sides of {video.name}; give the row a side")
    return sides.pop() if sides else None


def align_labels(labels: np.ndarray, n_frames: int, *, invalid: float, tolerance: int,
                 source: Path | str) -> tuple[np.ndarray, int]:
    """Aligns annotation rows (frames, k) to decoded frames.

    Rule (Aff-Wild2's files may differ from the decoded frame count by a few frames): the
    first row is frame 0; extra trailing rows are dropped; missing trailing rows become
    invalid (`invalid`, the task's marker). A difference larger than `tolerance` frames is an
    error naming the file. Returns (aligned (n_frames, k) float32, rows - frames).
    """
    diff = len(labels) - n_frames
    if abs(diff) > tolerance:
        raise InputError(f"{source}: {len(labels)} label rows for {n_frames} video frames "
                         f"(difference {diff:+d} exceeds the tolerance of {tolerance})")
    out = np.full((n_frames, labels.shape[1]), invalid, dtype=np.float32)
    k = min(n_frames, len(labels))
    out[:k] = labels[:k]
    return out, diff


def load_corpus(params) -> Corpus:
    """The corpus that params' `corpus` section points at (paths relative to the params file)."""
    c = params.corpus
    if c.layout == "affwild2":
        return affwild2(params.path(c.root))
    return manifest(params.path(c.manifest))


def _sha(path: Path | None) -> str | None:
    if path is None or not path.is_file():
        return None  # a missing file is reported when the entry is processed
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def inputs_fingerprint(entry: CorpusEntry, *, labels: bool = False) -> dict:
    """What identifies an entry's inputs: its name, side and the sha256 of its video; with
    `labels`, also each task's split and annotation file's sha256 (only the labels stage reads
    them, so editing an annotation or moving an entry between splits reruns nothing else)."""
    out = {"name": entry.name, "side": entry.side, "video_sha256": _sha(entry.video)}
    if labels:
        out["labels"] = {t: {"split": lab.split, "sha256": _sha(lab.path)} for t, lab in sorted(entry.labels.items())}
    return out
