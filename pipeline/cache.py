"""The HDF5 cache: one file per entry and stage, written atomically. Layout: docs/cache.md.

Each stage (faces, audio, embed) writes a folder of `<entry>.h5` files, one per annotated
person in a video. Per-entry files make every commit atomic: a file is written under a
temporary name and renamed into place only when complete, so a crash or SIGKILL leaves
either the whole entry or nothing, and a re-run resumes with the entries still missing.
One process writes a stage's folder; readers open files lazily and never share handles.

Every file carries its provenance as root attributes: schema, stage, entry, the stage's
config (JSON) and its hash, package versions, and the stage's own facts (fps, backbone...),
and the sha256 of its content, recorded when it is written (`content_sha256`): a cache's
fingerprint (`folder_fingerprint`) is built from those without re-reading the data, and
`jmt cache verify` recomputes them to catch a file edited afterwards.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipeline import __version__
from pipeline.errors import InputError

# Each stage's layout version (a file records `jmt.<stage>/<version>`): readers refuse another one
# with a message saying which stage to re-run. faces 2: labels moved to their own stage; embed 2:
# one feature array and mask per stream (`streams/<name>/...`), no labels; transcribe: the words
# heard, with their times (the text streams' input).
SCHEMAS = {"faces": 2, "audio": 1, "labels": 1, "transcribe": 1, "embed": 2}
REPORT = "report.json"
CONTENT_HASH = "content_sha256"  # root attribute: content_hash() of the file, recorded by write_entry
_TMP = ".tmp-"
_HASH_BLOCK = 1 << 24  # bytes of a dataset hashed at a time: memory stays flat on long videos


def config_hash(config: dict[str, Any]) -> str:
    """A short stable hash of a JSON-able config: what decides whether an entry is stale."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def versions() -> dict[str, str]:
    """Versions of the packages whose behaviour shapes the cached numbers."""
    out = {"jmt": __version__, "python": platform.python_version()}
    for pkg in ("torch", "torchaudio", "torchvision", "facenet-pytorch", "timm", "h5py", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def name_problem(name: str) -> str | None:
    """Why an entry name cannot be a file name inside a cache folder, or None when it can.

    Entry names come from others' files (annotation file names, manifest rows, test lists) and
    become `<folder>/<name>.h5`: a `/`, a `\\`, `..`, a leading `.` (hidden and temporary files)
    or a control character could put a file outside the folder or over another one."""
    if not isinstance(name, str) or not name.strip():
        return "it is empty"
    if name.startswith("."):
        return "it starts with '.'"
    bad = sorted({c for c in name if c in "/\\" or ord(c) < 32 or ord(c) == 127})
    if bad:
        return f"it holds {', '.join(repr(c) for c in bad)}"
    return None


def entry_path(folder: Path, name: str) -> Path:
    """Where an entry's file lives in a stage folder (an InputError for a name that would lead
    outside it: `name_problem`)."""
    problem = name_problem(name)
    if problem:
        raise InputError(f"entry name {name!r} cannot be a cache file name: {problem}")
    return Path(folder) / f"{name}.h5"


@contextmanager
def write_entry(folder: Path, name: str, *, stage: str, config: dict[str, Any],
                attrs: dict[str, Any], hash_: str | None = None) -> Iterator[h5py.File]:
    """Opens a new entry file for writing; it appears under its real name only on success.

    Root attributes get the provenance (schema, stage, entry, config JSON, versions), the
    hash that decides staleness (`hash_`, default: the config's hash) and `attrs`.
    Datasets are written by the caller inside the `with` block; when it ends, the file's
    content hash (`content_hash`) is recorded as the `content_sha256` attribute.
    """
    folder = Path(folder)
    final = entry_path(folder, name)  # checks the name before anything is created
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{_TMP}{os.getpid()}-{name}.h5"
    try:
        with h5py.File(tmp, "w", libver="latest") as f:
            f.attrs["schema"] = schema(stage)
            f.attrs["stage"] = stage
            f.attrs["entry"] = name
            f.attrs["config"] = json.dumps(config, sort_keys=True, default=str)
            f.attrs["config_hash"] = hash_ or config_hash(config)
            f.attrs["versions"] = json.dumps(versions(), sort_keys=True)
            for key, value in attrs.items():
                f.attrs[key] = _attr(value)
            yield f
            f.attrs[CONTENT_HASH] = content_hash(f)
        with open(tmp, "rb") as fh:  # make the bytes durable before the rename publishes them
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def schema(stage: str) -> str:
    """The schema string a stage's files carry now, e.g. `jmt.embed/2`."""
    return f"jmt.{stage}/{SCHEMAS[stage]}"


def check_schema(f: h5py.File, stage: str) -> None:
    """InputError naming the file when it is not a current file of `stage` (another stage's, or
    written by an older jmt with another layout)."""
    got = f.attrs.get("schema")
    got = got.decode() if isinstance(got, bytes) else got
    if got != schema(stage):
        what = f"a {f.attrs.get('stage')!r} file" if f.attrs.get("stage") != stage else "an older layout"
        raise InputError(f"{f.filename}: {what} ({got!r}), not {schema(stage)!r}; re-run `jmt {stage}`")


def content_hash(f: h5py.File) -> str:
    """sha256 of an entry file's content: every root attribute except `content_sha256`, then
    every dataset's name, dtype, shape and values, in name order (values as stored, so the
    hash does not depend on chunking or compression; variable-length rows with their lengths).
    Reads every byte of data: `folder_fingerprint` uses the recorded hash instead."""
    h = hashlib.sha256()
    for key in sorted(f.attrs):
        if key != CONTENT_HASH:
            h.update(json.dumps([key, _plain(f.attrs[key])], sort_keys=True).encode() + b"\n")
    names: list[str] = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    for name in sorted(names):
        _hash_dataset(h, name, f[name])
    return h.hexdigest()


def _plain(value: Any) -> Any:
    """An attribute value as JSON-able Python (how it reads back from the file)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return [value.dtype.str, value.tolist()]
    if isinstance(value, np.generic):
        return [value.dtype.str, value.item()]
    return value


def _hash_dataset(h: Any, name: str, ds: h5py.Dataset) -> None:
    h.update(json.dumps([name, ds.dtype.str, list(ds.shape)]).encode() + b"\n")
    if ds.shape == () or ds.size == 0:
        if ds.shape == ():
            h.update(np.asarray(ds[()]).tobytes())
        return
    vlen = h5py.check_vlen_dtype(ds.dtype) is not None
    row_bytes = max(1, int(np.prod(ds.shape[1:], dtype=np.int64)) * ds.dtype.itemsize)
    step = 4096 if vlen else max(1, _HASH_BLOCK // row_bytes)
    for start in range(0, ds.shape[0], step):
        block = ds[start:start + step]
        if vlen:  # (rows,) object array of 1-D arrays: length, then bytes, per row
            for row in block:
                row = np.ascontiguousarray(row)
                h.update(np.int64(row.nbytes).tobytes())
                h.update(row.tobytes())
        else:
            h.update(np.ascontiguousarray(block).data)


def recorded_hash(f: h5py.File) -> str | None:
    """The content hash recorded when the file was written (None: written before hashes were)."""
    value = f.attrs.get(CONTENT_HASH)
    return value.decode() if isinstance(value, bytes) else value


def folder_fingerprint(folder: Path) -> str:
    """sha256 over a stage folder's entries: each name and content hash, in name order.

    Reads one attribute per file: the hash recorded at write time. Entries written before
    hashes were recorded are hashed from their data instead (slow on a large cache; re-running
    the stage records them). A file edited by hand after it was written keeps its old recorded
    hash: `jmt cache verify` recomputes every hash and reports such a file."""
    folder = Path(folder)
    h = hashlib.sha256()
    for name in entries(folder):
        with open_entry(entry_path(folder, name)) as f:
            digest = recorded_hash(f) or content_hash(f)
        h.update(f"{name}\0{digest}\n".encode())
    return h.hexdigest()


def _attr(value: Any) -> Any:
    if value is None:
        return "null"
    if isinstance(value, (dict, list, tuple)) and not _is_numeric_seq(value):
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, Path):
        return str(value)
    return value


def _is_numeric_seq(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value)


def remove_partial(folder: Path) -> int:
    """Deletes temporary files left by a killed writer; returns how many."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    stale = list(folder.glob(f"{_TMP}*.h5"))
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def is_current(folder: Path, name: str, expected_hash: str) -> bool:
    """True when the entry's file exists, opens, and was made with the expected config."""
    path = entry_path(folder, name)
    if not path.is_file():
        return False
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("config_hash") == expected_hash
    except OSError:
        return False  # unreadable: it will be rebuilt


def attrs_of(f: h5py.File) -> dict[str, Any]:
    """Root attributes as plain Python values, JSON strings decoded."""
    out = {}
    for key, value in f.attrs.items():
        if isinstance(value, bytes):
            value = value.decode()
        if isinstance(value, str) and value[:1] in "{[" or value == "null":
            try:
                value = json.loads(value)
            except ValueError:
                pass
        elif isinstance(value, np.generic):
            value = value.item()
        elif isinstance(value, np.ndarray):
            value = value.tolist()
        out[key] = value
    return out


def open_entry(path: Path) -> h5py.File:
    """Opens an entry file read-only, with an error naming it when that fails."""
    try:
        return h5py.File(path, "r")
    except (OSError, FileNotFoundError) as exc:
        raise InputError(f"{path}: cannot open cache file ({exc})") from None


def entries(folder: Path) -> list[str]:
    """Names of the complete entries in a stage folder, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.h5") if not p.name.startswith(_TMP))


def write_report(folder: Path, report: dict[str, Any]) -> Path:
    """Writes a stage's JSON report next to its entry files (atomically)."""
    path = Path(folder) / REPORT
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=1, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------------------
# The per-stage layouts. (name -> (dtype, trailing shape)); the first axis is frames except
# for `logmel` (spectrogram frames). docs/cache.md explains every field; `jmt cache verify`
# checks files against these.
JPEG = h5py.vlen_dtype(np.uint8)
LAYOUTS: dict[str, dict[str, tuple[Any, tuple]]] = {
    "faces": {
        "crops_jpeg": (JPEG, ()),             # aligned crop, JPEG bytes; empty where not found
        "found": (np.bool_, ()),
        "detected": (np.bool_, ()),           # MTCNN ran on this frame (else interpolated)
        "scores": (np.float32, ()),
        "boxes": (np.float32, (4,)),          # x0, y0, x1, y1 frame px; NaN where not found
        "landmarks": (np.float32, (5, 2)),    # eyes, nose, mouth corners; NaN where not found
        "timestamps": (np.float64, ()),       # presentation time, s
    },
    "audio": {
        "logmel": (np.float32, None),         # (spectrogram frames, n_mels), natural log
        "frame_end": (np.int64, ()),          # spectrogram frame index where a video frame's window ends
        "audio_valid": (np.bool_, ()),        # the window lies inside a real audio track
        "energy_db": (np.float32, ()),        # RMS level of the samples during the frame, dBFS
        "vad_prob": (np.float32, ()),         # voice activity score in [0, 1] (silero-vad / voicing)
        "voice": (np.bool_, ()),              # voice present (audio.mask), always inside the track
        "timestamps": (np.float64, ()),
    },
    "embed": {                                # + STREAM's two datasets per stream
        "timestamps": (np.float64, ()),
    },
    "labels": {},                             # LABEL's dataset per task the entry has
}
# Per stream of an embeddings file (root attribute `streams`: their order and provenance):
STREAM: dict[str, tuple[Any, tuple | None]] = {
    "features": (np.float16, None),           # streams/<name>/features: (frames, D)
    "mask": (np.bool_, ()),                   # streams/<name>/mask: True where the stream is present
}
# Per task of a labels file (root attribute `tasks`: each one's split and source):
LABEL: tuple[Any, None] = (np.float32, None)  # labels/<task>: (frames, the task's values)


def stream_key(stream: str, what: str) -> str:
    """The dataset of one stream in an embeddings file: `streams/<stream>/<what>` (features | mask)."""
    return f"streams/{stream}/{what}"


def label_key(task: str) -> str:
    """The dataset of one task in a labels file: `labels/<task>`."""
    return f"labels/{task}"


# How the per-frame feature matrices (embed's `streams/<name>/features`: (frames, D) float16) are
# stored: contiguous and unfiltered, so the values lie at one byte offset in the file and stage
# 2 reads a training window as one pread (pipeline/stage2/data.py). gzip saved little on float16
# embeddings and made every window decompress whole chunks (docs/cache.md, "Reading windows").
FEATURES: dict[str, Any] = {"chunks": None, "compression": None}


# Per-track datasets (first axis: samples or spectrogram frames, not video frames), written
# next to a stage's LAYOUTS datasets: the decoded mono track, int16 x `waveform_scale` (1/32767)
# at the file's `sample_rate`, gzip in 64 Ki-sample chunks (docs/cache.md: size per hour).
TRACKS: dict[str, dict[str, tuple[Any, tuple]]] = {
    "audio": {"waveform": (np.int16, ())},
}


class Appender:
    """Grows a set of per-frame datasets chunk by chunk (streaming: memory stays flat)."""

    def __init__(self, f: h5py.File, layout: dict[str, tuple[Any, tuple]], names: list[str],
                 chunk: int = 1024) -> None:
        self.ds = {}
        for name in names:
            dtype, shape = layout[name]
            self.ds[name] = f.create_dataset(name, (0, *shape), dtype=dtype, maxshape=(None, *shape),
                                             chunks=(chunk, *shape), compression="gzip",
                                             compression_opts=1)

    def append(self, **arrays: np.ndarray) -> None:
        """Appends the same number of rows to every dataset."""
        lengths = {len(a) for a in arrays.values()}
        if len(lengths) != 1 or set(arrays) != set(self.ds):
            raise ValueError(f"append needs equal-length arrays for {sorted(self.ds)}")
        n = lengths.pop()
        for name, arr in arrays.items():
            ds = self.ds[name]
            start = ds.shape[0]
            ds.resize(start + n, axis=0)
            if h5py.check_vlen_dtype(ds.dtype) is None:
                ds[start:] = arr
            else:  # variable-length rows: h5py would try to broadcast equal-length ones
                for i, row in enumerate(arr):
                    ds[start + i] = row

    @property
    def n(self) -> int:
        return next(iter(self.ds.values())).shape[0]


def encode_jpeg(crops: np.ndarray, found: np.ndarray, quality: int) -> np.ndarray:
    """uint8 (n, S, S, 3) crops -> object array of JPEG byte arrays (empty where not found)."""
    from PIL import Image

    out = np.empty(len(crops), dtype=object)
    for i, (crop, ok) in enumerate(zip(crops, found)):
        if not ok:
            out[i] = np.zeros(0, np.uint8)
            continue
        buf = io.BytesIO()
        Image.fromarray(crop).save(buf, format="JPEG", quality=quality)
        out[i] = np.frombuffer(buf.getvalue(), np.uint8)
    return out


def read_crops(f: h5py.File, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Decodes a faces file's crops [start, stop) -> uint8 (n, S, S, 3); zeros where not found."""
    from PIL import Image

    size = int(f.attrs["crop_size"])
    data = f["crops_jpeg"][start:stop]
    out = np.zeros((len(data), size, size, 3), np.uint8)
    for i, raw in enumerate(data):
        if len(raw):
            with Image.open(io.BytesIO(raw.tobytes())) as img:
                out[i] = np.asarray(img.convert("RGB"))
    return out
