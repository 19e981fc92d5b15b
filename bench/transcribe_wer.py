"""How well does `jmt transcribe` recognise the demo's words? pocketsphinx's word error rate on the
demo corpus with words (`demo.speech: words`, params-text.yaml), against the words the generator
placed (corpus.json, the heard ones: words inside the audio gap are not in the transcript either).

Runs the real stage (`run_transcribe` with `transcribe.source: pocketsphinx`) on the audio cache
of params-text.yaml's corpus (`make text` builds it; `jmt audio --params params-text.yaml` is
enough), writing its transcripts under --work, then scores each video (one track, one
transcript: a two-person video once), and the whole corpus by split.

    python bench/transcribe_wer.py --params params-text.yaml --out docs/bench/transcribe_wer.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import h5py

sys.path.insert(0, str(Path(__file__).resolve().parent))      # bench/: common.py
from common import REPO, write_json  # noqa: E402

from pipeline import cache  # noqa: E402
from pipeline.config import load_params  # noqa: E402
from pipeline.stage1.transcribe import read_words, run_transcribe  # noqa: E402
from pipeline.stage1.transcripts import recogniser_version, word_error_rate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=Path, default=REPO / "params-text.yaml")
    parser.add_argument("--work", type=Path, default=None, help="where the recognised transcripts go (default: a temp folder)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "transcribe_wer.json")
    args = parser.parse_args()
    base = load_params(args.params)
    corpus = base.path(base.corpus.root)
    meta = json.loads((corpus / "corpus.json").read_text())
    if meta.get("speech", {}).get("mode") != "words":
        sys.exit(f"{corpus}: not a demo corpus with words (demo.speech: words)")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        params = base.updated(transcribe={"source": "pocketsphinx", "out": str(work / "transcripts"),
                                          "on_error": "fail"})
        t0 = time.time()
        run_transcribe(params)
        seconds = time.time() - t0
        per_video, totals = {}, {}
        for video in meta["videos"]:
            said = [w["word"] for w in video.get("words", []) if w.get("heard", True)]
            entry = Path(video["persons"][0]["labels"]["va"]["annotation"]).stem
            with h5py.File(cache.entry_path(params.path(params.transcribe.out), entry)) as f:
                heard = list(read_words(f).text)
            wer = word_error_rate(said, heard)
            per_video[video["name"]] = {"split": video["split"], "words": len(said), "recognised": len(heard),
                                        "wer": round(wer, 4)}
            errors, words = totals.get(video["split"], (0.0, 0))
            totals[video["split"]] = (errors + wer * len(said), words + len(said))
    overall = sum(e for e, _ in totals.values()) / max(1, sum(n for _, n in totals.values()))
    result = {"corpus": str(corpus.relative_to(REPO) if corpus.is_relative_to(REPO) else corpus),
              "recogniser": recogniser_version("pocketsphinx"), "seconds": round(seconds, 1),
              "audio_seconds": round(sum(v["n_samples"] / v["sample_rate"] for v in meta["videos"]), 1),
              "wer": round(overall, 4),
              "wer_by_split": {s: round(e / max(1, n), 4) for s, (e, n) in totals.items()},
              "words": sum(n for _, n in totals.values()), "videos": per_video}
    write_json(args.out, result)
    print(f"pocketsphinx on {result['words']} words of {len(per_video)} videos: WER {overall:.3f} "
          f"({seconds:.0f} s for {result['audio_seconds']:.0f} s of audio) -> {args.out}")


if __name__ == "__main__":
    main()
