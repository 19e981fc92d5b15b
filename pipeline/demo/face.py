"""Renders frames with a real face: the public-domain astronaut photo from scikit-image.

Each person on screen is the photo's head region, composited with a soft elliptical mask
onto a per-video background, then moved, scaled, rotated, mirrored and lit per video.
The expression carries the labels:
- valence (main visual cue): the mouth corners move up (smile) or down (frown);
- arousal (weaker visual cue): brows and upper lids rise, and the head moves more.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.ndimage import gaussian_filter, map_coordinates

# Head region of skimage.data.astronaut() (512x512), as x0, y0, x1, y1 pixels.
HEAD_BOX = (140, 10, 310, 215)
# MTCNN (facenet-pytorch 2.6.0) landmarks on the full photo, measured once (p = 1.0):
# left eye, right eye, nose, left mouth corner, right mouth corner; here in head-patch px.
LANDMARKS = np.array([[205.0, 101.7], [246.8, 103.7], [224.7, 129.0],
                      [201.7, 139.2], [245.3, 141.9]]) - np.array(HEAD_BOX[:2], dtype=float)
FACE_CENTER = np.array([85.0, 105.0])  # centre of the soft mask, head-patch px
FACE_AXES = np.array([80.0, 104.0])     # half-widths of the soft mask, head-patch px

# Expression bumps: (centre, sigma, displacement per unit of the driving label), patch px.
# Positive valence lifts and widens the mouth corners; positive arousal lifts brows/lids.
_MOUTH_L, _MOUTH_R = LANDMARKS[3], LANDMARKS[4]
_EYE_L, _EYE_R = LANDMARKS[0], LANDMARKS[1]
_VALENCE_BUMPS = [
    (_MOUTH_L, 7.5, np.array([-2.5, -8.0])),
    (_MOUTH_R, 7.5, np.array([2.5, -8.0])),
    ((_MOUTH_L + _MOUTH_R) / 2 + [0, 4.0], 5.0, np.array([0.0, 2.0])),
]
_AROUSAL_BUMPS = [
    (_EYE_L + [0, -11.0], 8.0, np.array([0.0, -3.5])),
    (_EYE_R + [0, -11.0], 8.0, np.array([0.0, -3.5])),
    (_EYE_L + [0, -3.0], 4.0, np.array([0.0, -1.5])),
    (_EYE_R + [0, -3.0], 4.0, np.array([0.0, -1.5])),
]


@lru_cache(maxsize=1)
def head_patch() -> np.ndarray:
    """The head region as float32 RGBA (H, W, 4) in [0, 1], alpha a soft ellipse."""
    from skimage import data  # the photo ships inside scikit-image's wheel

    x0, y0, x1, y1 = HEAD_BOX
    rgb = data.astronaut()[y0:y1, x0:x1].astype(np.float32) / 255.0  # (205, 170, 3)
    yy, xx = np.mgrid[0:rgb.shape[0], 0:rgb.shape[1]].astype(np.float32)
    r = np.hypot((xx - FACE_CENTER[0]) / FACE_AXES[0], (yy - FACE_CENTER[1]) / FACE_AXES[1])
    alpha = np.clip((1.0 - r) / 0.15, 0.0, 1.0)  # feathered edge over the outer 15 %
    return np.dstack([rgb, alpha]).astype(np.float32)


@dataclass(frozen=True)
class Appearance:
    """How one person looks in one video (constant over the video)."""

    center: tuple[float, float]  # frame px of the face centre
    scale: float                 # frame px per patch px
    rotation_deg: float
    mirror: bool
    gain: tuple[float, float, float]  # per-channel lighting gain
    gradient: float              # left-right lighting ramp across the face
    motion_phase: float          # head-motion phase (radians)

    @staticmethod
    def sample(rng: np.random.Generator, center: tuple[float, float], scale: float) -> Appearance:
        """Random variation around a centre and scale."""
        return Appearance(
            center=(center[0] + rng.uniform(-12, 12), center[1] + rng.uniform(-8, 8)),
            scale=scale * rng.uniform(0.9, 1.1),
            rotation_deg=rng.uniform(-10, 10),
            mirror=bool(rng.integers(2)),
            gain=tuple(float(g) for g in rng.uniform(0.75, 1.15) * rng.uniform(0.9, 1.1, 3)),
            gradient=rng.uniform(-0.3, 0.3),
            motion_phase=rng.uniform(0, 2 * np.pi),
        )


def background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A per-video background: a colour gradient with soft blotches, float32 (H, W, 3)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    c0, c1 = rng.uniform(0.1, 0.9, 3), rng.uniform(0.1, 0.9, 3)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx / width + np.sin(angle) * yy / height + 1) / 2
    img = c0 + (c1 - c0) * ramp[..., None]
    blotches = gaussian_filter(rng.standard_normal((height, width, 3)), sigma=(12, 12, 0))
    img = img + 0.5 * blotches / (np.abs(blotches).max() + 1e-8) * 0.3
    return np.clip(img, 0, 1).astype(np.float32)


def _displacement(u: np.ndarray, v: np.ndarray, valence: float, arousal: float) -> tuple:
    """Expression displacement (dx, dy) in patch px at patch coordinates (u, v)."""
    dx = np.zeros_like(u)
    dy = np.zeros_like(u)
    for bumps, label in ((_VALENCE_BUMPS, valence), (_AROUSAL_BUMPS, arousal)):
        for centre, sigma, shift in bumps:
            w = np.exp(-((u - centre[0]) ** 2 + (v - centre[1]) ** 2) / (2 * sigma**2)) * label
            dx += w * shift[0]
            dy += w * shift[1]
    return dx, dy


def head_offset(app: Appearance, t: float, arousal: float) -> tuple[float, float]:
    """Head motion in frame px at time t: small sway whose amplitude grows with arousal."""
    amp = 1.0 + 4.0 * (arousal + 1.0) / 2.0
    phase = 2 * np.pi * 1.3 * t + app.motion_phase
    return amp * np.sin(phase), 0.6 * amp * np.sin(1.7 * phase + 1.0)


def draw_face(frame: np.ndarray, app: Appearance, valence: float, arousal: float,
              t: float, shift: tuple[float, float] = (0.0, 0.0)) -> None:
    """Composites one person's face into `frame` (float32 (H, W, 3), modified in place)."""
    patch = head_patch()
    ph, pw = patch.shape[:2]
    ox, oy = head_offset(app, t, arousal)
    cx, cy = app.center[0] + ox + shift[0], app.center[1] + oy + shift[1]
    # Only the frame pixels the patch can reach need work.
    reach = app.scale * np.hypot(ph, pw) / 2 + 2
    h, w = frame.shape[:2]
    x0, x1 = int(max(0, cx - reach)), int(min(w, cx + reach + 1))
    y0, y1 = int(max(0, cy - reach)), int(min(h, cy + reach + 1))
    if x0 >= x1 or y0 >= y1:
        return  # entirely out of frame
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    # Inverse similarity transform: frame px -> patch px (rotation about the face centre).
    th = np.deg2rad(app.rotation_deg)
    dx, dy = (xx - cx) / app.scale, (yy - cy) / app.scale
    u = np.cos(th) * dx + np.sin(th) * dy
    v = -np.sin(th) * dx + np.cos(th) * dy
    if app.mirror:
        u = -u
    u, v = u + FACE_CENTER[0], v + FACE_CENTER[1]
    # Backward warp: sample the photo where the expression moved this pixel from.
    ddx, ddy = _displacement(u, v, valence, arousal)
    coords = np.stack([v - ddy, u - ddx])  # (2, h', w') as (row, col)
    rgba = np.stack([map_coordinates(patch[..., c], coords, order=1, cval=0.0)
                     for c in range(4)], axis=-1)  # (h', w', 4)
    light = np.asarray(app.gain, dtype=np.float32) * (
        1.0 + app.gradient * (u - FACE_CENTER[0]) / FACE_AXES[0])[..., None]
    rgb, alpha = np.clip(rgba[..., :3] * light, 0, 1), rgba[..., 3:4]
    region = frame[y0:y1, x0:x1]
    region[...] = region * (1 - alpha) + rgb * alpha


def face_box(app: Appearance, shift: tuple[float, float] = (0.0, 0.0)) -> tuple[int, int, int, int]:
    """Approximate frame-px box (x0, y0, x1, y1) of the face, for occluders."""
    half = FACE_AXES * app.scale * 0.85
    cx, cy = app.center[0] + shift[0], app.center[1] + shift[1]
    return (int(cx - half[0]), int(cy - half[1]), int(cx + half[0]), int(cy + half[1]))


def draw_occluder(frame: np.ndarray, box: tuple[int, int, int, int], colour: np.ndarray,
                  margin: int = 14) -> None:
    """Covers a face box with an opaque textured block (a hand, a cup, a microphone...)."""
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = box
    x0, y0 = max(0, x0 - margin), max(0, y0 - margin)
    x1, y1 = min(w, x1 + margin), min(h, y1 + margin)
    stripes = 0.08 * np.sin(np.arange(y1 - y0) / 3.0)[:, None, None]
    frame[y0:y1, x0:x1] = np.clip(colour + stripes, 0, 1)
