"""`files`: a stream of per-frame features another tool already wrote (OpenFace, py-feat, the JMT
authors' WavLM CSVs, a team's own .npy per video), read instead of computed.

A stream's `files:` params say where each entry's file is (`path`, with `{video}`, `{entry}` and
`{folder}` filled in) and how to read and align it (`pipeline.stage1.feature_files`: formats,
presets, alignment, masks, errors). Its mask is its own: a frame is present where the file has a
usable row for it. There are no weights; what identifies the features is how they are chosen
(format, preset, columns, dataset), held in a buffer so that `weights_sha256` (and through it
the checkpoints' check of a cache's streams) tells two column choices apart. The file's bytes
are hashed into each entry's cache hash (`embed`), so an edited file is read again.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.config import BackboneParams, FilesParams
from pipeline.corpus.entries import CorpusEntry
from pipeline.errors import JmtError
from pipeline.stage1 import feature_files
from pipeline.stage1.backbones import BACKBONES

IDENTITY = ("preset", "format", "columns", "regex", "dataset")   # what the features are; not where, nor alignment


@dataclass(frozen=True)
class StreamFiles:
    """One entry's features from its file."""

    features: np.ndarray   # float32 (n, D), zeros where masked
    mask: np.ndarray       # bool (n,)
    provenance: dict       # file, sha256, columns and the alignment's counts (recorded in the cache)


class FilesBackbone(torch.nn.Module):
    """Reads each entry's features from its file (module docstring)."""

    input = "files"
    options = ("files",)

    def __init__(self, files: FilesParams, root: Path) -> None:
        super().__init__()
        feature_files.check_pattern(files.path, "files.path")
        self.files, self.root = feature_files.resolve(files), Path(root)
        identity = json.dumps({k: getattr(self.files, k) for k in IDENTITY}, sort_keys=True).encode()
        self.register_buffer("identity", torch.frombuffer(bytearray(identity), dtype=torch.uint8))
        self.dim = len(self.files.columns) if self.files.columns else None   # else: known once a file is read

    def path_for(self, entry: CorpusEntry) -> Path:
        """The entry's feature file: `path` with the entry's video stem, name and folder."""
        path = Path(feature_files.fill(self.files.path, entry))
        return path if path.is_absolute() else self.root / path

    def file_hash(self, entry: CorpusEntry) -> str:
        """sha256 of the entry's file ("missing" when there is none): part of the entry's cache hash."""
        path = self.path_for(entry)
        if not path.is_file():
            return "missing"
        st = path.stat()
        return _sha256(str(path.resolve()), st.st_size, st.st_mtime_ns)

    def read(self, entry: CorpusEntry, timestamps: np.ndarray, fps: float) -> StreamFiles:
        """The entry's features on its frames (`timestamps`, seconds, from the faces cache)."""
        path = self.path_for(entry)
        table = feature_files.read_table(path, self.files)
        aligned = feature_files.align(path, table, self.files, timestamps, fps)
        if self.dim is not None and aligned.features.shape[1] != self.dim:
            raise JmtError(f"{path}: {aligned.features.shape[1]} columns, the stream has {self.dim}")
        try:
            shown = path.resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            shown = str(path)
        provenance = {"file": shown, "sha256": self.file_hash(entry), "columns": list(table.columns),
                      **aligned.stats}
        return StreamFiles(aligned.features, aligned.mask, provenance)

    def forward(self, *args):   # a files stream is read, not run (`read`)
        raise JmtError("a files backbone reads its features from files (FilesBackbone.read), it has no forward pass")


@functools.lru_cache(maxsize=8192)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """A file's sha256, remembered while its size and modification time stay the same."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@BACKBONES.register("files")
def files(params: BackboneParams, root: Path) -> FilesBackbone:
    """Per-frame features read from one file per entry (CSV, .npy, HDF5; presets openface, pyfeat, wavlm)."""
    if params.pretrained or params.checkpoint or params.allow_random:
        raise JmtError("files has no weights: leave pretrained/checkpoint/allow_random unset")
    if params.files is None:
        raise JmtError("name: files needs `files:` (at least `path:`, with {video} or {entry}); "
                       "see docs/pipeline.md, \"Streams from other tools\"")
    return FilesBackbone(params.files, root)
