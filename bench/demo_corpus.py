"""Checks a generated demo corpus against what it claims (foundation issue acceptance).

For every video: ffprobe streams and durations, decoded frame count vs annotation lines,
and MTCNN (facenet-pytorch) face detection on every frame, split into frames where the
person's face is visible and frames where the generator hid it. For the corpus: how strongly
the decoded audio carries the labels (`voice_cues`: Pearson r of level and F0 with arousal,
of brightness with valence, measured with numpy alone). Writes a JSON report.

    python bench/demo_corpus.py data/demo --out docs/bench/demo_corpus_full.json
    python bench/demo_corpus.py /tmp/tiny --label "jmt demo --tiny" --out docs/bench/demo_corpus_tiny.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.demo.check import check_corpus


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--label", help="what to call the corpus in the report [default: its path]")
    args = ap.parse_args()
    report = check_corpus(args.corpus)
    if args.label:
        report["corpus"] = args.label
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    summary = {k: v for k, v in report.items() if k != "videos"}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
