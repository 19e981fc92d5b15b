"""Writes one OpenFace-2.2-layout CSV per entry of a jmt demo corpus, MADE FROM THE DEMO'S OWN AU
LABELS PLUS NOISE: not OpenFace output.

OpenFace cannot run here (a C++ build with model downloads), and the demo's faces are drawn, so
these files stand in for what a team that ran OpenFace would hold. They check that a stream read
from files (`name: files`, `preset: openface`) runs end to end on the demo and lines up with its
frames: a file shifted by a few frames, or read with the wrong frame base, would carry less of
the AU labels than it does. Their numbers say nothing about OpenFace.

The layout is what OpenFace 2.2's FeatureExtraction writes with `-gaze -pose -aus`, in the form
with a space after each comma (tests/fixtures/features/README.md: the sources read):
`frame` (1-based), `face_id`, `timestamp` ((frame - 1) / fps, 3 decimals), `confidence`, `success`,
the gaze vectors and angles, the head pose, 17 AU intensities (`_r`, 0-5) and 18 presences (`_c`).
Per frame:
- where the demo hides the face (corpus.json `face_hidden`): success 0, confidence 0.03 and zeros,
  as OpenFace writes a frame where tracking failed;
- the 11 AUs that both the demo and OpenFace have (not AU24, which OpenFace lacks):
  `_r` = 2.5 x label + N(0, 0.8), clipped to [0, 5]; `_c` = the label, flipped on 10 % of frames;
  an invalid label (-1) counts as 0;
- the other AUs, gaze and pose: noise only.

    python scripts/make_openface_demo.py --corpus data/demo --out data/openface-demo
"""

from __future__ import annotations

import argparse
import json
import zlib
from pathlib import Path

import numpy as np

AUS_R = ["01", "02", "04", "05", "06", "07", "09", "10", "12", "14", "15", "17", "20", "23", "25", "26", "45"]
AUS_C = AUS_R[:-1] + ["28", "45"]
HEADER = (["frame", "face_id", "timestamp", "confidence", "success"]
          + [f"gaze_{e}_{a}" for e in (0, 1) for a in "xyz"] + ["gaze_angle_x", "gaze_angle_y"]
          + [f"pose_{k}" for k in ("Tx", "Ty", "Tz", "Rx", "Ry", "Rz")]
          + [f"AU{a}_r" for a in AUS_R] + [f"AU{a}_c" for a in AUS_C])
README = """These CSV files are SYNTHETIC: made by scripts/make_openface_demo.py from the demo corpus's own
AU labels plus noise, in the layout of OpenFace 2.2's FeatureExtraction output. They are not
OpenFace output and their numbers say nothing about OpenFace.
"""


def demo_entries(corpus: Path) -> list[dict]:
    """Each entry of the demo corpus: name, frames, fps, hidden-face spans, AU annotation file."""
    meta = json.loads((corpus / "corpus.json").read_text())
    out = []
    for video in meta["videos"]:
        for person in video["persons"]:
            au = person["labels"].get("au")
            name = Path(person["labels"]["va"]["annotation"]).stem
            out.append({"name": name, "n": int(video["n_frames"]), "fps": float(video["fps"]),
                        "hidden": person["face_hidden"], "au": corpus / au["annotation"] if au else None})
    return out


def au_labels(path: Path | None, n: int) -> dict[str, np.ndarray]:
    """AU number ('01', ...) -> 0/1 labels (n,) from an Aff-Wild2 AU file (-1 read as 0)."""
    if path is None or not path.is_file():
        return {}
    lines = path.read_text().split()
    names = lines[0].split(",")
    rows = np.array([[int(v) for v in line.split(",")] for line in lines[1:]])[:n]
    rows = np.pad(rows, ((0, n - len(rows)), (0, 0)))
    return {f"{int(name[2:]):02d}": np.maximum(rows[:, j], 0) for j, name in enumerate(names)}


def rows_of(entry: dict, seed: int) -> list[str]:
    """The entry's CSV lines, header first (module docstring for the values)."""
    n, fps = entry["n"], entry["fps"]
    rng = np.random.default_rng([seed, zlib.crc32(entry["name"].encode())])
    labels = au_labels(entry["au"], n)
    hidden = np.zeros(n, bool)
    for start, stop in entry["hidden"]:
        hidden[start:stop] = True
    zero = np.zeros(n)
    au_r = {a: np.clip(2.5 * labels.get(a, zero) + rng.normal(0, 0.8, n), 0, 5) if a in labels
            else np.clip(np.abs(rng.normal(0, 0.5, n)), 0, 5) for a in AUS_R}
    au_c = {a: np.where(rng.random(n) < 0.1, 1 - labels[a], labels[a]) if a in labels
            else (rng.random(n) < 0.05).astype(float) for a in AUS_C}
    gaze = rng.normal(0, 0.1, (n, 2))
    pose = rng.normal(0, 0.1, (n, 3))
    lines = [", ".join(HEADER)]
    for i in range(n):
        ok = not hidden[i]
        cells = [f"{i + 1}", "0", f"{i / fps:.3f}", "0.98" if ok else "0.03", "1" if ok else "0"]
        g = gaze[i] if ok else np.zeros(2)
        cells += [f"{v:.6f}" for v in ([0.1, 0.2, -0.97, -0.1, 0.2, -0.97] if ok else [0] * 6)]
        cells += [f"{v:.3f}" for v in g]
        cells += [f"{v:.1f}" for v in ([10.0, 20.0, 500.0] if ok else [0, 0, 0])]
        cells += [f"{v:.3f}" for v in (pose[i] if ok else np.zeros(3))]
        cells += [f"{au_r[a][i] if ok else 0:.2f}" for a in AUS_R]
        cells += [f"{au_c[a][i] if ok else 0:.2f}" for a in AUS_C]
        lines.append(", ".join(cells))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=Path("data/demo"), help="a jmt demo corpus")
    parser.add_argument("--out", type=Path, default=Path("data/openface-demo"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    entries = demo_entries(args.corpus)
    for entry in entries:
        (args.out / f"{entry['name']}.csv").write_text("\n".join(rows_of(entry, args.seed)) + "\n")
    (args.out / "README.txt").write_text(README)
    print(f"{len(entries)} OpenFace-layout CSVs made from the demo's AU labels plus noise -> {args.out}")


if __name__ == "__main__":
    main()
