"""Checks that a generated demo corpus is what its manifest says (used by bench/ and tests):
the faces MTCNN finds, the streams and frame counts, the voice cues in the decoded audio, what
the annotation files of the three tasks hold (`label_summary`), and that the action units the
labels state are visible in the decoded frames (`au_measures`, `face_measures`).

The AU measures look at an aligned face (the frame sampled back into the photo's coordinates)
and compare it with the neutral face there, region by region, knowing only where the photo's
features are: how far a region's content moved (block matching, normalised cross-correlation)
and how much of the mouth is open (pixels that are neither skin nor lip). They know nothing of
how the generator draws an AU.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.signal import correlate

from pipeline.demo import face
from pipeline.media import iter_frames, probe, read_audio
from pipeline.tasks import TASKS
from pipeline.tasks.au import AUS
from pipeline.tasks.expr import CLASSES

read_annotation = TASKS.get("va")().read_annotation

CUES = {"level_db": "arousal", "f0_octaves": "arousal", "f0_rel_octaves": "arousal", "brightness": "valence"}


def frame_cues(audio: np.ndarray, sr: int, fps: float, n: int) -> dict[str, np.ndarray]:
    """Per video frame, from the samples shown with it (numpy only, independent of the
    generator): level (dBFS), median autocorrelation F0 of its periodic 25 ms chunks (octaves
    above 27.5 Hz, NaN if none) and brightness (log10 of power above 1 kHz over below)."""
    level, f0, bright = np.full(n, -120.0), np.full(n, np.nan), np.full(n, np.nan)
    lo, hi, w = sr // 400, sr // 60, sr // 40
    for i in range(n):
        seg = audio[int(round(i * sr / fps)):int(round((i + 1) * sr / fps))].astype(np.float64)
        if len(seg) < w:
            continue
        level[i] = 10 * np.log10(np.mean(seg**2) + 1e-12)
        power = np.abs(np.fft.rfft(seg)) ** 2
        freqs = np.fft.rfftfreq(len(seg), 1 / sr)
        bright[i] = np.log10((power[freqs > 1000].sum() + 1e-12) / (power[freqs <= 1000].sum() + 1e-12))
        found = []
        for c in (seg[j:j + w] - seg[j:j + w].mean() for j in range(0, len(seg) - w + 1, w // 2)):
            ac = np.correlate(c, c, "full")[w - 1:]
            k = lo + int(np.argmax(ac[lo:hi]))
            if ac[0] > 0 and ac[k] / ac[0] > 0.5:
                found.append(np.log2(sr / k / 27.5))
        if found:
            f0[i] = np.median(found)
    return {"level_db": level, "f0_octaves": f0, "brightness": bright}


def voice_cues(root: Path, manifest: dict) -> dict[str, float]:
    """How strongly the decoded audio carries the labels: the Pearson r, over the voiced frames
    of every video pooled, between each cue (averaged over a centred 1 s of loud frames) and
    the speaking person's label `voice_lead_s` later (the manifest's; 0 if absent). Frames
    within 1 s of an audio gap, and -5 labels, are left out. `f0_rel_octaves` is F0 above the
    speaker's base pitch (`persons[].base_f0_hz`): arousal's pitch cue without who speaks."""
    lead_s = float(manifest.get("voice_lead_s", 0.0))
    xs: dict[str, list] = {c: [] for c in CUES}
    ys: dict[str, list] = {c: [] for c in CUES}
    for v in manifest["videos"]:
        n, fps, sr = v["n_frames"], v["fps"], v["sample_rate"]
        cues = frame_cues(read_audio(root / v["video"], sr)[: v["n_samples"]], sr, fps, n)
        k = max(1, int(round(fps)))  # frames in 1 s
        keep = cues["level_db"] > np.percentile(cues["level_db"], 40)  # pauses carry no cue
        for a, b in v["audio_gap"]:
            keep[max(0, a - k):b + k] = False
        label = np.full((n, 2), np.nan)  # (n, 2) valence, arousal of whoever speaks, lead_s later
        base = np.full(n, np.nan)        # the speaker's base pitch, octaves above 27.5 Hz
        for p in v["persons"]:
            lab = read_annotation(root / p["annotation"]).astype(np.float64)[:n]
            lab[(lab == -5).all(1)] = np.nan
            for a, b in p["speaking"]:
                label[a:b] = lab[np.minimum(np.arange(a, b) + int(round(lead_s * fps)), n - 1)]
                base[a:b] = np.log2(p["base_f0_hz"] / 27.5)
        cues["f0_rel_octaves"] = cues["f0_octaves"] - base
        for cue, axis in CUES.items():
            has = keep & np.isfinite(cues[cue])
            count = np.convolve(has.astype(float), np.ones(k), "same")
            smooth = np.convolve(np.where(has, cues[cue], 0.0), np.ones(k), "same") / np.maximum(count, 1)
            ok = keep & (count >= k / 4) & np.isfinite(label).all(1)
            xs[cue].append(smooth[ok])
            ys[cue].append(label[ok, 0 if axis == "valence" else 1])
    return {f"r_{cue}_{axis}": round(float(np.corrcoef(np.concatenate(xs[cue]), np.concatenate(ys[cue]))[0, 1]), 3)
            for cue, axis in CUES.items()}


def check_corpus(root: Path, prob: float = 0.9) -> dict:
    """Decodes every video, runs MTCNN on every frame and compares with the manifest.

    Returns a report: detection rate on frames where a face is visible and where the
    generator hid it, decoded frames vs annotation lines (every task's), ffprobe streams and
    durations, the voice cues and what the annotation files hold (`label_summary`).
    """
    from facenet_pytorch import MTCNN

    torch.set_num_threads(2)
    manifest = json.loads((root / "corpus.json").read_text())
    mtcnn = MTCNN(keep_all=True, device="cpu")
    rows, t0 = [], time.time()
    for v in manifest["videos"]:
        info = probe(root / v["video"])
        w, h = v["width"], v["height"]
        found = {p["side"]: [] for p in v["persons"]}
        n_decoded = 0
        for batch in iter_frames(root / v["video"], w, h, batch=16, orientation=info.orientation):
            boxes, probs = mtcnn.detect(list(batch))
            for b, pr in zip(boxes, probs):
                centres = [] if b is None else [
                    (bb[0] + bb[2]) / 2 for bb, pp in zip(np.asarray(b, np.float32), pr) if pp >= prob]
                for p in v["persons"]:
                    side = p["side"]
                    if side is None:
                        hit = len(centres) > 0
                    else:  # two people: match a detection by the half of the frame it is in
                        hit = any((c < w / 2) == (side == "left") for c in centres)
                    found[side].append(hit)
            n_decoded += len(batch)
        visible_hits = hidden_hits = n_visible = n_hidden = 0
        for p in v["persons"]:
            hidden = np.zeros(v["n_frames"], bool)
            for a, b in p["face_hidden"]:
                hidden[a:b] = True
            hits = np.array(found[p["side"]])
            n_visible += int((~hidden).sum())
            visible_hits += int(hits[~hidden].sum())
            n_hidden += int(hidden.sum())
            hidden_hits += int(hits[hidden].sum())
        lines = [len(TASKS.get(t)().read_annotation(root / info["annotation"]))
                 for p in v["persons"] for t, info in sorted(p.get("labels", {"va": p}).items())]
        rows.append({
            "video": v["name"], "split": v["split"], "fps": v["fps"], "frames": v["n_frames"],
            "decoded_frames": n_decoded, "annotation_lines": lines,
            "ffprobe_codecs": [info.video_codec, info.audio_codec],
            "video_s": info.video_duration, "audio_s": info.audio_duration,
            "visible_person_frames": n_visible, "found_visible": visible_hits,
            "hidden_person_frames": n_hidden, "found_hidden": hidden_hits,
            "hidden_mode": v["face_hidden_mode"],
        })
    seconds, t1 = round(time.time() - t0, 1), time.time()
    cues = voice_cues(root, manifest)
    vis = sum(r["visible_person_frames"] for r in rows)
    hid = sum(r["hidden_person_frames"] for r in rows)
    return {
        "corpus": str(root), "size": manifest["size"], "seed": manifest["seed"],
        "mtcnn_min_prob": prob, "seconds": seconds,
        "detect_rate_visible": sum(r["found_visible"] for r in rows) / max(1, vis),
        "detect_rate_hidden": sum(r["found_hidden"] for r in rows) / max(1, hid),
        "max_av_duration_gap_s": max(abs(r["video_s"] - r["audio_s"]) for r in rows),
        "lines_match_frames": all(all(n == r["decoded_frames"] == r["frames"] for n in r["annotation_lines"])
                                  for r in rows),
        "voice_cues": cues, "voice_cues_seconds": round(time.time() - t1, 1),
        "labels": label_summary(root),
        "videos": rows,
    }


# ---- annotations --------------------------------------------------------------------------

def label_summary(root: Path) -> dict:
    """What the annotation files of each task hold, per split (read back through the tasks'
    formats): entries, frames, frames with the invalid marker, and for EXPR the frames of each
    class, for AU the positive frames of each AU. Also the entries each task lacks, and those
    whose split differs between tasks."""
    root = Path(root)
    manifest = json.loads((root / "corpus.json").read_text())
    out: dict = {"tasks": {}}
    splits: dict[str, dict[str, str]] = {}   # entry -> task -> split
    for task, info in manifest["tasks"].items():
        fmt = TASKS.get(task)()
        per = {}
        for split in ("Train_Set", "Validation_Set", "Test_Set"):
            files = sorted((root / info["folder"] / split).glob("*.txt"))
            row = {"entries": len(files), "frames": 0, "invalid_frames": 0}
            counts = np.zeros(len(CLASSES) if task == "expr" else len(AUS), np.int64)
            for f in files:
                lab = fmt.read_annotation(f)
                ok = fmt.valid(lab)
                row["frames"] += len(lab)
                row["invalid_frames"] += int((~ok).sum())
                splits.setdefault(f.stem, {})[task] = split
                if task == "expr":
                    counts += np.bincount(lab[ok, 0].astype(np.int64), minlength=len(CLASSES))
                elif task == "au":
                    counts += (lab[ok] > 0.5).sum(0).astype(np.int64)
            if task == "expr":
                row["class_frames"] = dict(zip(CLASSES, counts.tolist()))
            elif task == "au":
                row["au_positive_frames"] = dict(zip(AUS, counts.tolist()))
            per[split] = row
        out["tasks"][task] = per
    tasks = list(manifest["tasks"])
    out["not_labelled"] = {t: sorted(e for e, have in splits.items() if t not in have) for t in tasks}
    out["split_differs"] = {e: have for e, have in sorted(splits.items()) if len(set(have.values())) > 1}
    return out


# ---- what the face shows --------------------------------------------------------------------

def aligned_face(frame: np.ndarray, app: face.Appearance, centre: tuple[float, float]) -> np.ndarray:
    """A frame (H, W, 3, uint8 or float in [0, 1]) sampled back into head-patch px: float32
    (patch H, patch W, 3), the face as the photo holds it (rotation, scale, mirror undone)."""
    img = np.asarray(frame, np.float32)
    if frame.dtype == np.uint8:
        img = img / 255.0
    ph, pw = face.head_patch().shape[:2]
    v, u = np.mgrid[0:ph, 0:pw].astype(np.float32)
    x, y = face.patch_to_frame(app, centre, u, v)
    return face._bilinear(img, y, x).astype(np.float32)


def _grey(img: np.ndarray) -> np.ndarray:
    return img[..., :3].mean(-1)


def region_shift(ref: np.ndarray, img: np.ndarray, box: tuple[float, float, float, float],
                 search: int | tuple[int, int] = 5) -> tuple[float, float]:
    """How far (dx, dy) the content of `box` (x0, y0, x1, y1, patch px) moved from `ref` to
    `img` (grey or RGB patches): the integer shift with the best normalised cross-correlation,
    refined by a parabola through its neighbours."""
    a, b = _grey(ref) if ref.ndim == 3 else ref, _grey(img) if img.ndim == 3 else img
    x0, y0, x1, y1 = (int(round(c)) for c in box)
    target = b[y0:y1, x0:x1]
    target = (target - target.mean()) / (target.std() + 1e-6)
    sx, sy = (search, search) if isinstance(search, int) else search
    # every window of ref the box could have come from: score[dy + sy, dx + sx] <- ref[y0 - dy:, x0 - dx:]
    window = a[y0 - sy:y1 + sy, x0 - sx:x1 + sx].astype(np.float64)
    h, w = target.shape
    n = h * w
    integral = np.pad(np.cumsum(np.cumsum(window, 0), 1), ((1, 0), (1, 0)))
    squares = np.pad(np.cumsum(np.cumsum(window**2, 0), 1), ((1, 0), (1, 0)))
    box_sum = lambda t: t[h:, w:] - t[:-h, w:] - t[h:, :-w] + t[:-h, :-w]  # noqa: E731
    mean = box_sum(integral) / n
    std = np.sqrt(np.maximum(box_sum(squares) / n - mean**2, 0.0))
    corr = correlate(window, target, mode="valid")          # the target has zero mean
    score = (corr / n / (std + 1e-6))[::-1, ::-1]
    j, i = np.unravel_index(int(np.argmax(score)), score.shape)

    def refine(m1: float, m0: float, p1: float) -> float:
        den = m1 - 2 * m0 + p1
        return 0.0 if not np.isfinite(den) or den >= 0 else float(np.clip(0.5 * (m1 - p1) / den, -0.5, 0.5))

    fx = refine(score[j, i - 1], score[j, i], score[j, i + 1]) if 0 < i < 2 * sx else 0.0
    fy = refine(score[j - 1, i], score[j, i], score[j + 1, i]) if 0 < j < 2 * sy else 0.0
    return i - sx + fx, j - sy + fy


def _box(centre, half_w, half_h, dy=0.0):
    x, y = centre
    return (x - half_w, y + dy - half_h, x + half_w, y + dy + half_h)


def mouth_open_fraction(img: np.ndarray, ref: np.ndarray) -> float:
    """The share of the mouth's centre that is neither skin nor lip: teeth (grey, no red) or the
    dark cavity, judged against the face's own skin (median of the cheeks, so lighting and
    gain cancel)."""
    cx = face.MOUTH_X
    cy = float(np.mean([c[1] for c in face.MOUTH_CORNERS]))
    x0, x1, y0, y1 = int(cx - 9), int(cx + 10), int(cy - 5), int(cy + 12)
    cheeks = np.concatenate([img[int(y) - 4:int(y) + 4, int(x) - 5:int(x) + 5].reshape(-1, 3) for x, y in face.CHEEKS])
    skin_v, skin_red = np.median(cheeks.max(-1)), np.median(cheeks[:, 0] - cheeks[:, 2])
    m = img[y0:y1, x0:x1]
    value, red = m.max(-1), m[..., 0] - m[..., 2]
    return float(((value < 0.55 * skin_v) | (red < 0.6 * skin_red)).mean())


def furrow_darkening(img: np.ndarray, ref: np.ndarray) -> float:
    """How much darker (%) the skin between the inner brows is than in `ref`, each against the
    skin of the nose bridge below it (so lighting cancels): the vertical furrows of a frown."""
    (lx, ly), (rx, ry) = face.BROW_INNER
    x0, x1, y = int(lx + 8), int(rx - 8), int((ly + ry) / 2)
    grey_img, grey_ref = _grey(img), _grey(ref)
    ratio = lambda g: g[y - 2:y + 9, x0:x1].mean() / g[y + 14:y + 24, x0:x1].mean()  # noqa: E731
    return float(100 * (1 - ratio(grey_img) / ratio(grey_ref)))


def au_measures(img: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Per AU, how strongly an aligned face `img` shows it against the neutral aligned face
    `ref` (`_raw_measures`, less what `ref` measures against itself: the sub-pixel fit of the
    block matching is not exactly 0 on identical regions)."""
    key = (id(ref), ref.shape)
    if _BASELINE.get("key") != key:
        _BASELINE.update(key=key, ref=ref, values=_raw_measures(ref, ref))
    raw, base = _raw_measures(img, ref), _BASELINE["values"]
    return {a: float(raw[a] - base[a]) for a in AUS}


_BASELINE: dict = {}


def _raw_measures(img: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Per AU, how strongly an aligned face `img` shows it against the neutral aligned face
    `ref` (patch px; positive = the AU's movement):

    AU1 / AU2: inner / outer brows up; AU4: the skin between the brows darker (%, the vertical
    furrows) plus how far the inner brows came down; AU6: cheeks up; AU7:
    lids closing (upper down, lower up); AU10: the skin over the upper lip up; AU12: lip
    corners up; AU15: lip corners down; AU23: lip corners drawn in (narrower mouth); AU24: the
    lips pressed thinner (the upper lip's upper edge down, the lower lip's lower edge up towards
    its top); AU25: the share of the
    mouth's centre that is open (teeth or cavity) beyond the neutral's; AU26: the chin down."""
    grey_ref, grey_img = _grey(ref), _grey(img)

    def shift(box, search=6):
        return region_shift(grey_ref, grey_img, box, search)

    (il, ir), (ol, orr) = face.BROW_INNER, face.BROW_OUTER
    inner = [shift(_box(p, 7, 5)) for p in (il, ir)]
    outer = [shift(_box(p, 7, 5)) for p in (ol, orr)]
    cheeks = [shift(_box(p, 8, 4, dy=1.0)) for p in face.CHEEKS]
    up_lid = [shift(_box(p, 8, 3, dy=-4.0)) for p in face.EYES]
    low_lid = [shift(_box(p, 8, 3, dy=4.0)) for p in face.EYES]
    corners = [shift(_box(p, 6, 6)) for p in face.MOUTH_CORNERS]
    cy = float(np.mean([c[1] for c in face.MOUTH_CORNERS]))
    philtrum = shift(_box((face.MOUTH_X, cy - 8.0), 8, 4))
    upper_lip_top = shift(_box((face.MOUTH_X, cy - 3.5), 10, 3))     # the upper lip's upper edge
    lower_lip_top = shift(_box((face.MOUTH_X, cy + 8.0), 10, 2.5), search=(3, 13))   # the lower lip
    lower_lip_bottom = shift(_box((face.MOUTH_X, cy + 13.5), 10, 2.5), search=(3, 13))  # its lower edge
    chin = shift(_box(face.CHIN, 12, 6), search=(3, 13))
    mean_dy = lambda pairs: float(np.mean([p[1] for p in pairs]))  # noqa: E731
    return {
        "AU1": -mean_dy(inner),
        "AU2": -mean_dy(outer),
        "AU4": furrow_darkening(img, ref) + max(0.0, mean_dy(inner)),
        "AU6": -mean_dy(cheeks),
        "AU7": mean_dy(up_lid) - mean_dy(low_lid),
        "AU10": -philtrum[1],
        "AU12": -mean_dy(corners),
        "AU15": mean_dy(corners),
        "AU23": (corners[0][0] - corners[1][0]) / 2,
        "AU24": upper_lip_top[1] + lower_lip_top[1] - lower_lip_bottom[1],
        "AU25": mouth_open_fraction(img, ref) - mouth_open_fraction(ref, ref),
        "AU26": chin[1],
    }


def look_of(person: dict) -> face.Appearance:
    """A person's appearance as the manifest records it (`persons[].look`)."""
    return face.Appearance(**{k: tuple(x) if isinstance(x, list) else x for k, x in person["look"].items()})


def face_measures(root: Path, manifest: dict | None = None, step: int = 1) -> list[dict]:
    """The AU measures of a generated corpus's decoded frames against the neutral face: for every
    person of every video, every `step`-th frame where the face is in view and arousal is
    labelled (the head's sway depends on it), with the frame's EXPR and AU labels. A list of
    per-person dicts: video, side, frames (k,), measures (k, 12) in AUS order, shown (k, 12) the
    AUs the manifest says the face shows (`persons[].action_units`, for everyone), expr (k,) and
    au (k, 12) as the annotation files hold them (None for a task that does not label the person)."""
    root = Path(root)
    manifest = manifest or json.loads((root / "corpus.json").read_text())
    ref = face.expression_patch()[..., :3]
    out = []
    for v in manifest["videos"]:
        frames = np.concatenate(list(iter_frames(root / v["video"], v["width"], v["height"], batch=32)))
        for p in v["persons"]:
            look, va = look_of(p), read_annotation(root / p["annotation"])
            keep = (va != -5).all(1)
            for a, b in p["face_hidden"]:
                keep[a:b] = False
            idx = np.flatnonzero(keep)[::step]
            rows = []
            for i in idx:
                centre = face.face_centre(look, i / v["fps"], float(va[i, 1]))
                m = au_measures(aligned_face(frames[i], look, centre), ref)
                rows.append([m[a] for a in AUS])
            labels = p.get("labels", {})
            expr = _task_labels(root, labels.get("expr"), "expr")
            au = _task_labels(root, labels.get("au"), "au")
            shown = np.zeros((v["n_frames"], len(AUS)), np.float32)
            for k, a in enumerate(AUS):
                for s0, s1 in p["action_units"][a]:
                    shown[s0:s1, k] = 1
            out.append({"video": v["name"], "side": p["side"], "frames": idx,
                        "measures": np.array(rows).reshape(-1, len(AUS)), "shown": shown[idx],
                        "expr": None if expr is None else expr[idx, 0],
                        "au": None if au is None else au[idx]})
    return out


def _task_labels(root: Path, info: dict | None, task: str) -> np.ndarray | None:
    if not info:
        return None
    return TASKS.get(task)().read_annotation(root / info["annotation"])
