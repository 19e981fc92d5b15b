"""Checks that a generated demo corpus is what its manifest says (used by bench/ and tests):
the faces MTCNN finds, the streams and frame counts, and the voice cues in the decoded audio."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.tasks import TASKS

read_annotation = TASKS.get("va")().read_annotation
from pipeline.media import iter_frames, probe, read_audio

CUES = {"level_db": "arousal", "f0_octaves": "arousal", "brightness": "valence"}


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
    within 1 s of an audio gap, and -5 labels, are left out."""
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
        for p in v["persons"]:
            lab = read_annotation(root / p["annotation"]).astype(np.float64)[:n]
            lab[(lab == -5).all(1)] = np.nan
            for a, b in p["speaking"]:
                label[a:b] = lab[np.minimum(np.arange(a, b) + int(round(lead_s * fps)), n - 1)]
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
    generator hid it, decoded frames vs annotation lines, ffprobe streams and durations.
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
        for batch in iter_frames(root / v["video"], w, h, batch=16):
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
        lines = [len(read_annotation(root / p["annotation"])) for p in v["persons"]]
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
        "videos": rows,
    }
