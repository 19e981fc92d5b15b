"""Face clips for the clip backbones (R(2+1)D-18): for every frame t, K crops ending at t.

The rule (the JMT authors' clip sampler, datasets/dataset_new.py in
PoloWlg/Joint-Multimodal-Transformer-6th-ABAW, made per frame): frame t looks back over the
window of `K * stride` frames ending at t (the authors: 32 frames, K = 8, stride 4), clipped at
the video's first frame. Of the frames in that window, only those with a face count ("found";
the authors' lists hold only frames with a crop). With m of them:

- m >= K: every r-th face counted back from the most recent, r = min(stride, m // K), the K most
  recent of those, oldest first. A full window gives the authors' 8 of the last 32 (r = 4); a
  window with 24-31 faces steps by 3, 16-23 by 2, 8-15 takes the last 8 faces (as theirs).
- 0 < m < K: the m faces, oldest first, then the most recent one repeated up to K (as theirs).
- m = 0: no face in the window: every slot is -1 (a black crop; the authors drop such a clip).

So a video's start and a face gap follow one rule: the window holds fewer faces, the step
shrinks, and a clip never reaches outside its window or into a frame without a face. A clip's
frame t need not have a face itself (the clip then ends at the last face before t); the stream's
mask is still "a face at t", as for every crops stream.

Reading is batched: the clips of frames [start, stop) need the crops [start - K * stride + 1,
stop) only, so memory is bounded by (batch + window) crops whatever the video's length.
"""

from __future__ import annotations

import h5py
import numpy as np

from pipeline import cache


def clip_indices(found: np.ndarray, k: int, stride: int, start: int = 0, stop: int | None = None) -> np.ndarray:
    """The frames of each clip of frames [start, stop) (default: all), int64 (n, k), oldest first;
    -1 marks a slot without a face (the window holds none). `found` bool (N,): a face per frame."""
    found = np.asarray(found, bool)
    stop = len(found) if stop is None else stop
    faces = np.flatnonzero(found)                      # frames with a face, ascending
    out = np.full((max(stop - start, 0), k), -1, np.int64)
    span = k * stride
    for i, t in enumerate(range(start, stop)):
        lo = np.searchsorted(faces, t - span + 1, "left")
        hi = np.searchsorted(faces, t, "right")
        avail = faces[lo:hi]                           # faces in the window, ascending
        m = len(avail)
        if m >= k:
            r = min(stride, m // k)
            out[i] = avail[::-1][::r][:k][::-1]
        elif m:
            out[i, :m] = avail
            out[i, m:] = avail[-1]
    return out


def read_clips(f: h5py.File, start: int, stop: int, k: int, stride: int, found: np.ndarray | None = None
               ) -> np.ndarray:
    """The clips of frames [start, stop) of a faces cache file -> uint8 (n, k, S, S, 3), zeros
    where a slot has no face. Decodes only the crops those clips use (bounded memory). `found`:
    the file's `found` mask when the caller holds it (read from the file otherwise)."""
    idx = clip_indices(f["found"][...] if found is None else found, k, stride, start, stop)   # (n, k)
    size = int(f.attrs["crop_size"])
    clips = np.zeros((*idx.shape, size, size, 3), np.uint8)
    used = idx[idx >= 0]
    if len(used):
        lo = int(used.min())
        crops = cache.read_crops(f, lo, stop)                         # (stop - lo, S, S, 3)
        clips[idx >= 0] = crops[used - lo]
    return clips
