"""Per-frame features other tools wrote (a `files` stream): read one entry's file, align it to
the entry's frames.

A file is read whole into a `Table`: the chosen columns' values per row, and what each row says
about itself (its frame number or time, whether the tool tracked a face there). Formats:
- CSV with a header row (names stripped of the spaces some OpenFace builds put before them;
  `numeric_header` where the names are pandas' column numbers); columns chosen
  by name (`columns`) or by a regular expression over whole names (`regex`). An empty cell reads
  as missing (NaN: pandas' `to_csv` writes py-feat's faceless frames so).
- .npy (n, D) and an HDF5 dataset (n, D): row i is frame i (no per-row fields).
Then `align` gives each of the entry's n frames one row:
- index: the frame number (`frame_column` minus `first_frame`; without one, the row's order);
- timestamp: the row nearest in time to the frame's timestamp, if within `tolerance_s` (half a
  frame by default): variable frame rates and files at another rate line up by time.
A frame is masked when no row falls on it, its row has `success` 0, or its confidence is below
`min_confidence` (or missing); a masked frame's features are zeros. Rows of frames outside the
video are dropped; several rows on one frame (several faces) keep the most confident (without a
confidence column that is an error). A file whose frame count (index) or last time (timestamp)
differs from the video's by more than `count_tolerance` frames is an error: another video's file.
NaN or inf in a usable row, a cell that is not a number, a missing column, a missing header: an
InputError naming the file, the line and the column. Nothing in a file is executed: CSV is parsed
as text, .npy with `allow_pickle=False`, HDF5 through h5py's datasets.
"""

from __future__ import annotations

import csv
import re
import string
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from pipeline.config import FilesParams
from pipeline.corpus.entries import CorpusEntry
from pipeline.errors import InputError, JmtError

# Each preset's values for the keys of FilesParams a user leaves unset (docs/pipeline.md and
# tests/fixtures/features/README.md: where each layout was read).
PRESETS: dict[str, dict] = {
    # OpenFace 2.2 FeatureExtraction (one row per frame, 1-based `frame`, `success` 0 where tracking
    # failed): the 17 AU intensities (_r, 0-5), the 18 presences (_c), the gaze angles and the head
    # rotation (radians); not the landmarks, the head translation or the shape parameters.
    "openface": {"format": "csv", "regex": r"AU\d\d_[rc]|gaze_angle_[xy]|pose_R[xyz]", "align": "index",
                 "frame_column": "frame", "first_frame": 1, "time_column": "timestamp",
                 "confidence_column": "confidence", "success_column": "success", "min_confidence": 0.5},
    # py-feat's Fex CSV (2.x and 0.6; with or without pandas' index column): the 20 AU probabilities
    # and the 7 emotion probabilities; 0-based `frame`, one row per face (a faceless frame: one row
    # of empty cells, FaceScore 0 or empty).
    "pyfeat": {"format": "csv", "regex": r"AU\d\d|anger|disgust|fear|happiness|sadness|surprise|neutral",
               "align": "index", "frame_column": "frame", "first_frame": 0, "confidence_column": "FaceScore",
               "min_confidence": 0.5},
    # The JMT authors' `<video>.wavlmpooled` CSVs: pandas' header 0..767, then row r = frame r + 1
    # (their loader); all 768 columns, as their training code feeds them (their converter keeps
    # the first 512: `regex` in docs/pipeline.md).
    "wavlm": {"format": "csv", "numeric_header": True, "align": "index"},
}
DEFAULTS = {"align": "index", "first_frame": 0, "min_confidence": 0.5}
PLACEHOLDERS = ("video", "entry", "folder")   # what a per-entry path pattern may name
FORMATS = {".csv": "csv", ".npy": "npy", ".h5": "h5", ".hdf5": "h5"}


def check_pattern(pattern: str, key: str) -> None:
    """JmtError naming `key` when a per-entry path pattern names an unknown placeholder."""
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None}
    except ValueError as exc:
        raise JmtError(f"{key} {pattern!r}: {exc}") from None
    unknown = sorted(fields - set(PLACEHOLDERS))
    if unknown:
        raise JmtError(f"{key} {pattern!r}: unknown placeholder {{{unknown[0]}}} "
                       f"(known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)})")


def fill(pattern: str, entry: CorpusEntry) -> str:
    """A per-entry path pattern with the entry's video stem, name and folder (its video's
    folder under the corpus root) filled in."""
    folder = Path(entry.source).parent.as_posix() if entry.source else ""
    return pattern.format(video=Path(entry.video).stem, entry=entry.name, folder=folder)


def resolve(files: FilesParams) -> FilesParams:
    """The stream's settings with the preset's values (then DEFAULTS) in the keys left unset."""
    fill = {**DEFAULTS, **PRESETS.get(files.preset or "", {})}
    if files.columns is not None or files.regex is not None:   # the user's own choice of columns
        fill.pop("regex", None)
    return replace_unset(files, fill)


def replace_unset(files: FilesParams, fill: dict) -> FilesParams:
    return files.model_copy(update={k: v for k, v in fill.items() if getattr(files, k) is None})


@dataclass(frozen=True)
class Table:
    """One file's rows: the chosen columns' values and each row's own fields."""

    values: np.ndarray              # float64 (r, D), NaN where a cell was empty
    columns: tuple[str, ...]        # the D columns' names (npy, HDF5: "0", "1", ...)
    lines: np.ndarray               # int64 (r,): the row's line in the file (CSV, 1 = header) or its index
    frame: np.ndarray | None        # float64 (r,): frame_column
    time: np.ndarray | None         # float64 (r,): time_column, seconds
    confidence: np.ndarray | None   # float64 (r,): confidence_column
    success: np.ndarray | None      # float64 (r,): success_column
    where: str                      # "line" (CSV) or "row" (npy, HDF5): what `lines` count, for messages


def read_table(path: Path, files: FilesParams) -> Table:
    """Reads one feature file (`files` resolved) -> Table; InputError naming the file otherwise."""
    if not path.is_file():
        raise InputError(f"{path}: feature file not found")
    kind = files.format or FORMATS.get(path.suffix.lower())
    if kind is None:
        raise InputError(f"{path}: cannot tell the format from the suffix; set format: csv | npy | h5")
    if kind == "csv":
        return _read_csv(path, files)
    if files.columns or files.regex or files.frame_column or files.time_column or files.confidence_column \
            or files.success_column:
        raise InputError(f"{path}: columns, regex and the *_column keys are CSV keys; a {kind} file's rows are frames")
    if kind == "npy":
        try:
            values = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise InputError(f"{path}: not a numeric .npy array ({str(exc).splitlines()[0][:120]})") from None
    else:
        if not files.dataset:
            raise InputError(f"{path}: an HDF5 feature file needs `dataset:` (the path of its (n, D) dataset)")
        try:
            with h5py.File(path, "r") as f:
                node = f.get(files.dataset)
                if not isinstance(node, h5py.Dataset):
                    raise InputError(f"{path}: no dataset {files.dataset!r} (it holds {', '.join(sorted(f)) or 'nothing'})")
                values = node[()]
        except OSError as exc:
            raise InputError(f"{path}: not an HDF5 file ({str(exc).splitlines()[0][:120]})") from None
    return _array_table(path, values)


def _array_table(path: Path, values: np.ndarray) -> Table:
    if values.ndim != 2 or not (np.issubdtype(values.dtype, np.floating) or np.issubdtype(values.dtype, np.integer)):
        raise InputError(f"{path}: expected a numeric (frames, features) array, found {values.dtype} {values.shape}")
    values = values.astype(np.float64)
    return Table(values, tuple(str(j) for j in range(values.shape[1])), np.arange(len(values)), None, None,
                 None, None, "row")


def _read_csv(path: Path, files: FilesParams) -> Table:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:   # -sig: a BOM is not part of the first name
            reader = csv.reader(fh)
            header = next(reader, None)
            rows, lines = [], []
            for row in reader:
                if row:   # a blank line (often the last) is no row
                    rows.append(row)
                    lines.append(reader.line_num)
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a text CSV file (byte {exc.start} is not UTF-8)") from None
    except csv.Error as exc:
        raise InputError(f"{path}: not a CSV file ({exc})") from None
    if header is None:
        raise InputError(f"{path}: empty file (a header row of column names was expected)")
    names = [h.strip() for h in header]
    if not files.numeric_header and all(_is_number(h) for h in names if h):
        raise InputError(f"{path}, line 1: no header row (the first line holds numbers; if they are pandas' "
                         "column numbers, set numeric_header: true)")
    for row, line in zip(rows, lines):
        if len(row) != len(names):
            raise InputError(f"{path}, line {line}: {len(row)} cells, the header has {len(names)}")

    def index(name: str | None) -> int | None:
        if name is None:
            return None
        if name not in names:
            raise InputError(f"{path}, line 1: no column {name!r} (columns: {_listed(names)})")
        return names.index(name)

    if files.columns is not None:
        chosen = [index(c) for c in files.columns]
    elif files.regex is not None:
        pattern = re.compile(files.regex)
        chosen = [j for j, n in enumerate(names) if pattern.fullmatch(n)]
        if not chosen:
            raise InputError(f"{path}, line 1: no column matches {files.regex!r} (columns: {_listed(names)})")
    else:   # every named column but the row's own fields
        own = {files.frame_column, files.time_column, files.confidence_column, files.success_column}
        chosen = [j for j, n in enumerate(names) if n and n not in own]
    lines_arr = np.asarray(lines, np.int64)

    def column(j: int | None) -> np.ndarray | None:
        return None if j is None else _numbers(path, names[j], [r[j] for r in rows], lines_arr)

    values = np.stack([column(j) for j in chosen], 1) if rows else np.zeros((0, len(chosen)))
    return Table(values, tuple(names[j] for j in chosen), lines_arr, column(index(files.frame_column)),
                 column(index(files.time_column)), column(index(files.confidence_column)),
                 column(index(files.success_column)), "line")


def _numbers(path: Path, name: str, cells: list[str], lines: np.ndarray) -> np.ndarray:
    """One column's cells -> float64; an empty cell is NaN; InputError at the first non-number."""
    try:
        return np.array([c if c.strip() else "nan" for c in cells]).astype(np.float64)
    except ValueError:
        bad = next(i for i, c in enumerate(cells) if c.strip() and not _is_number(c))
        raise InputError(f"{path}, line {lines[bad]}, column {name!r}: {cells[bad].strip()!r} is not a number") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _listed(names: list[str], most: int = 12) -> str:
    shown = ", ".join(n for n in names[:most] if n)
    return shown + (f", ... ({len(names)} in all)" if len(names) > most else "")


@dataclass(frozen=True)
class Aligned:
    """A file's features on the entry's frames."""

    features: np.ndarray   # float32 (n, D), zeros where masked
    mask: np.ndarray       # bool (n,): the frame has a usable row
    stats: dict            # rows read, rows used, frames masked, rows dropped


def usable_rows(table: Table, files: FilesParams) -> np.ndarray:
    """bool (r,): the row's tool tracked a face there (success not 0, confidence >= min_confidence)."""
    ok = np.ones(len(table.lines), bool)
    if table.success is not None:
        ok &= np.nan_to_num(table.success, nan=0.0) != 0
    if table.confidence is not None:
        ok &= np.nan_to_num(table.confidence, nan=-np.inf) >= float(files.min_confidence or 0.0)
    return ok


def align(path: Path, table: Table, files: FilesParams, timestamps: np.ndarray, fps: float) -> Aligned:
    """The table's rows on the n frames at `timestamps` (seconds; module docstring for the rules)."""
    n, r = len(timestamps), len(table.lines)
    ok = usable_rows(table, files)
    bad = ok[:, None] & ~np.isfinite(table.values)
    if bad.any():
        i, j = map(int, np.argwhere(bad)[0])
        raise InputError(f"{path}, {table.where} {table.lines[i]}, column {table.columns[j]!r}: "
                         f"{table.values[i, j]} (NaN/inf in a usable row)")
    if files.align == "timestamp":
        frame, distance = _by_time(path, table, files, np.asarray(timestamps, np.float64), fps)
    else:
        frame, distance = _by_index(path, table, files, n), None
    inside = (frame >= 0) & (frame < n)
    keep = _one_per_frame(path, table, frame, ok & inside, distance)   # row indices, one per frame
    features = np.zeros((n, table.values.shape[1]), np.float32)
    mask = np.zeros(n, bool)
    features[frame[keep]] = table.values[keep]
    mask[frame[keep]] = True
    stats = {"rows": r, "rows_used": int(len(keep)), "rows_outside": int((~inside).sum()),
             "frames_masked": int(n - mask.sum())}
    return Aligned(features, mask, stats)


def _by_index(path: Path, table: Table, files: FilesParams, n: int) -> np.ndarray:
    """Each row's frame index (int64 (r,)): frame_column - first_frame, or the row's order."""
    if table.frame is None:
        frame = np.arange(len(table.lines), dtype=np.int64)
        count = len(frame)
    else:
        whole = np.isfinite(table.frame) & (table.frame == np.round(table.frame))
        if not whole.all():
            i = int(np.flatnonzero(~whole)[0])
            raise InputError(f"{path}, line {table.lines[i]}, column {files.frame_column!r}: "
                             f"{table.frame[i]} is not a frame number")
        frame = table.frame.astype(np.int64) - int(files.first_frame or 0)
        count = int(frame.max()) + 1 if len(frame) else 0
    if abs(count - n) > files.count_tolerance:
        raise InputError(f"{path}: {count} frames, the video has {n} (more than count_tolerance "
                         f"{files.count_tolerance} apart: another video's file, or another frame rate?)")
    return frame


def _by_time(path: Path, table: Table, files: FilesParams, times: np.ndarray,
             fps: float) -> tuple[np.ndarray, np.ndarray]:
    """Each row's frame index (int64 (r,), -1: no frame), the frame whose timestamp is nearest if
    within tolerance_s, and its distance to it (float64 (r,) s): a frame then takes
    (`_one_per_frame`) the usable row nearest to it."""
    if table.time is None:
        raise InputError(f"{path}: align: timestamp needs a time_column")
    finite = np.isfinite(table.time)
    if not finite.all():
        i = int(np.flatnonzero(~finite)[0])
        raise InputError(f"{path}, line {table.lines[i]}, column {files.time_column!r}: {table.time[i]} is not a time")
    if len(times) and len(table.time):
        gap = abs(float(table.time.max()) - float(times[-1]))
        if gap > files.count_tolerance / fps:
            raise InputError(f"{path}: its last row is at {table.time.max():.3f} s, the video's last frame at "
                             f"{times[-1]:.3f} s (more than count_tolerance {files.count_tolerance} frames "
                             "apart: another video's file?)")
    tolerance = files.tolerance_s if files.tolerance_s is not None else 0.5 / fps
    if not len(times):
        return np.full(len(table.time), -1, np.int64), np.zeros(len(table.time))
    after = np.clip(np.searchsorted(times, table.time), 0, len(times) - 1)   # frame times are increasing
    before = np.maximum(after - 1, 0)
    nearest = np.where(np.abs(times[before] - table.time) <= np.abs(times[after] - table.time), before, after)
    distance = np.abs(times[nearest] - table.time)
    return np.where(distance <= tolerance + 1e-9, nearest, -1).astype(np.int64), distance


def _one_per_frame(path: Path, table: Table, frame: np.ndarray, candidate: np.ndarray,
                   distance: np.ndarray | None) -> np.ndarray:
    """Row indices (sorted by frame) keeping one usable row per frame: the most confident, then
    the nearest in time (align: timestamp), then the first; by index, several rows on a frame
    and no confidence column to choose: an error."""
    rows = np.flatnonzero(candidate)
    if not len(rows):
        return rows
    frames = frame[rows]
    conf = table.confidence[rows] if table.confidence is not None else np.zeros(len(rows))
    dist = distance[rows] if distance is not None else np.zeros(len(rows))
    order = np.lexsort((rows, dist, -conf, frames))   # by frame, then confidence (high first), nearness
    rows, frames = rows[order], frames[order]
    first = np.r_[True, frames[1:] != frames[:-1]]
    if table.confidence is None and distance is None and not first.all():
        i = int(np.flatnonzero(~first)[0])
        raise InputError(f"{path}, {table.where}s {table.lines[rows[i - 1]]} and {table.lines[rows[i]]}: two rows "
                         f"for frame {frames[i]} and no confidence column to choose between them")
    return rows[first]
