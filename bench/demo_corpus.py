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
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))      # bench/: common.py
from common import write_json  # noqa: E402

from pipeline.demo.check import check_corpus  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--label", help="what to call the corpus in the report [default: its path]")
    args = ap.parse_args()
    report = check_corpus(args.corpus)
    if args.label:
        report["corpus"] = args.label
    if args.out:
        write_json(args.out, report)
    summary = {k: v for k, v in report.items() if k != "videos"}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
