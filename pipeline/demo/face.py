"""Renders frames with a real face: the public-domain astronaut photo from scikit-image, showing
the 12 Aff-Wild2 action units.

Each person on screen is the photo's head region, composited with a soft elliptical mask onto a
per-video background, then moved, scaled, rotated, mirrored and lit per video. The face shows
action units at given intensities (0..1, in `AUS` order): `expression_patch` renders them in the
photo's own coordinates (head-patch px, an aligned face), `draw_expression` composites that
patch into a frame (`draw_face`: a face showing a valence and an arousal directly). Arousal
also sets how far the head sways.

Every AU is a deformation of the photo (docs/demo-corpus.md has the table): a backward warp made
of Gaussian displacement bumps at the facial features (brows, lids, cheeks, lips, chin), a
mouth that parts and a jaw that drops (`_mouth_rows`: the lips open onto the photo's own teeth
and a dark mouth cavity), and a little shading where the skin folds (brow furrows, crow's
feet, nasolabial folds, the line of closed lips). The photo smiles with parted lips: the
neutral face (all intensities 0) closes the lips and lowers the mouth corners, so a smile
(AU12) and parted lips (AU25) are there only when rendered.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.ndimage import gaussian_filter

from pipeline.tasks.au import AUS

# Head region of skimage.data.astronaut() (512x512), as x0, y0, x1, y1 pixels.
HEAD_BOX = (140, 10, 310, 215)
# MTCNN (facenet-pytorch 2.6.0) landmarks on the full photo, measured once (p = 1.0):
# left eye, right eye, nose, left mouth corner, right mouth corner; here in head-patch px.
LANDMARKS = np.array([[205.0, 101.7], [246.8, 103.7], [224.7, 129.0],
                      [201.7, 139.2], [245.3, 141.9]]) - np.array(HEAD_BOX[:2], dtype=float)
FACE_CENTER = np.array([85.0, 105.0])  # centre of the soft mask, head-patch px
FACE_AXES = np.array([80.0, 104.0])     # half-widths of the soft mask, head-patch px

# Facial features of the photo, head-patch px (x, y), read off the photo once ("left" is the
# image's left). The mouth: its corners, and the opening of the photo's smile between them
# (top and bottom edge of the teeth; see _mouth_edges).
BROW_INNER = ((73.0, 81.0), (98.0, 82.0))
BROW_OUTER = ((52.0, 81.0), (122.0, 84.0))
EYES = ((63.5, 91.0), (106.0, 93.0))
CHEEKS = ((63.0, 107.0), (106.0, 109.0))
NOSE_WINGS = ((76.0, 121.0), (93.0, 122.0))
MOUTH_CORNERS = ((63.5, 129.8), (105.5, 131.5))
MOUTH_X = (MOUTH_CORNERS[0][0] + MOUTH_CORNERS[1][0]) / 2   # 84.5
MOUTH_HALF = (MOUTH_CORNERS[1][0] - MOUTH_CORNERS[0][0]) / 2  # 21
CHIN = (85.0, 152.0)

# The region the expression can change (rows, cols of the patch).
_ROWS, _COLS = slice(56, 205), slice(26, 146)

# Warp bumps, (centre, sigma (x, y), displacement (dx, dy) at intensity 1), patch px; a pixel
# near the centre shows the photo from `displacement` away, so the feature moves by it.
Bump = tuple[tuple[float, float], tuple[float, float], tuple[float, float]]
_L, _R = 0, 1


def _pair(points, sigma, dl, dr) -> list[Bump]:
    return [(points[_L], sigma, dl), (points[_R], sigma, dr)]


def _shifted(points, dx=0.0, dy=0.0):
    return tuple((x + dx, y + dy) for x, y in points)


BUMPS: dict[str, list[Bump]] = {
    # brows: inner ends up / outer ends up / lowered and drawn together
    "AU1": _pair(BROW_INNER, (6.0, 6.0), (0.0, -5.5), (0.0, -5.5)),
    "AU2": _pair(BROW_OUTER, (6.5, 6.0), (0.0, -5.5), (0.0, -5.5)),
    "AU4": _pair(_shifted(BROW_INNER, dy=1.0), (8.0, 6.0), (2.5, 0.0), (-2.5, 0.0)),   # drawn together...
    # cheeks pushed up (narrowing the eyes from below); lids tightened (lower lid up, upper down)
    "AU6": _pair(CHEEKS, (9.0, 6.0), (0.0, -4.0), (0.0, -4.0)),
    "AU7": (_pair(_shifted(EYES, dy=4.0), (7.0, 2.5), (0.0, -2.8), (0.0, -2.8))
            + _pair(_shifted(EYES, dy=-3.5), (7.0, 2.0), (0.0, 1.3), (0.0, 1.3))),
    # upper lip raised (the closed lips follow it part of the way), nose wings lifted
    "AU10": ([((MOUTH_X, 126.0), (13.0, 7.0), (0.0, -4.0))]
             + _pair(NOSE_WINGS, (3.5, 3.0), (0.0, -1.5), (0.0, -1.5))),
    # lip corners pulled up and out / pulled down
    "AU12": _pair(MOUTH_CORNERS, (7.0, 7.0), (-3.0, -6.0), (3.0, -6.0)),
    "AU15": _pair(MOUTH_CORNERS, (7.0, 7.0), (-0.5, 5.0), (0.5, 5.0)),
    # lips tightened: the mouth narrows (corners in), the lips thin a little (_LIP_THINNING)
    "AU23": _pair(MOUTH_CORNERS, (6.0, 6.0), (3.0, 0.0), (-3.0, 0.0)),
    # lips pressed: they thin (_LIP_THINNING) and the chin pushes up
    "AU24": [(CHIN, (14.0, 8.0), (0.0, -2.5))],
}
# ... and lowered, less so when the inner brows rise too (AU1+4: the oblique brows of grief and
# fear, inner ends up and drawn together): weight AU4 x (1 - _BROWS_1_4 x AU1).
_AU4_LOWER: list[Bump] = _pair(_shifted(BROW_INNER, dy=1.0), (8.0, 6.0), (0.0, 3.5), (0.0, 3.5))
_BROWS_1_4 = 0.8
# The neutral face: the photo's upturned mouth corners lowered (always applied).
_NEUTRALISE: list[Bump] = (_pair(MOUTH_CORNERS, (7.0, 7.0), (1.0, 2.5), (-1.0, 2.5))
                            + _pair(CHEEKS, (10.0, 7.0), (0.0, 2.0), (0.0, 2.0)))
# Lips thinned towards the line where they meet: fraction of the distance to it, per AU.
_LIP_THINNING = {"AU23": 0.15, "AU24": 0.45}
# Mouth: parted lips at AU25 = 1 open by this many px at the centre; the jaw drops this far at AU26 = 1.
LIPS_PART_PX = 7.0
JAW_DROP_PX = 11.0
# A wide-open mouth shows this top fraction of the photo's teeth under the upper lip, the rest
# above the lower lip, and the dark cavity between.
UPPER_TEETH = 0.75
TEETH_SHARE = (0.45, 0.15)  # ... taking at most these shares of the gap (upper, lower)

AU_INDEX = {a: k for k, a in enumerate(AUS)}


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


def _gauss(x: np.ndarray, c: float, s: float) -> np.ndarray:
    return np.exp(-((x - c) ** 2) / (2 * s * s))


def _mouth_edges(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The photo's mouth opening at columns x: its top and bottom edge (y) and the mouth shape
    s in [0, 1] (1 at the centre, 0 at and beyond the corners)."""
    (xl, yl), (xr, yr) = MOUTH_CORNERS
    chord = yl + (yr - yl) * (x - xl) / (xr - xl)
    s = np.clip(1.0 - ((x - MOUTH_X) / MOUTH_HALF) ** 2, 0.0, 1.0)
    margin = 0.5 * s ** 0.3  # past the teeth's edge, so closed lips show no white line
    return chord + 4.2 * s ** 0.6 - margin, chord + 7.9 * s ** 0.5 + margin, s


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _mouth_rows(x: np.ndarray, y: np.ndarray, lips_part: float, jaw: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where the mouth samples the photo: for base points (x, y), the photo row (x is kept), the
    mouth-cavity weight (0..1, darkened) and the closed-lip line weight (0..1, a thin shadow).

    Per column the photo's opening [top, bot] is closed at `mid` and reopened into a gap
    [gap_top, gap_bot] (the lips' share above and below `mid`, plus the jaw's below): above it
    the upper lip moves (fading over ~5 px), below it the lower lip and, with the jaw, the chin
    move (the jaw's pull fading into the neck); inside it the photo's upper teeth show under the
    upper lip, a little of the lower ones above the lower lip, and a dark cavity between."""
    top, bot, s = _mouth_edges(x)
    height = bot - top
    mid = top + 0.45 * height
    shape = s ** 0.6
    gap = LIPS_PART_PX * lips_part * shape
    jaw_x = JAW_DROP_PX * jaw * _gauss(x, MOUTH_X, 30.0)
    gap_top = mid - 0.45 * gap
    gap_bot = mid + 0.55 * gap + jaw_x * shape
    fade_below = np.clip((200.0 - y) / 35.0, 0.0, 1.0)  # the jaw's pull fades into the neck
    upper = y - (gap_top - top) * _gauss(gap_top - y, 0.0, 4.5)
    d = y - gap_bot
    lower = (y - (mid + 0.55 * gap - bot) * _gauss(d, 0.0, 4.5)
             - jaw_x * (shape + (1 - shape) * _smoothstep(d / 14.0)) * fade_below)
    g = np.maximum(gap_bot - gap_top, 1e-6)
    a, b = y - gap_top, gap_bot - y
    # the upper teeth hang from the upper lip, the lower ones show above the lower lip, both at
    # their own size but at most a share of the gap; dark cavity between
    up = np.minimum(UPPER_TEETH * height, TEETH_SHARE[0] * g)
    low = np.minimum((1 - UPPER_TEETH) * height, TEETH_SHARE[1] * g)
    inside = np.where(a < up, top + a, np.where(b < low, bot - b, top + up))
    rows = np.where(y <= gap_top, upper, np.where(y >= gap_bot, lower, inside))
    inner = (y > gap_top) & (y < gap_bot)
    cavity = np.where(inner, np.minimum(_smoothstep((a - up) / 1.2 + 0.5), _smoothstep((b - low) / 1.2 + 0.5)), 0.0)
    closed = np.clip(1.0 - (gap_bot - gap_top) / 2.5, 0.0, 1.0)
    line = _gauss(y, mid, 0.8) * np.sqrt(s) * closed
    return rows, cavity, line


@lru_cache(maxsize=1)
def _shading_masks() -> dict[str, np.ndarray]:
    """Darkening at intensity 1 (fraction of the brightness removed), per AU, over the region:
    skin folds that come with the deformation."""
    yy, xx = np.mgrid[_ROWS, _COLS].astype(np.float32)
    masks = {}

    def line(p0, p1, width, depth):
        """A soft dark line segment from p0 to p1."""
        (x0, y0), (x1, y1) = p0, p1
        vx, vy = x1 - x0, y1 - y0
        t = np.clip(((xx - x0) * vx + (yy - y0) * vy) / (vx * vx + vy * vy), 0, 1)
        dist = np.hypot(xx - (x0 + t * vx), yy - (y0 + t * vy))
        taper = np.sin(np.pi * np.clip(t, 0.02, 0.98)) ** 0.5
        return depth * np.exp(-dist**2 / (2 * width**2)) * taper

    # AU4: two vertical furrows between the brows
    masks["AU4"] = line((82.0, 80.0), (82.5, 91.0), 1.3, 0.13) + line((89.0, 80.5), (88.5, 91.5), 1.3, 0.13)
    # AU6: crow's feet at the outer eye corners
    feet = np.zeros_like(xx)
    for (ex, ey), side in zip(EYES, (-1, 1)):
        cx = ex + side * 12.0
        for dy in (-3.0, 0.5, 4.0):
            feet += line((cx, ey + dy * 0.6), (cx + side * 7.0, ey + dy), 0.6, 0.16)
    masks["AU6"] = feet
    # AU10: the nasolabial folds deepen
    masks["AU10"] = (line((74.0, 119.0), (61.0, 133.0), 1.1, 0.22)
                     + line((95.0, 120.0), (108.0, 135.0), 1.1, 0.22))
    return {k: v.astype(np.float32) for k, v in masks.items()}


def _add_bumps(dx: np.ndarray, dy: np.ndarray, bumps: list[Bump], weight: float,
               y0: int, x0: int) -> None:
    """Adds Gaussian displacement bumps (separable, each within 3 sigma) to fields whose [0, 0]
    is patch pixel (x0, y0)."""
    h, w = dx.shape
    for (cx, cy), (sx, sy), (mx, my) in bumps:
        r0, r1 = max(0, int(cy - 3 * sy) - y0), min(h, int(cy + 3 * sy) + 2 - y0)
        c0, c1 = max(0, int(cx - 3 * sx) - x0), min(w, int(cx + 3 * sx) + 2 - x0)
        if r0 >= r1 or c0 >= c1:
            continue
        g = weight * np.outer(_gauss(np.arange(r0, r1) + y0, cy, sy), _gauss(np.arange(c0, c1) + x0, cx, sx))
        if mx:
            dx[r0:r1, c0:c1] += mx * g
        if my:
            dy[r0:r1, c0:c1] += my * g


def expression_patch(intensities: np.ndarray | None = None) -> np.ndarray:
    """The head patch (float32 RGBA (H, W, 4)) showing the AUs at `intensities` ((12,) in AUS
    order, 0..1; None: the neutral face)."""
    aus = np.zeros(len(AUS)) if intensities is None else np.clip(np.asarray(intensities, float), 0.0, 1.0)
    if not aus.any():
        return _neutral_patch()
    return _render(tuple(float(a) for a in aus))


@lru_cache(maxsize=1)
def _neutral_patch() -> np.ndarray:
    out = _render((0.0,) * len(AUS))
    out.flags.writeable = False
    return out


def _bilinear(image: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Samples an (H, W, C) image at float (rows, cols), bilinear, clamped to its edge pixels."""
    h, w = image.shape[:2]
    r = np.clip(rows, 0.0, h - 1.001)
    c = np.clip(cols, 0.0, w - 1.001)
    r0, c0 = r.astype(np.int32), c.astype(np.int32)
    fr, fc = (r - r0)[..., None], (c - c0)[..., None]
    flat = image.reshape(-1, image.shape[2])
    i = r0 * w + c0
    top = flat[i] * (1 - fc) + flat[i + 1] * fc
    bottom = flat[i + w] * (1 - fc) + flat[i + w + 1] * fc
    return top * (1 - fr) + bottom * fr


_MOUTH_ROW = 108  # rows above this are out of the mouth's reach


def _render(aus: tuple[float, ...]) -> np.ndarray:
    patch = head_patch()
    y0, x0 = _ROWS.start, _COLS.start
    yy, xx = np.mgrid[_ROWS, _COLS].astype(np.float32)
    dx, dy = np.zeros_like(xx), np.zeros_like(xx)
    _add_bumps(dx, dy, _NEUTRALISE, 1.0, y0, x0)
    for name, bumps in BUMPS.items():
        a = aus[AU_INDEX[name]]
        if a > 0:
            _add_bumps(dx, dy, bumps, a, y0, x0)
    lower = aus[AU_INDEX["AU4"]] * (1.0 - _BROWS_1_4 * aus[AU_INDEX["AU1"]])
    if lower > 0:
        _add_bumps(dx, dy, _AU4_LOWER, lower, y0, x0)
    qx, qy = xx - dx, yy - dy  # base point each pixel shows
    m = _MOUTH_ROW - y0
    mx, my = qx[m:], qy[m:]
    # lips thinned towards the line where they meet
    thin = sum(k * aus[AU_INDEX[a]] for a, k in _LIP_THINNING.items())
    if thin > 0:
        top, bot, _ = _mouth_edges(mx)
        mid = top + 0.45 * (bot - top)
        my = my + thin * (my - mid) * _gauss(mx, MOUTH_X, 16.0) * _gauss(my, mid, 7.0)
    rows, cavity, line = _mouth_rows(mx, my, aus[AU_INDEX["AU25"]], aus[AU_INDEX["AU26"]])
    qy = np.concatenate([qy[:m], rows.astype(np.float32)])
    rgb = _bilinear(patch[..., :3], qy, qx)
    shade = np.ones_like(xx)
    shade[m:] -= 0.35 * line
    for name, mask in _shading_masks().items():
        a = aus[AU_INDEX[name]]
        if a > 0:
            shade -= a * mask
    rgb *= shade[..., None]
    if cavity.any():
        dark = np.array([0.30, 0.10, 0.10], np.float32) * (0.6 + 0.4 * patch[_MOUTH_ROW:_ROWS.stop, _COLS, :3].mean(-1, keepdims=True))
        cav = cavity[..., None].astype(np.float32)
        rgb[m:] = rgb[m:] * (1 - cav) + dark * cav
    out = patch.copy()
    out[_ROWS, _COLS, :3] = np.clip(rgb, 0.0, 1.0)
    return out


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


def head_offset(app: Appearance, t: float, arousal: float) -> tuple[float, float]:
    """Head motion in frame px at time t: small sway whose amplitude grows with arousal."""
    amp = 1.0 + 4.0 * (arousal + 1.0) / 2.0
    phase = 2 * np.pi * 1.3 * t + app.motion_phase
    return amp * np.sin(phase), 0.6 * amp * np.sin(1.7 * phase + 1.0)


def face_centre(app: Appearance, t: float, arousal: float,
                shift: tuple[float, float] = (0.0, 0.0)) -> tuple[float, float]:
    """Frame px where the patch's FACE_CENTER lands at time t."""
    ox, oy = head_offset(app, t, arousal)
    return app.center[0] + ox + shift[0], app.center[1] + oy + shift[1]


def frame_to_patch(app: Appearance, centre: tuple[float, float], xx: np.ndarray,
                   yy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frame px -> head-patch px (the inverse similarity transform: rotation about the face
    centre, scale, mirror)."""
    th = np.deg2rad(app.rotation_deg)
    dx, dy = (xx - centre[0]) / app.scale, (yy - centre[1]) / app.scale
    u = np.cos(th) * dx + np.sin(th) * dy
    v = -np.sin(th) * dx + np.cos(th) * dy
    if app.mirror:
        u = -u
    return u + FACE_CENTER[0], v + FACE_CENTER[1]


def patch_to_frame(app: Appearance, centre: tuple[float, float], u: np.ndarray,
                   v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Head-patch px -> frame px (the inverse of `frame_to_patch`)."""
    th = np.deg2rad(app.rotation_deg)
    u, v = u - FACE_CENTER[0], v - FACE_CENTER[1]
    if app.mirror:
        u = -u
    dx = np.cos(th) * u - np.sin(th) * v
    dy = np.sin(th) * u + np.cos(th) * v
    return centre[0] + app.scale * dx, centre[1] + app.scale * dy


def valence_arousal_aus(valence: float, arousal: float) -> np.ndarray:
    """AU intensities that show a valence and an arousal directly, for callers without
    expressions (`draw_face`): lip corners up (AU12) for positive valence, down (AU15) for
    negative, brows raised (AU1 + AU2) for positive arousal."""
    aus = np.zeros(len(AUS))
    aus[AU_INDEX["AU12"]], aus[AU_INDEX["AU15"]] = max(valence, 0.0), max(-valence, 0.0)
    aus[AU_INDEX["AU1"]] = aus[AU_INDEX["AU2"]] = max(arousal, 0.0)
    return aus


def draw_face(frame: np.ndarray, app: Appearance, valence: float, arousal: float,
              t: float, shift: tuple[float, float] = (0.0, 0.0)) -> None:
    """Composites a face showing a valence and an arousal (`valence_arousal_aus`) into `frame`
    (float32 (H, W, 3), modified in place). The demo generator draws expressions instead
    (`draw_expression`); this draws test videos and reference inputs (tests/stage1, scripts/)."""
    aus = valence_arousal_aus(valence, arousal)
    draw_expression(frame, app, expression_patch(aus) if aus.any() else None, arousal, t, shift)


def draw_expression(frame: np.ndarray, app: Appearance, patch: np.ndarray | None, arousal: float,
                    t: float, shift: tuple[float, float] = (0.0, 0.0)) -> None:
    """Composites one person's face into `frame` (float32 (H, W, 3), modified in place):
    `patch` from `expression_patch` (None: the neutral face), the head swaying with arousal."""
    patch = _neutral_patch() if patch is None else patch
    cx, cy = face_centre(app, t, arousal, shift)
    # Only the frame pixels the face ellipse can reach need work.
    reach = app.scale * FACE_AXES.max() + 2
    h, w = frame.shape[:2]
    x0, x1 = int(max(0, cx - reach)), int(min(w, cx + reach + 1))
    y0, y1 = int(max(0, cy - reach)), int(min(h, cy + reach + 1))
    if x0 >= x1 or y0 >= y1:
        return  # entirely out of frame
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    u, v = frame_to_patch(app, (cx, cy), xx, yy)
    inside = ((u - FACE_CENTER[0]) / FACE_AXES[0]) ** 2 + ((v - FACE_CENTER[1]) / FACE_AXES[1]) ** 2 < 1.0
    if not inside.any():
        return
    u, v = u[inside], v[inside]
    rgba = _bilinear(patch, v, u)  # (k, 4)
    light = np.asarray(app.gain, dtype=np.float32) * (
        1.0 + app.gradient * (u - FACE_CENTER[0]) / FACE_AXES[0])[..., None]
    rgb, alpha = np.clip(rgba[..., :3] * light, 0, 1), rgba[..., 3:4]
    region = frame[y0:y1, x0:x1]
    region[inside] = region[inside] * (1 - alpha) + rgb * alpha


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
