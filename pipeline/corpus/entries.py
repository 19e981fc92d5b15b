"""Corpus adapters: find the annotated entries of a corpus (Aff-Wild2 layout or a CSV manifest).

An *entry* is one annotated person in one video, the unit every cache stores: Aff-Wild2's
two-person videos give two entries (`<video>_left`, `<video>_right`) sharing one video file
and one audio track. Problems with single entries (a missing video, a bad annotation) are
collected, not raised, so a stage can skip them, record them in its report and go on.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.cache import name_problem
from pipeline.corpus.annotations import INVALID, read_annotation
from pipeline.errors import InputError

AFFWILD2_SPLITS = {"Train_Set": "train", "Validation_Set": "validation", "Test_Set": "test"}
SPLITS = ("train", "validation", "test")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm")
SIDES = ("left", "right")


@dataclass(frozen=True)
class Entry:
    """One annotated person in one video."""

    name: str                 # unique key, e.g. "video5_left" (the annotation file's stem)
    video: Path
    split: str                # train | validation | test
    annotation: Path | None   # None: an unlabelled (test) entry
    side: str | None = None   # left | right for two-person videos
    source: str = ""          # the video's path relative to the corpus root (what caches record)

    def to_dict(self) -> dict:
        return {"name": self.name, "video": str(self.video), "split": self.split,
                "annotation": str(self.annotation) if self.annotation else None, "side": self.side}


@dataclass
class Corpus:
    """The entries found, and the problems that made others unusable."""

    root: Path
    entries: list[Entry] = field(default_factory=list)
    problems: list[dict] = field(default_factory=list)  # {"entry": name, "file": ..., "error": ...}

    def videos(self) -> dict[Path, list[Entry]]:
        """Entries grouped by video file (a two-person video has two)."""
        groups: dict[Path, list[Entry]] = {}
        for e in self.entries:
            groups.setdefault(e.video, []).append(e)
        return groups


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


def affwild2(root: Path, *, videos_dir: str = "videos",
             annotations_dir: str = "annotations/VA_Estimation_Challenge",
             test_list: str | None = "Test_Set_names.txt") -> Corpus:
    """Entries of a corpus in the Aff-Wild2 layout.

    Videos: any file under `<root>/<videos_dir>/` (sub-folders such as batch1/ included) with a
    video suffix. Labels: `<annotations_dir>/<Split>/<name>.txt` for Train_Set, Validation_Set
    and (when present) Test_Set. Unlabelled test entries: names listed one per line in
    `<annotations_dir>/<test_list>` without a Test_Set file.
    """
    root = Path(root)
    vdir, adir = root / videos_dir, root / annotations_dir
    for folder in (vdir, adir):
        if not folder.is_dir():
            raise InputError(f"{folder}: folder not found (Aff-Wild2 layout: {videos_dir}/ and "
                             f"{annotations_dir}/ under the corpus root)")
    videos = _index_videos(vdir)
    corpus = Corpus(root=root)
    labelled: set[str] = set()
    for folder, split in AFFWILD2_SPLITS.items():
        for ann in sorted((adir / folder).glob("*.txt")):
            labelled.add(ann.stem)
            _add(corpus, ann.stem, split, ann, videos)
    if test_list and (adir / test_list).is_file():
        lines = (adir / test_list).read_text(encoding="utf-8", errors="replace").splitlines()
        for number, line in enumerate(lines, start=1):
            for name in line.split():
                if name not in labelled:
                    _add(corpus, name, "test", None, videos, where=f"{adir / test_list}: line {number}")
    if not corpus.entries and not corpus.problems:
        raise InputError(f"{adir}: no annotation files found in {', '.join(AFFWILD2_SPLITS)}")
    return corpus


def _add(corpus: Corpus, name: str, split: str, ann: Path | None, videos: dict[str, Path],
         where: str | None = None) -> None:
    problem = name_problem(name)
    if problem:  # the name becomes a file name in every cache folder
        corpus.problems.append({"entry": name, "file": where or (str(ann) if ann else None),
                                "error": f"entry name {name!r} cannot be a cache file name: {problem}"})
        return
    stem, side = _split_side(name, videos)
    if stem not in videos:
        corpus.problems.append({"entry": name, "file": str(ann) if ann else None,
                                "error": f"no video named {stem!r} under the videos folder"})
        return
    corpus.entries.append(Entry(name=name, video=videos[stem], split=split, annotation=ann, side=side,
                                source=_relative(videos[stem], corpus.root)))


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:  # outside the corpus root (a manifest may point anywhere)
        return str(path)


def manifest(path: Path) -> Corpus:
    """Entries from a CSV with columns `video,annotation,split` (and optional `name`, `side`).

    Relative paths are relative to the CSV's folder; `annotation` may be empty for test entries.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: manifest file not found")
    corpus = Corpus(root=path.parent)
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"video", "annotation", "split"} - set(reader.fieldnames or [])
        if missing:
            raise InputError(f"{path}: missing column(s) {', '.join(sorted(missing))}; "
                             "expected header video,annotation,split[,name,side]")
        for line, row in enumerate(reader, start=2):
            split = (row["split"] or "").strip().lower()
            if split not in SPLITS:
                raise InputError(f"{path}: line {line}: split {row['split']!r} is not one of "
                                 f"{', '.join(SPLITS)}")
            video = path.parent / row["video"].strip()
            ann = path.parent / row["annotation"].strip() if (row["annotation"] or "").strip() else None
            side = (row.get("side") or "").strip() or None
            if side not in (None, *SIDES):
                raise InputError(f"{path}: line {line}: side {side!r} is not left or right")
            name = (row.get("name") or "").strip() or (ann.stem if ann else video.stem)
            problem = name_problem(name)
            if problem:
                raise InputError(f"{path}: line {line}: entry name {name!r} cannot be a cache file name: "
                                 f"{problem}")
            if not video.is_file():
                corpus.problems.append({"entry": name, "file": str(video), "error": "video file not found"})
                continue
            corpus.entries.append(Entry(name=name, video=video, split=split, annotation=ann, side=side,
                                        source=_relative(video, corpus.root)))
    names = [e.name for e in corpus.entries]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"{path}: entry names must be unique; repeated: {', '.join(dupes)}")
    return corpus


def align_labels(labels: np.ndarray, n_frames: int, *, tolerance: int,
                 source: Path | str) -> tuple[np.ndarray, int]:
    """Aligns annotation rows to decoded frames.

    Rule (Aff-Wild2's files may differ from the decoded frame count by a few frames): the
    first row is frame 0; extra trailing rows are dropped; missing trailing rows become
    invalid (-5). A difference larger than `tolerance` frames is an error naming the file.
    Returns (aligned (n_frames, 2) float32, rows - frames).
    """
    diff = len(labels) - n_frames
    if abs(diff) > tolerance:
        raise InputError(f"{source}: {len(labels)} label rows for {n_frames} video frames "
                         f"(difference {diff:+d} exceeds the tolerance of {tolerance})")
    out = np.full((n_frames, 2), INVALID, dtype=np.float32)
    k = min(n_frames, len(labels))
    out[:k] = labels[:k]
    return out, diff


def load_labels(entry: Entry, n_frames: int, tolerance: int) -> tuple[np.ndarray, int]:
    """Reads and aligns an entry's labels; an unlabelled entry gets all -5 rows."""
    if entry.annotation is None:
        return np.full((n_frames, 2), INVALID, dtype=np.float32), 0
    return align_labels(read_annotation(entry.annotation), n_frames, tolerance=tolerance,
                        source=entry.annotation)


def load_corpus(params) -> Corpus:
    """The corpus that params' `corpus` section points at (paths relative to the params file)."""
    c = params.corpus
    if c.layout == "affwild2":
        return affwild2(params.path(c.root))
    return manifest(params.path(c.manifest))


def fingerprint(entry: Entry) -> dict:
    """What identifies an entry's inputs: sha256 of its video and annotation files."""
    def sha(path: Path | None) -> str | None:
        if path is None or not path.is_file():
            return None  # a missing file is reported when the entry is processed
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    return {"name": entry.name, "side": entry.side, "split": entry.split,
            "video_sha256": sha(entry.video), "annotation_sha256": sha(entry.annotation)}
