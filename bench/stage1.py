"""Stage-1 benchmark: throughput of faces / audio / labels / embed, optimised vs simple faces
path, and peak memory of `jmt faces` on a short and a 10x longer video. Numbers -> JSON + stdout.

    python bench/stage1.py --corpus data/demo --work /tmp/bench1 --out docs/bench/stage1.json

Every comparison is measured in the same run, on the same data (the machine is shared and
noisy: ratios are more trustworthy than absolute numbers). Each stage runs as `jmt <stage>` in
a fresh process; peak RSS is the process's own (getrusage, as `/usr/bin/time -f %M`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))      # bench/: common.py
from common import CACHE_FOLDERS, REPO, jmt, run_measured, write_json, write_params  # noqa: E402

SIMPLE = {"batch_size": 1, "detect_every": 1, "detect_max_side": None, "prefetch": False}


def run(stage: str, params: Path) -> dict:
    """Runs `jmt <stage>` in a fresh process; returns wall time, peak RSS and the report."""
    m = run_measured(jmt(stage, "--params", str(params)))
    if m.returncode != 0:
        raise SystemExit(f"jmt {stage} failed:\n{m.stderr[-2000:]}")
    report = json.loads((params.parent / "cache" / CACHE_FOLDERS[stage] / "report.json").read_text())
    frames = sum(s["frames"] for s in report["done"].values())
    rate = round(frames / report["seconds"], 1) if report["seconds"] else None   # labels: text files, fast
    return {"wall_s": round(m.seconds, 1), "stage_s": report["seconds"], "frames": frames,
            "frames_per_s": rate, "peak_rss_mb": round(m.max_rss / 2**20, 1)}


def make_clip(folder: Path, seconds: float, width: int = 320, height: int = 240) -> Path:
    """One demo-style video (Aff-Wild2 layout) of the given length, with its annotation."""
    from pipeline.config import DemoSize, load_params
    from pipeline.demo.generate import VideoPlan, render_video

    demo = load_params(REPO / "params.yaml").updated(demo={"width": width, "height": height}).demo
    size = DemoSize(train=1, validation=1, test=1, seconds=seconds, occlusion_seconds=2.0,
                    audio_gap_seconds=2.0, invalid_label_seconds=0.0)
    plan = VideoPlan(index=1, name="clip", split="Train_Set", batch="batch1", fps=demo.fps,
                     n_frames=int(seconds * demo.fps), sides=(None,))
    render_video(plan, demo, size, seed=0, root=folder)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=REPO / "data/demo")
    ap.add_argument("--work", type=Path, default=Path("/tmp/jmt-bench-stage1"))
    ap.add_argument("--out", type=Path, default=REPO / "docs/bench/stage1.json")
    ap.add_argument("--short-seconds", type=float, default=30.0)
    args = ap.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    results: dict = {"corpus": str(args.corpus)}

    # 1. faces: optimised (params.yaml) vs simple (one frame at a time), then audio, labels and embed.
    opt = write_params(args.work / "opt", args.corpus)
    simple = write_params(args.work / "simple", args.corpus, faces=SIMPLE)
    results["faces_optimised"] = run("faces", opt)
    results["faces_simple"] = run("faces", simple)
    results["faces_speedup"] = round(results["faces_optimised"]["frames_per_s"]
                                     / results["faces_simple"]["frames_per_s"], 2)
    results["audio"] = run("audio", opt)
    results["labels"] = run("labels", opt)
    results["embed"] = run("embed", opt)
    sizes = sum(p.stat().st_size for p in (args.work / "opt/cache/faces").glob("*.h5"))
    results["faces_bytes_per_1000_frames"] = round(sizes / results["faces_optimised"]["frames"] * 1000)

    # 2. the same on an HD clip (1280x720), where detecting at reduced resolution matters.
    hd = make_clip(args.work / "hd_corpus", 10.0, 1280, 720)
    results["hd_faces_optimised"] = run("faces", write_params(args.work / "hd_opt", hd))
    results["hd_faces_simple"] = run("faces", write_params(args.work / "hd_simple", hd, faces=SIMPLE))
    results["hd_faces_speedup"] = round(results["hd_faces_optimised"]["frames_per_s"]
                                        / results["hd_faces_simple"]["frames_per_s"], 2)

    # 3. memory: a video 10x longer must not need much more memory (streaming).
    short = make_clip(args.work / "short_corpus", args.short_seconds)
    long = make_clip(args.work / "long_corpus", 10 * args.short_seconds)
    results["memory_short"] = run("faces", write_params(args.work / "short", short))
    results["memory_long"] = run("faces", write_params(args.work / "long", long))
    results["memory_ratio_long_over_short"] = round(results["memory_long"]["peak_rss_mb"]
                                                    / results["memory_short"]["peak_rss_mb"], 3)
    write_json(args.out, results)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
