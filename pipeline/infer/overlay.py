"""`jmt predict VIDEO --overlay OUT.mp4`: the video with the model's outputs drawn beside each frame.

Each decoded frame (`media.iter_frames` at the video's size: the frames stage 1 saw, whose
`boxes` are in the faces cache) is kept untouched but for the face box, and a panel to its right
shows, one column per task the model has (headed by its `title`, as wide as its `panel_width`,
in the order of the tasks' kinds, pipeline.tasks.KINDS), drawn as its `kind` says:

- dimensional (va): the plane of its two axes (the first on x, the second on y, the unit circle:
  the circumplex), the current point and a trace of the last `trace_s` seconds fading into the
  background, the two values in figures;
- categorical (expr): one bar per class, its probability, the most probable class highlighted
  (and written above the face box);
- multilabel (au): one bar per label, its probability, the ones at or above the task's
  `threshold` (0.5) highlighted, a tick at the threshold.

A side panel rather than panels over the picture: the face is never covered (Aff-Wild2 has
two-person videos with faces at either edge), the text sits on a plain background whatever the
scene, and the panel scales with the frame height (a 240-pixel-high design), so it reads the
same at 320x240 as at 1280x720. The price: the output is wider than the input (its height is the
same; a frame under 240 px high or of odd size is padded).

ffmpeg encodes H.264 from raw RGB on a pipe at the input's frame rate, one output frame per
decoded frame (`-vsync passthrough`), and muxes the input's first audio track as AAC when it
has one. A variable-frame-rate input comes out at its average rate (a raw pipe carries no
timestamps), so its frames keep their order and count but may move by part of a frame; the
largest shift is returned and noted on the console beyond half a frame. Outputs that are NaN (a
frame where no stream is present: predict blanks them) draw no point and highlight no class.
"""
from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import ffmpeg
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipeline.console import console, progress
from pipeline.errors import InputError, JmtError
from pipeline.media import iter_frames, probe_video, require_ffmpeg
from pipeline.tasks import KINDS, TASKS, Task

DESIGN_HEIGHT = 240                      # px; the panel's layout at this height, scaled by H / 240
NO_TASK = ("no task", 124)               # the one column's title and design width without a task
BG, LINE, TEXT, DIM = (22, 24, 30), (88, 92, 104), (228, 228, 232), (140, 144, 156)
TRACE, POINT, BAR, HIGHLIGHT, BOX = (255, 160, 60), (255, 110, 40), (86, 136, 214), (255, 204, 64), (70, 230, 120)


@dataclass
class Overlay:
    """What `write_overlay` wrote."""

    path: Path
    frames: int                # frames written (= frames decoded from the input)
    width: int
    height: int
    rate: str                  # the frame rate given to the encoder, as ffprobe wrote the input's
    audio: bool                # the input's audio track was muxed
    max_shift: float           # s: largest distance of a frame from its input time (VFR inputs)


@lru_cache(maxsize=None)
def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    """DejaVu Sans from matplotlib's data (a dependency already; the same glyphs on every machine)."""
    import matplotlib

    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name), max(6, size))


class Panel:
    """The side panel for one video: static parts drawn once, the per-frame ones by `draw`."""

    def __init__(self, height: int, tasks: list[str]) -> None:
        """A panel `height` px high with a column for each of `tasks` (registered task names), in
        the order of their kinds (KINDS)."""
        self.u = height / DESIGN_HEIGHT
        order = sorted(dict.fromkeys(tasks), key=lambda t: KINDS.index(TASKS.get(t).kind))
        self.specs: dict[str, type[Task]] = {t: TASKS.get(t) for t in order}
        self.tasks = order or ["none"]
        column = {t: (spec.title, spec.panel_width) for t, spec in self.specs.items()} or {"none": NO_TASK}
        widths = [round(column[t][1] * self.u) for t in self.tasks]
        width = sum(widths)
        self.width, self.height = width + (width % 2), height
        self.x0 = np.concatenate([[0], np.cumsum(widths)[:-1]]).tolist()   # each column's left edge
        self.cols = dict(zip(self.tasks, zip(self.x0, widths)))
        s = self.s
        self.title, self.small, self.bold = _font(s(11)), _font(s(10)), _font(s(10), bold=True)
        self.body = (s(24), height - s(28))      # rows between the titles and the footer line
        self.base = Image.new("RGB", (self.width, height), BG)
        d = ImageDraw.Draw(self.base)
        for t, (x, w) in self.cols.items():
            d.text((x + s(6), s(6)), column[t][0], font=self.title, fill=TEXT)
            if x:
                d.line([(x, s(4)), (x, height - s(4))], fill=LINE)
        self.planes: dict[str, tuple] = {}   # dimensional task -> (centre, radius, readout position), px
        self.rows: dict[str, tuple] = {}     # a task drawn as bars -> (names, rows, bar's x span, step)
        for t, spec in self.specs.items():
            if spec.kind == "dimensional":
                self._plane(t, d)
            else:
                self._bar_rows(t, spec.names, d)

    def s(self, px: float) -> int:
        """Design pixels -> this panel's pixels."""
        return max(1, round(px * self.u))

    # ---- static parts ------------------------------------------------------------------------

    def _plane(self, task: str, d: ImageDraw.ImageDraw) -> None:
        """A dimensional task's plane: its first axis on x, its second on y, the circle at the bounds."""
        x, w = self.cols[task]
        s = self.s
        side = min(w - s(12), self.body[1] - self.body[0] - s(18))
        r = (side - s(8)) / 2
        cx, cy = (x + w / 2, self.body[0] + side / 2)                   # the circle's centre, px
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=LINE, width=s(1))
        d.line([(cx - r, cy), (cx + r, cy)], fill=LINE)
        d.line([(cx, cy - r), (cx, cy + r)], fill=LINE)
        across, up = self.specs[task].names[:2]
        d.text((cx + r, cy + s(2)), across, font=self.small, fill=DIM, anchor="rt")
        d.text((cx + s(3), cy - r), up, font=self.small, fill=DIM, anchor="lt")
        self.planes[task] = ((cx, cy), r, (x + s(6), cy + side / 2 + s(2)))

    def _bar_rows(self, task: str, names: tuple[str, ...], d: ImageDraw.ImageDraw) -> None:
        x, w = self.cols[task]
        s = self.s
        top, bottom = self.body
        step = (bottom - top) / len(names)
        label_w = max(self.bold.getlength(name) for name in names) + s(4)   # room for the bold one
        bar = (x + s(6) + label_w, x + w - s(6))                       # a bar's x from 0 to 1
        rows = [(top + k * step, top + (k + 1) * step) for k in range(len(names))]
        for a, b in rows:   # the labels are drawn per frame (the highlighted one in bold)
            d.rectangle([bar[0], a + 0.2 * step, bar[1], b - 0.2 * step], outline=LINE)
        self.rows[task] = (names, rows, bar, step)

    # ---- per frame ---------------------------------------------------------------------------

    def draw(self, t: float, face: bool, outputs: dict[str, np.ndarray | None],
             traces: dict[str, np.ndarray | None] | None = None) -> Image.Image:
        """The panel at time t: outputs, task -> its (width,) outputs for the frame, None (or NaN,
        or no key) where it has none; traces, dimensional task -> its last (k, width) outputs,
        oldest first."""
        img = self.base.copy()
        d = ImageDraw.Draw(img)
        s = self.s
        x = self.x0[0]
        d.text((x + s(6), self.height - s(6)), f"{t:6.2f} s", font=self.small, fill=DIM, anchor="lb")
        if not face:
            d.text((x + self.cols[self.tasks[0]][1] - s(6), self.height - s(6)), "no face", font=self.bold,
                   fill=(236, 96, 96), anchor="rb")
        for task, spec in self.specs.items():
            p = outputs.get(task)
            if spec.kind == "dimensional":
                self._draw_plane(d, task, p, (traces or {}).get(task))
            else:
                self._draw_bars(d, task, p if p is not None and np.isfinite(p).all() else None)
        return img

    def _draw_bars(self, d: ImageDraw.ImageDraw, task: str, p: np.ndarray | None) -> None:
        """Labels and bars of probabilities p (k,); labels only where p is None. Lit: the most
        probable class (categorical), the labels at or above the threshold (multilabel)."""
        names, rows, (b0, b1), step = self.rows[task]
        spec = self.specs[task]
        multilabel = spec.kind == "multilabel"
        on = [] if p is None else np.flatnonzero(p >= spec.threshold).tolist() if multilabel else [int(np.argmax(p))]
        for k, (a, b) in enumerate(rows):
            lit = k in on
            d.text((self.cols[task][0] + self.s(6), (a + b) / 2), names[k], font=self.bold if lit else self.small,
                   fill=HIGHLIGHT if lit else DIM, anchor="lm")
            if p is not None:
                d.rectangle([b0, a + 0.2 * step, b0 + float(np.clip(p[k], *spec.bounds)) * (b1 - b0),
                             b - 0.2 * step], fill=HIGHLIGHT if lit else BAR)
        if multilabel:   # the decision threshold, over the bars
            at = b0 + spec.threshold * (b1 - b0)
            d.line([(at, rows[0][0]), (at, rows[-1][1])], fill=DIM if p is not None else LINE, width=1)

    def _point(self, task: str, v: float, a: float) -> tuple[float, float]:
        """A dimensional task's values -> px in its plane (clipped to the bounds: its circle)."""
        (cx, cy), r, _ = self.planes[task]
        lo, hi = self.specs[task].bounds
        return cx + float(np.clip(v, lo, hi)) / hi * r, cy - float(np.clip(a, lo, hi)) / hi * r

    def _draw_plane(self, d: ImageDraw.ImageDraw, task: str, p: np.ndarray | None, trace: np.ndarray | None) -> None:
        s = self.s
        readout = self.planes[task][2]
        across, up = (n[0] for n in self.specs[task].names[:2])   # the axes' initials
        if trace is not None and len(trace) > 1:
            pts = [self._point(task, *q) if np.isfinite(q).all() else None for q in trace]
            for k in range(1, len(pts)):
                if pts[k - 1] is not None and pts[k] is not None:
                    f = k / (len(pts) - 1)             # 0 oldest -> 1 newest: fades into the background
                    colour = tuple(round(b + f * (c - b)) for b, c in zip(BG, TRACE))
                    d.line([pts[k - 1], pts[k]], fill=colour, width=s(2))
        if p is None or not np.isfinite(p).all():
            d.text(readout, f"{across} -  {up} -", font=self.small, fill=DIM)
            return
        px, py = self._point(task, *p)
        r = s(4)
        d.ellipse([px - r, py - r, px + r, py + r], fill=POINT, outline=TEXT, width=max(1, s(1)))
        d.text(readout, f"{across} {p[0]:+.2f}   {up} {p[1]:+.2f}", font=self.small, fill=TEXT)


class _Frames:
    """Decoded frame i -> the output frame: the picture (its box, the most probable class of the
    first categorical task above it) and the panel beside it."""

    def __init__(self, panel: Panel, times: np.ndarray, outputs: dict[str, np.ndarray], boxes: np.ndarray,
                 size: tuple[int, int], frame_height: int, trace_s: float, t0: float, rate: float) -> None:
        self.panel, self.times, self.outputs, self.boxes, self.size = panel, times, outputs, boxes, size
        self.trace_s, self.t0, self.rate = trace_s, t0, rate
        self.line = max(2, round(2 * frame_height / DESIGN_HEIGHT))
        self.font = _font(max(9, round(11 * frame_height / DESIGN_HEIGHT)), bold=True)
        specs = panel.specs
        self.caption = next((t for t, spec in specs.items() if spec.kind == "categorical"), None)
        self.traced = [t for t, spec in specs.items() if spec.kind == "dimensional"]

    def at(self, task: str, i: int) -> np.ndarray | None:
        """A task's outputs at frame i; None where it has none."""
        y = self.outputs.get(task)
        return None if y is None or i >= len(y) else np.asarray(y[i], np.float64)

    def __call__(self, frame: np.ndarray, i: int) -> np.ndarray:
        """(h, w, 3) uint8 -> (H, W, 3) uint8, W and H the output's (`size`)."""
        h, w = frame.shape[:2]
        canvas = np.empty((self.size[1], self.size[0], 3), np.uint8)   # (H, W, 3), composed in numpy: fast
        canvas[h:], canvas[:, w:] = BG, BG    # the padding of a short or odd-sized frame
        canvas[:h, :w] = frame
        t = float(self.times[i]) if i < len(self.times) else self.t0 + i / self.rate
        box = self.boxes[i] if i < len(self.boxes) else np.full(4, np.nan)
        face = bool(np.isfinite(box).all())
        now = {task: self.at(task, i) for task in self.panel.specs}
        if face:
            p = now.get(self.caption)
            self._box(canvas[:h, :w], box, self.panel.specs[self.caption].names[int(np.argmax(p))]
                      if p is not None and np.isfinite(p).all() else None)
        traces = {}
        for task in self.traced:
            y = self.outputs.get(task)
            if y is not None and i < len(y):   # the last trace_s seconds, oldest first
                lo = int(np.searchsorted(self.times[:len(y)], t - self.trace_s, side="right"))
                traces[task] = np.asarray(y[lo:i + 1], np.float64)
        canvas[:, self.size[0] - self.panel.width:] = self.panel.draw(t, face, now, traces)
        return canvas

    def _box(self, img: np.ndarray, box: np.ndarray, label: str | None) -> None:
        """Draws the box (its lines inside x0, y0, x1, y1) and the label above it, in place."""
        h, w = img.shape[:2]
        x0, y0, x1, y1 = np.clip(np.round(box), 0, [w - 1, h - 1, w - 1, h - 1]).astype(int)
        # the coloured line with a black rim a pixel either side of it: visible on any background
        _outline(img, (x0 - 1, y0 - 1, x1 + 1, y1 + 1), self.line + 2, (0, 0, 0))
        _outline(img, (x0, y0, x1, y1), self.line, BOX)
        if label is None:
            return
        # the text drawn by PIL on the small region it covers only (a whole-frame PIL round trip is slow)
        anchor = (x0, max(y0 - 2, self.font.size))
        l, t, r, b = (int(v) for v in self.font.getbbox(label, anchor="lb", stroke_width=2))
        rx0, ry0 = max(0, anchor[0] + l), max(0, anchor[1] + t)
        rx1, ry1 = min(w, anchor[0] + r + 1), min(h, anchor[1] + b + 1)
        if rx1 <= rx0 or ry1 <= ry0:
            return
        region = Image.fromarray(img[ry0:ry1, rx0:rx1])
        ImageDraw.Draw(region).text((anchor[0] - rx0, anchor[1] - ry0), label, font=self.font, fill=BOX,
                                    anchor="lb", stroke_width=2, stroke_fill=(0, 0, 0))
        img[ry0:ry1, rx0:rx1] = np.asarray(region)


def _outline(img: np.ndarray, box: tuple[int, int, int, int], width: int, colour) -> None:
    """Paints, in place, the outline of a rectangle x0, y0, x1, y1 (inclusive) `width` px inward,
    clipped to the image."""
    h, w = img.shape[:2]
    x0, y0, x1, y1 = max(0, box[0]), max(0, box[1]), min(w - 1, box[2]), min(h - 1, box[3])
    if x1 < x0 or y1 < y0:
        return
    img[y0:y0 + width, x0:x1 + 1] = colour
    img[max(y0, y1 - width + 1):y1 + 1, x0:x1 + 1] = colour
    img[y0:y1 + 1, x0:x0 + width] = colour
    img[y0:y1 + 1, max(x0, x1 - width + 1):x1 + 1] = colour


def _rate(video: Path, times: np.ndarray) -> str:
    """The input's frame rate as ffprobe gives it (avg_frame_rate, e.g. '30000/1001')."""
    stream = ffmpeg.probe(str(video), select_streams="v:0")["streams"][0]
    for key in ("avg_frame_rate", "r_frame_rate"):
        num, _, den = stream.get(key, "0/0").partition("/")
        if float(num or 0) > 0 and float(den or 1) > 0:
            return stream[key]
    if len(times) > 1:
        return f"{(len(times) - 1) / (times[-1] - times[0]):.6f}"
    return "25"


def write_overlay(video: Path, out: Path, *, times: np.ndarray, outputs: dict[str, np.ndarray],
                  boxes: np.ndarray, trace_s: float = 2.0, crf: int = 20) -> Overlay:
    """Writes `out` (mp4): `video` with the face box and a side panel of the outputs (module
    docstring). times: (n,) s, each frame's time (the cache's timestamps); outputs: task ->
    (n, k) outputs of registered tasks (values, probabilities: as each task's `kind` says);
    boxes: (n, 4) x0, y0, x1, y1 in frame px, NaN where no face was found."""
    require_ffmpeg()
    video, out = Path(video), Path(out)
    info = probe_video(video)
    w, h = info.width, info.height
    times = np.asarray(times, np.float64)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    panel = Panel(max(h, DESIGN_HEIGHT), list(outputs))
    size = (w + panel.width + (w % 2), panel.height + (panel.height % 2))   # yuv420p wants even sides
    rate = _rate(video, times)
    n_rate = float(Fraction(rate))
    t0 = float(times[0]) if len(times) and np.isfinite(times[0]) else 0.0
    max_shift = float(np.abs(times - (t0 + np.arange(len(times)) / n_rate)).max()) if len(times) else 0.0
    if max_shift > 0.5 / n_rate:   # a line of its own, not a Python warning with a source location
        console.print(f"[yellow]note[/] {video}: variable frame rate: the overlay is at its average rate "
                      f"({rate} fps), frames up to {max_shift:.3f} s off their input times", highlight=False,
                      soft_wrap=True)
    audio = info.audio_codec is not None
    args = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{size[0]}x{size[1]}", "-framerate", rate,
            "-itsoffset", f"{t0:.6f}", "-i", "pipe:", *(["-i", str(video)] if audio else []),
            "-map", "0:v:0", *(["-map", "1:a:0", "-c:a", "aac", "-b:a", "128k"] if audio else []),
            "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", str(crf), "-preset", "veryfast",
            # every piped frame becomes one output frame (never dropped or duplicated to fit a rate)
            "-vsync", "passthrough", "-movflags", "+faststart", str(out)]
    draw = _Frames(panel, times, outputs, boxes, size, h, trace_s, t0, n_rate)
    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with tempfile.TemporaryFile() as errfile, progress(transient=True) as bar:
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stderr=errfile)
        task = bar.add_task(f"overlay {video.name}", total=len(times) or None)
        try:
            for batch in iter_frames(video, w, h, orientation=info.orientation):   # (b, h, w, 3): probed once
                for frame in batch:
                    proc.stdin.write(memoryview(draw(frame, n)))   # C-contiguous: no copy
                    n += 1
                    bar.advance(task)
            proc.stdin.close()
        except BrokenPipeError:   # ffmpeg stopped: its exit code and message say why
            pass
        except BaseException:     # an input error, an interrupt: no half-written file left behind
            proc.kill()
            proc.wait()
            out.unlink(missing_ok=True)
            raise
        if proc.wait() != 0 or n == 0:
            errfile.seek(0)
            out.unlink(missing_ok=True)
            if n == 0:
                raise InputError(f"{video}: no decodable video frames")
            raise JmtError(f"ffmpeg failed writing {out}: {errfile.read().decode(errors='replace').strip()[-500:]}")
    return Overlay(out, n, size[0], size[1], rate, audio, max_shift)
