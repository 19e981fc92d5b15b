"""Live mode and the causal protocol (issue 20): `jmt live` latency and dropped frames at two
sizes, and the metric cost of causal mode per head. Numbers -> JSON + stdout.

    python bench/live.py --out docs/bench/live.json
    python bench/live.py --parts causal --out /tmp/c.json
    python bench/live.py --parts live --only 320x240_15fps --load 1 --out docs/bench/live.json

1. live: `jmt live VIDEO` at the video's own frame rate (`-re`, frames dropped when behind), the
   repository's checkpoint (models/model.pt: jmt on the demo's fer_xception + logmel_stats
   streams), on a demo validation video (320x240, 15 fps) and on the same video scaled to
   640x480 and resampled to 30 fps; per-frame latency (decoder -> JSON line) p50/p95/p99 and
   the dropped frames, each run in a fresh process, with the checkpoint's faces.detect_every (2:
   the face held every other frame), with MTCNN on every frame, and with the head's ONNX export
   in onnxruntime (`--runtime onnx`); `--only` picks some of the six runs, `--live-threads` runs
   each with `jmt live --threads N` (default: jmt's own, one), `--load N` runs N busy processes
   beside them (a Python busy loop each, one core's worth; stopped at the end) and records them:
   a machine whose cores are taken by something else (issue 25). A run is keyed by its name,
   `_load<N>` and `_threads<N>` when given; the file's other live runs are kept;
2. causal: every run of the comparison of `--compare` (default params.yaml; its compare.json names the runs' folders) scored on the
   demo's validation and test splits with the offline protocol and with the causal one (the same
   models, the same frames): CCC mean per head, mean over seeds, and the difference.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))      # bench/: common.py
from common import REPO, comparison_runs, write_json  # noqa: E402

from pipeline.config import load_params  # noqa: E402
from pipeline.device import resolve_device  # noqa: E402
from pipeline.stage2 import checkpoints  # noqa: E402
from pipeline.stage2.windows import inference_hop, predict_split  # noqa: E402
from pipeline.stage2.data import load_splits, preload  # noqa: E402
from pipeline.infer.export import export_checkpoint  # noqa: E402
from pipeline.stage2.protocol import labels_of, score, task_outputs  # noqa: E402
from pipeline.tasks import tasks_of  # noqa: E402

VIDEO = "data/demo/videos/batch1/demo_17.mp4"   # a validation video of the demo (10 s, 15 fps)
CONFIGS = ("320x240_15fps", "320x240_15fps_detect_every_1", "320x240_15fps_onnx",
           "640x480_30fps", "640x480_30fps_detect_every_1", "640x480_30fps_onnx")
BUSY = "while True: pass"   # one core's worth of work, as another program on the machine would be


@contextlib.contextmanager
def busy_cores(n: int):
    """n busy-loop processes beside the block; yields a dict filled at the end with what they
    did: {"busy_processes", "what", "wall_s", "busy_cpu_s"} (their CPU time, from wait4)."""
    record = {"busy_processes": n, "what": f"{n} x python -c {BUSY!r}" if n else "none"}
    procs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(n)]
    t0 = time.time()
    try:
        yield record
    finally:
        cpu = 0.0
        for p in procs:
            p.send_signal(signal.SIGKILL)
            _, _, usage = os.wait4(p.pid, 0)
            p.returncode = -signal.SIGKILL   # reaped here: Popen must not wait for it again
            cpu += usage.ru_utime + usage.ru_stime
        record["wall_s"] = round(time.time() - t0, 1)
        record["busy_cpu_s"] = round(cpu, 1)


def live_run(video: Path, checkpoint: Path, work: Path, name: str, extra: list[str]) -> dict:
    """One `jmt live` run at real time in a fresh process: its summary and per-frame latencies."""
    out, summary = work / f"{name}.jsonl", work / f"{name}.json"
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "pipeline", "live", str(video), "--checkpoint", str(checkpoint),
                    "--out", str(out), "--summary", str(summary), *extra], cwd=REPO, check=True, capture_output=True)
    result = json.loads(summary.read_text())
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    result["wall_s"] = round(time.time() - t0, 1)
    result["frames_in_video"] = len(lines)
    return result


def part_live(checkpoint: Path, video: Path, only: list[str], load: int, threads: list[int] | None) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        big = work / "640x480_30fps.mp4"
        if any(name.startswith("640x480") for name in only):
            subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(video), "-vf", "scale=640:480,fps=30",
                            "-c:v", "libx264", "-crf", "20", "-c:a", "copy", str(big)], check=True)
        graph = work / "model.onnx"
        if any(name.endswith("_onnx") for name in only):
            export_checkpoint(checkpoint, graph)
        onnx = ["--runtime", "onnx", "--onnx", str(graph)]
        runs = {"320x240_15fps": (video, []),
                "320x240_15fps_detect_every_1": (video, ["--detect-every", "1"]),
                "320x240_15fps_onnx": (video, onnx),
                "640x480_30fps": (big, []),
                "640x480_30fps_detect_every_1": (big, ["--detect-every", "1"]),
                "640x480_30fps_onnx": (big, onnx)}
        with busy_cores(load) as beside:
            for name in only:
                for n in threads or [None]:
                    key = name + (f"_load{load}" if load else "") + (f"_threads{n}" if n else "")
                    r = live_run(runs[name][0], checkpoint, work, key,
                                 runs[name][1] + (["--threads", str(n)] if n else []))
                    r["busy_processes_beside"] = load
                    out[key] = r
                    print(f"live {key}: {r['processed']} processed, {r['dropped']} dropped of {r['frames']}; "
                          f"latency ms p50 {r['latency_ms']['p50']}, p95 {r['latency_ms']['p95']}, "
                          f"p99 {r['latency_ms']['p99']}; threads {r.get('threads')}", flush=True)
        if load:
            print(f"load: {beside}", flush=True)
            for r in out.values():
                r["load"] = beside
    return out


def part_causal(compare: Path) -> dict:
    params = load_params(REPO / "params.yaml")
    device = resolve_device("cpu")
    splits = load_splits(params, ["va"], preload_max_mb=0)
    tasks = tasks_of(["va"], params.tasks)
    window = params.train.window
    by_head: dict = {}
    for head, _, folder in comparison_runs(compare):
        model, _ = checkpoints.load(folder / "model.pt", params.path(params.embed.out))
        model.to(device).eval()
        row = {}
        for split in ("validation", "test"):
            entries = splits.union(split)
            preload(entries, params.train.preload_max_mb)
            labels = labels_of(splits.of(split)["va"], "va")
            for protocol in ("offline", "causal"):
                t0 = time.time()
                with torch.no_grad():
                    raw = predict_split(model, entries, window, inference_hop(window), device, tasks, protocol=protocol)
                post = {n: {t: tasks[t].postprocess(p[t]) for t in tasks} for n, p in raw.items()}
                s = score(task_outputs(post, "va"), labels, tasks["va"], split)
                row[f"{split}/{protocol}"] = round(s["ccc_mean"], 4)
                row[f"{split}/{protocol}_seconds"] = round(time.time() - t0, 2)
        by_head.setdefault(head, []).append(row)
        print(f"causal {folder.name}: " + ", ".join(f"{k} {v}" for k, v in row.items() if "seconds" not in k),
              flush=True)
    summary = {}
    for head, rows in by_head.items():
        s = {}
        for split in ("validation", "test"):
            off = [r[f"{split}/offline"] for r in rows]
            cau = [r[f"{split}/causal"] for r in rows]
            s[split] = {"offline": round(float(np.mean(off)), 4), "causal": round(float(np.mean(cau)), 4),
                        "difference": round(float(np.mean(np.subtract(cau, off))), 4),
                        "difference_sd": round(float(np.std(np.subtract(cau, off), ddof=1)), 4) if len(rows) > 1 else None,
                        "seconds_offline": round(float(np.mean([r[f"{split}/offline_seconds"] for r in rows])), 2),
                        "seconds_causal": round(float(np.mean([r[f"{split}/causal_seconds"] for r in rows])), 2)}
        summary[head] = {"seeds": len(rows), **s}
    return {"compare": str(compare), "metric": "va ccc_mean (post-processed, as jmt compare)", "heads": summary}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=["live", "causal"], choices=["live", "causal"])
    ap.add_argument("--checkpoint", type=Path, default=REPO / "models/model.pt")
    ap.add_argument("--compare", type=Path, default=REPO / "params.yaml",
                    help="params whose comparison's runs the causal part scores")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the causal part")
    ap.add_argument("--video", type=Path, default=REPO / VIDEO, help="the live part's video (320x240, 15 fps)")
    ap.add_argument("--only", nargs="+", default=list(CONFIGS), choices=CONFIGS, help="the live runs to do")
    ap.add_argument("--load", type=int, default=0, metavar="N",
                    help="N busy processes (one core each) beside the live runs, stopped at the end")
    ap.add_argument("--live-threads", type=int, nargs="+", default=None, metavar="N",
                    help="run each live run with `jmt live --threads N` for each N [default: jmt's own]")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    result: dict = {"machine": "this 2-core CPU", "torch_threads_causal": args.threads}
    if "live" in args.parts:
        old = json.loads(args.out.read_text()).get("live", {}) if args.out.is_file() else {}
        result["live"] = {**old, **part_live(args.checkpoint, args.video, args.only, args.load, args.live_threads)}
    if "causal" in args.parts:
        torch.set_num_threads(args.threads)
        result["causal"] = part_causal(args.compare)
    write_json(args.out, result, merge=True)


if __name__ == "__main__":
    main()
