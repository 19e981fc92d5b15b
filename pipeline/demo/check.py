"""Checks that a generated demo corpus is what its manifest says (used by bench/ and tests)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.corpus.annotations import read_annotation
from pipeline.media import iter_frames, probe


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
    vis = sum(r["visible_person_frames"] for r in rows)
    hid = sum(r["hidden_person_frames"] for r in rows)
    return {
        "corpus": str(root), "size": manifest["size"], "seed": manifest["seed"],
        "mtcnn_min_prob": prob, "seconds": round(time.time() - t0, 1),
        "detect_rate_visible": sum(r["found_visible"] for r in rows) / max(1, vis),
        "detect_rate_hidden": sum(r["found_hidden"] for r in rows) / max(1, hid),
        "max_av_duration_gap_s": max(abs(r["video_s"] - r["audio_s"]) for r in rows),
        "lines_match_frames": all(all(n == r["decoded_frames"] == r["frames"] for n in r["annotation_lines"])
                                  for r in rows),
        "videos": rows,
    }
