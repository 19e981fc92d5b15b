"""Shared by the live tests: the trained checkpoint with live-like stage-1 params, a live run's
lines, and videos made from the tiny demo (a phone's rotated copy, damaged copies)."""

import json
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.infer.live import run_live

from ..conftest import one_thread, trained  # noqa: F401  (the trained JMT checkpoint, one thread)

# stage 1 done the way live does it: every frame detected, one frame per batch, no gap filling
LIVE_LIKE = {"faces": {"detect_every": 1, "batch_size": 1}, "embed": {"batch_size": 1}, "audio": {"fill_gaps_s": 0.0}}


@pytest.fixture(scope="module")
def live_ckpt(trained, tmp_path_factory):
    """The trained checkpoint with LIVE_LIKE stage-1 params."""
    ckpt = torch.load(trained.path(trained.train.out), weights_only=True)
    for section, values in LIVE_LIKE.items():
        ckpt["params"][section] = {**ckpt["params"][section], **values}
    path = tmp_path_factory.mktemp("live") / "model.pt"
    torch.save(ckpt, path)
    return path


def live_lines(ckpt_path, source, out_path, **kw):
    with open(out_path, "w") as out:
        summary = run_live(str(source), ckpt_path, out, **kw)
    return [json.loads(line) for line in out_path.read_text().splitlines()], summary


def outputs_of(lines, task="va"):
    """(n, width) outputs; NaN where the line's task field is null (nothing present)."""
    width = max((len(line[task]) for line in lines if line.get(task)), default=0)
    return np.array([list(line[task].values()) if line.get(task) else [np.nan] * width for line in lines],
                    np.float32)


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def set_display_matrix(src: Path, dst: Path, a: int, b: int, c: int, d: int) -> None:
    """A copy of an mp4 whose video track's display matrix (tkhd) is [a b; c d] (in units, the
    translation set to keep the picture in view): a flip, which ffmpeg 5.1 cannot write itself."""
    data = bytearray(src.read_bytes())
    found, i = 0, 0
    while (i := data.find(b"tkhd", i + 1)) >= 0:
        version = data[i + 4]
        at = i + 8 + (32 if version == 1 else 20) + 16   # the matrix: after times, ids, layer, volume
        w, h = (v >> 16 for v in struct.unpack(">II", data[at + 36:at + 44]))
        if not w:
            continue   # the audio track
        tx, ty = (w if a < 0 else 0) + (h if c < 0 else 0), (h if d < 0 else 0) + (w if b < 0 else 0)
        data[at:at + 36] = struct.pack(">9i", a << 16, b << 16, 0, c << 16, d << 16, 0, tx << 16, ty << 16, 1 << 30)
        found += 1
    assert found == 1
    dst.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def made(tiny_corpus, tmp_path_factory):
    """Videos made from demo_00 (320x240, 15 fps, 4 s): `rotated` (a phone's: the pixels stored
    turned clockwise, 240x320, with the display matrix ffmpeg writes for rotate=90 turning them
    back), `reencoded` (the same encode, unturned: the codec noise), `mirrored` (stored
    mirrored, a display matrix mirroring back), `truncated` (a faststart copy cut at 60 % of its
    bytes), `corrupt` (4 KB in its middle overwritten with 0x55), `sparse` (an AVI whose index
    lists 56 frames but holds 12), `blank` (1 s, no face, silence), `short` (the first second)."""
    src = tiny_corpus / "videos/batch1/demo_00.mp4"
    out = tmp_path_factory.mktemp("made")
    v = {name: out / f"{name}.mp4" for name in ("rotated", "reencoded", "mirrored", "truncated", "corrupt",
                                                "blank", "short")}
    turned = out / "turned.mp4"
    ffmpeg("-i", str(src), "-vf", "transpose=clock", "-c:a", "copy", str(turned))
    # re-encoding drops the tag in ffmpeg 5.1; a stream copy writes it (as a display matrix)
    ffmpeg("-i", str(turned), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(v["rotated"]))
    ffmpeg("-i", str(src), "-c:a", "copy", str(v["reencoded"]))
    flipped = out / "flipped.mp4"
    ffmpeg("-i", str(src), "-vf", "hflip", "-c:a", "copy", str(flipped))
    set_display_matrix(flipped, v["mirrored"], -1, 0, 0, 1)
    fast = out / "fast.mp4"
    ffmpeg("-i", str(src), "-c", "copy", "-movflags", "+faststart", str(fast))
    data = fast.read_bytes()
    v["truncated"].write_bytes(data[: len(data) * 6 // 10])
    mid = len(data) // 2
    v["corrupt"].write_bytes(data[:mid] + b"\x55" * 4096 + data[mid + 4096:])
    v["sparse"] = out / "sparse.avi"
    ffmpeg("-i", str(src), "-vf", r"select=not(mod(n\,5))", "-fps_mode", "passthrough", "-c:v", "mpeg4", "-an",
           str(v["sparse"]))
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:s=320x240:r=15", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono",
           "-t", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(v["blank"]))
    ffmpeg("-i", str(src), "-t", "1", str(v["short"]))
    return v
