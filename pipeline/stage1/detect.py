"""Face detection (facenet-pytorch MTCNN) and tracking of the annotated person.

Optimised path: detect on every k-th frame ("keyframes"), in batches, on frames scaled down
so the longer side is at most `max_side`; between two keyframes where the same face was
found, boxes and landmarks are interpolated; where it was not (a face appears, vanishes or
jumps), the frames in between are detected too. The simple path is k = 1, batch 1, full size.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Face:
    """One chosen face in one frame (frame pixels)."""

    box: np.ndarray        # (4,) x0, y0, x1, y1
    landmarks: np.ndarray  # (5, 2) eyes, nose, mouth corners
    prob: float
    detected: bool         # False: interpolated between keyframes


@dataclass(frozen=True)
class Detections:
    """All faces MTCNN found in one frame."""

    boxes: np.ndarray      # (m, 4) float32
    probs: np.ndarray      # (m,)
    landmarks: np.ndarray  # (m, 5, 2)


EMPTY = Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))


class Detector:
    """Batched MTCNN at reduced resolution; coordinates returned in full-frame pixels."""

    def __init__(self, *, device: torch.device, max_side: int | None, min_face_size: int = 20) -> None:
        from facenet_pytorch import MTCNN  # weights ship inside the wheel: works offline

        # MTCNN's second and third nets see a different number of candidate faces in every
        # batch; oneDNN caches a conv primitive per input shape (1024 by default), so memory
        # grew with video length (+25 % for a 10x longer video). A small cache keeps it flat
        # at no measured speed cost. Read when the first conv runs, so set it before that.
        os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "32")

        self.device, self.max_side = device, max_side
        self.mtcnn = MTCNN(keep_all=True, device=device, min_face_size=min_face_size)
        self.frames_detected = 0

    def __call__(self, frames: np.ndarray) -> list[Detections]:
        """frames: uint8 (B, H, W, 3). Returns one Detections per frame."""
        if len(frames) == 0:
            return []
        h, w = frames.shape[1:3]
        scale = 1.0
        if self.max_side and max(h, w) > self.max_side:
            scale = self.max_side / max(h, w)
            t = torch.as_tensor(frames, device=self.device).permute(0, 3, 1, 2).float()
            t = F.interpolate(t, size=(round(h * scale), round(w * scale)), mode="bilinear",
                              antialias=True, align_corners=False)
            frames = t.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        boxes, probs, marks = self.mtcnn.detect(frames, landmarks=True)
        self.frames_detected += len(frames)
        out = []
        for b, p, m in zip(boxes, probs, marks):
            if b is None:
                out.append(EMPTY)
                continue
            out.append(Detections(np.asarray(b, np.float32).reshape(-1, 4) / scale,
                                  np.asarray(p, np.float32).reshape(-1),
                                  np.asarray(m, np.float32).reshape(-1, 5, 2) / scale))
        return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two x0, y0, x1, y1 boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


class PersonTrack:
    """Chooses the annotated person's face among a frame's detections.

    One person (side None): the face overlapping the last chosen one, else the largest.
    Two people (side 'left'/'right'): the face overlapping the last chosen one, else the
    leftmost/rightmost confident face, and a lone face only if it is on that half of the frame.
    """

    def __init__(self, side: str | None, width: int, min_prob: float) -> None:
        self.side, self.width, self.min_prob = side, width, min_prob
        self.last: np.ndarray | None = None

    def choose(self, det: Detections, *, detected: bool = True) -> Face | None:
        ok = np.flatnonzero(det.probs >= self.min_prob)
        if len(ok) == 0:
            return None
        pick = None
        if self.last is not None:
            overlaps = [iou(det.boxes[j], self.last) for j in ok]
            if max(overlaps) >= 0.3:
                pick = int(ok[int(np.argmax(overlaps))])
        if pick is None:
            centres = (det.boxes[ok, 0] + det.boxes[ok, 2]) / 2
            if self.side is None:
                areas = (det.boxes[ok, 2] - det.boxes[ok, 0]) * (det.boxes[ok, 3] - det.boxes[ok, 1])
                pick = int(ok[int(np.argmax(areas))])
            else:
                j = int(np.argmin(centres) if self.side == "left" else np.argmax(centres))
                on_half = centres[j] < self.width / 2 if self.side == "left" else centres[j] >= self.width / 2
                if len(ok) == 1 and not on_half:
                    return None
                pick = int(ok[j])
        self.last = det.boxes[pick]
        return Face(det.boxes[pick], det.landmarks[pick], float(det.probs[pick]), detected)


def _interpolate(a: Face, b: Face, frac: float) -> Face:
    return Face(a.box + frac * (b.box - a.box), a.landmarks + frac * (b.landmarks - a.landmarks),
                min(a.prob, b.prob), detected=False)


def track(batches: Iterator[np.ndarray], detector: Detector, tracks: list[PersonTrack],
          every: int) -> Iterator[tuple[np.ndarray, list[list[Face | None]]]]:
    """Streams (frames (b, H, W, 3), faces[b][person]) in order, detecting every `every` frames.

    At most a batch plus `every - 1` frames are held in memory.
    """
    index, pending = 0, []   # pending: frames after the last keyframe, waiting for the next
    last_key: list[Face | None] | None = None
    for batch in batches:
        keys = [j for j in range(len(batch)) if (index + j) % every == 0]
        dets = dict(zip(keys, detector(batch[keys]))) if keys else {}
        out_frames: list[np.ndarray] = []
        out_faces: list[list[Face | None]] = []
        for j, frame in enumerate(batch):
            if j not in dets:
                pending.append(frame)
                continue
            here = [t.choose(dets[j]) for t in tracks]
            if pending:
                out_frames += pending
                out_faces += _fill_gap(pending, last_key, here, detector, tracks)
                pending = []
            out_frames.append(frame)
            out_faces.append(here)
            last_key = here
        index += len(batch)
        if out_frames:
            yield np.stack(out_frames), out_faces
    if pending:  # the tail after the last keyframe: detect it directly
        frames = np.stack(pending)
        yield frames, [[t.choose(d) for t in tracks] for d in detector(frames)]


def _fill_gap(frames: list[np.ndarray], before: list[Face | None], after: list[Face | None],
              detector: Detector, tracks: list[PersonTrack]) -> list[list[Face | None]]:
    n = len(frames)
    result: list[list[Face | None]] = [[None] * len(tracks) for _ in range(n)]
    need = []
    for p in range(len(tracks)):
        a, b = before[p], after[p]
        if a is not None and b is not None and iou(a.box, b.box) >= 0.3:
            for i in range(n):
                result[i][p] = _interpolate(a, b, (i + 1) / (n + 1))
        else:
            need.append(p)
    if need:  # the face appeared, vanished or jumped between keyframes: look at every frame
        saved = [tracks[p].last for p in need]
        for p, box in zip(need, saved):
            tracks[p].last = before[p].box if before[p] is not None else None
        dets = detector(np.stack(frames))
        for i, det in enumerate(dets):
            for p in need:
                result[i][p] = tracks[p].choose(det)
        for p, box in zip(need, saved):  # continue from the keyframe just chosen
            tracks[p].last = box
    return result
