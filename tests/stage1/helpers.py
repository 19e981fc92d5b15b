"""Helpers for stage-1 tests: params files pointing at a corpus, and small real videos."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import h5py
import numpy as np
import yaml

from pipeline import cache
from pipeline.config import load_params
from pipeline.demo import face, voice
from pipeline.media import VideoWriter, write_wav
from pipeline.tasks import TASKS

from ..conftest import REPO


def write_params(folder: Path, corpus_root: Path, **sections) -> Path:
    """A params.yaml in `folder` reading `corpus_root`, caches under folder/cache/.

    `sections` override keys, e.g. faces={"detect_every": 1}.
    """
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["corpus"]["root"] = str(corpus_root)
    for stage, sub in (("faces", "faces"), ("audio", "audio"), ("labels", "labels"), ("embed", "embeddings")):
        data[stage]["out"] = f"cache/{sub}"
    for section, values in sections.items():
        for key, value in values.items():
            target = data[section]
            *parents, last = key.split(".")
            for p in parents:
                target = target[p]
            target[last] = value
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def params_at(folder: Path, corpus_root: Path, **sections):
    return load_params(write_params(folder, corpus_root, **sections))


def make_video(path: Path, *, seconds: float = 1.0, fps: float = 10.0, with_face: bool = True,
               with_audio: bool = True, size: tuple[int, int] = (160, 120), seed: int = 0) -> int:
    """Writes a small real H.264(+AAC) video; returns its frame count."""
    rng = np.random.default_rng(seed)
    w, h = size
    n = int(round(seconds * fps))
    path.parent.mkdir(parents=True, exist_ok=True)
    wav = None
    if with_audio:
        wav = path.with_suffix(".wav")
        audio = voice.synthesize(np.zeros(n), np.zeros(n), np.full(n, 150.0), fps, 16000, rng)
        write_wav(wav, audio, 16000)
    look = face.Appearance(center=(w / 2, h / 2), scale=0.5 * h / 120, rotation_deg=0.0, mirror=False,
                           gain=(1.0, 1.0, 1.0), gradient=0.0, motion_phase=0.0)
    bg = face.background(rng, h, w)
    with VideoWriter(path, w, h, fps, audio_wav=wav) as writer:
        for i in range(n):
            frame = bg.copy()
            if with_face:
                face.draw_face(frame, look, 0.0, 0.0, i / fps)
            writer.write((frame * 255).astype(np.uint8))
    if wav:
        wav.unlink()
    return n


def write_labels(path: Path, n: int, *, value: float = 0.1, task: str = "va") -> None:
    """An annotation file of `task` with n frames, every value `value` (va), class `value` (expr)
    or every AU `value` (au)."""
    t = TASKS.get(task)()
    t.write_annotation(path, np.full((n, t.values), value))


def datasets(f: h5py.File) -> dict:
    """Every dataset of a file by its path (`streams/visual/features`...): variable-length rows as bytes."""
    names: list[str] = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return {k: ([bytes(x) for x in f[k][...]] if h5py.check_vlen_dtype(f[k].dtype) else f[k][...])
            for k in sorted(names)}


def contents(folder):
    """file name -> (root attributes, datasets)."""
    out = {}
    for path in sorted(folder.glob("*.h5")):
        with h5py.File(path) as f:
            out[path.name] = (cache.attrs_of(f), datasets(f))
    return out


def stamps(folder) -> dict:
    """file name -> (mtime_ns, inode, size) of every file in a folder: unchanged means not rewritten."""
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_ino, p.stat().st_size) for p in sorted(folder.glob("*.h5"))}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for name in a:
        (attrs_a, data_a), (attrs_b, data_b) = a[name], b[name]
        assert attrs_a == attrs_b, name
        assert data_a.keys() == data_b.keys(), name
        for k in data_a:
            if isinstance(data_a[k], list):
                assert data_a[k] == data_b[k], (name, k)
            else:
                np.testing.assert_array_equal(data_a[k], data_b[k], err_msg=f"{name}/{k}")


# How to turn the stored pixels so that the display matrix of `phone_copy` shows them upright:
# ffmpeg 5.1 writes the tag rotate=R as a display matrix turning the picture R degrees
# counter-clockwise, so the pixels are stored turned R degrees clockwise.
_STORE_TURNED = {0: [], 90: ["transpose=clock"], 180: ["hflip", "vflip"], 270: ["transpose=cclock"]}


def phone_copy(src: Path, dst: Path, rotate: int, *, mirror: bool = False) -> Path:
    """`src` re-encoded the way a phone stores a clip: the pixels turned `rotate` degrees
    clockwise (and mirrored first with `mirror`), plus a display matrix (the mp4's track
    header) that shows them upright again. Any player, and jmt, should show `src`'s picture."""
    filters = (["hflip"] if mirror else []) + _STORE_TURNED[rotate]
    stored = dst.with_name(f".stored-{dst.name}")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-noautorotate", "-i", str(src),
                    *(["-vf", ",".join(filters)] if filters else []), "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    "-c:a", "copy", str(stored)], check=True)
    # the tag is written as a display matrix only when the stream is copied, not encoded
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(stored), "-c", "copy",
                    "-metadata:s:v:0", f"rotate={rotate}", str(dst)], check=True)
    stored.unlink()
    if mirror:   # no ffmpeg option writes a flip: negate the matrix's first column in the tkhd box
        data = bytearray(dst.read_bytes())
        i = data.index(b"tkhd")
        at = i + (56 if data[i + 4] == 1 else 44)   # version 1 has 64-bit times
        m = list(struct.unpack(">9i", data[at:at + 36]))
        m[0], m[3], m[6] = -m[0], -m[3], -m[6]
        data[at:at + 36] = struct.pack(">9i", *m)
        dst.write_bytes(bytes(data))
    return dst
