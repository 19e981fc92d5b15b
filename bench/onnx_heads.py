"""ONNX export of the fusion heads (issue 20): per head, CPU time of PyTorch vs onnxruntime fp32 vs
onnxruntime int8 on the predict path (one thread, windows of the checkpoint's length, 32 a
batch, real features of the demo cache), the files' sizes, and what int8 costs on the
validation split's metric (valence-arousal CCC, scored as `jmt evaluate` scores it:
protocol.predict_split, then score, raw and post-processed), and the int8 error `jmt export
--int8` measures on the cache's features (export.int8_error: max |torch - int8| on the activated
outputs, where it occurs, against the bound; exported with force=True so a head above the bound
is measured too). Numbers -> JSON + stdout.

    python bench/onnx_heads.py --out docs/bench/onnx_heads.json
    python bench/onnx_heads.py --heads jmt concat --repeats 3 --out /tmp/onnx_heads.json   # quicker
    python bench/onnx_heads.py --int8-only --compare params-tasks.yaml --heads jmt concat --out /tmp/int8.json  # the int8 error only

`--int8-only` exports each checkpoint and reports only its int8 error, measured on the cache the
checkpoint was trained on (its params' embed.out): no timing, no validation scoring, any tasks.

Checkpoints: each head's seed-0 run of the comparison of `--compare` (a params file, default
params.yaml: `make compare-va`'s; its compare.json names each run's folder), scored on the cache params.yaml points at (checked to be the one they were
trained on). The timed batch is the same 32 windows for every head and runtime: the validation
entries' prediction windows (hop = window / 2, as predict_entry), first ones first; each runtime is
warmed up once, then timed `--repeats` times; the median is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))      # bench/: common.py
from common import REPO, comparison_runs, write_json  # noqa: E402

from pipeline.config import load_params  # noqa: E402
from pipeline.stage2 import checkpoints  # noqa: E402
from pipeline.stage2.data import load_splits, preload, read_window  # noqa: E402
from pipeline.infer.export import INT8_BOUND, export_checkpoint  # noqa: E402
from pipeline.infer.runtime import OnnxModel  # noqa: E402
from pipeline.stage2.protocol import labels_of, score, task_outputs  # noqa: E402
from pipeline.stage2.windows import inference_hop, predict_split, window_starts  # noqa: E402
from pipeline.tasks import tasks_of  # noqa: E402

HEADS = ["jmt", "mt", "jca", "rjca", "concat", "late", "only:visual", "only:audio"]
BATCH = 32


def timed_batch(entries, window: int) -> tuple[dict, dict]:
    """The first BATCH prediction windows of the entries, stacked: ({s: (B, T, D)}, {s: (B, T)})."""
    items = []
    for e in entries:
        items += [read_window(e, s, window) for s in window_starts(e.n, window, inference_hop(window))]
        if len(items) >= BATCH:
            break
    items = items[:BATCH]
    if len(items) < BATCH:
        raise SystemExit(f"only {len(items)} windows in the validation split, {BATCH} needed")
    return tuple({k: torch.stack([it[part][k] for it in items]) for k in items[0][part]}
                 for part in ("streams", "masks"))


def ms_per_call(model, streams, masks, repeats: int) -> float:
    """Median wall milliseconds of one call, after one warm-up call."""
    with torch.no_grad():
        model(streams, masks)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(streams, masks)
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def metrics(model, entries, window: int, tasks) -> dict:
    """Validation metrics of `model`: raw (activated) and post-processed, per task."""
    preds = predict_split(model, entries, window, inference_hop(window), torch.device("cpu"), tasks)
    out = {}
    for t, task in tasks.items():
        labels = labels_of(entries, t)
        raw = task_outputs(preds, t)
        post = {n: task.postprocess(p) for n, p in raw.items()}
        out[t] = {"raw": score(raw, labels, task, "validation"), "post": score(post, labels, task, "validation")}
    return out


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "docs/bench/onnx_heads.json")
    ap.add_argument("--compare", type=Path, default=REPO / "params.yaml",
                    help="params whose comparison's seed-0 runs are exported (their folders from its compare.json)")
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml", help="whose caches are scored")
    ap.add_argument("--heads", nargs="+", default=HEADS)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--int8-only", action="store_true", help="only the int8 error of each head's export")
    args = ap.parse_args()
    torch.set_num_threads(1)
    seed0 = {head: folder for head, _, folder in comparison_runs(args.compare, seeds=[0])}
    if args.int8_only:
        int8_only(args, seed0)
        return
    params = load_params(args.params)
    import onnxruntime

    results: dict = {"batch": BATCH, "threads": 1, "repeats": args.repeats, "cpu": cpu_name(),
                     "cpus_online": os.cpu_count(), "load_average_at_start": list(os.getloadavg()),
                     "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "heads": {}}
    with tempfile.TemporaryDirectory(prefix="jmt-onnx-bench-") as tmp:
        for name in args.heads:
            ckpt_path = seed0[name] / "model.pt"
            model, ckpt = checkpoints.load(ckpt_path, params.path(params.embed.out))
            model.eval()
            names = list(model.tasks)
            tasks = tasks_of(names, params.tasks)
            window = ckpt.window
            splits = load_splits(params, names, preload_max_mb=0)
            val = sorted({e.name: e for t in names for e in splits.validation[t]}.values(), key=lambda e: e.name)
            preload(val, params.train.preload_max_mb)
            t0 = time.perf_counter()
            r = export_checkpoint(ckpt_path, Path(tmp) / f"{name.replace(':', '_')}.onnx", int8=True,
                                  cache=params.path(params.embed.out), force=True)   # measured whatever it is
            export_s = time.perf_counter() - t0
            runtimes = {"torch": model, "onnx_fp32": OnnxModel(r.onnx, threads=1),
                        "onnx_int8": OnnxModel(r.int8, threads=1)}
            streams, masks = timed_batch(val, window)
            frames = BATCH * window
            shown = ckpt_path.relative_to(REPO) if ckpt_path.is_relative_to(REPO) else ckpt_path
            row: dict = {"checkpoint": str(shown),
                         "window": window, "frames_per_batch": frames, "export_s": round(export_s, 1),
                         "size_mb": {"checkpoint": round(ckpt_path.stat().st_size / 1e6, 2),
                                     "onnx_fp32": round(r.onnx.stat().st_size / 1e6, 2),
                                     "onnx_int8": round(r.int8.stat().st_size / 1e6, 2)},
                         "export_parity_max_abs": {"fp32": max(r.parity.values())},
                         "int8_error": json.loads(r.int8_error.to_meta()),
                         "ms_per_1000_frames": {}, "validation": {}}
            with torch.no_grad():
                ref = model(streams, masks)
            row["timed_batch_max_abs"] = {k: max(float((ref[t] - m(streams, masks)[t]).abs().max()) for t in names)
                                          for k, m in runtimes.items() if k != "torch"}
            for key, m in runtimes.items():
                row["ms_per_1000_frames"][key] = round(ms_per_call(m, streams, masks, args.repeats) / frames * 1000, 2)
            for key, m in runtimes.items():
                row["validation"][key] = metrics(m, val, window, tasks)
            results["heads"][name] = row
            va = {k: row["validation"][k]["va"]["post"]["ccc_mean"] for k in runtimes} if "va" in names else {}
            print(name, json.dumps({"ms_per_1000_frames": row["ms_per_1000_frames"], "size_mb": row["size_mb"],
                                    "ccc_mean_post": va, "export_s": row["export_s"]}), flush=True)
    results["load_average_at_end"] = list(os.getloadavg())
    write_json(args.out, results)
    print(table(results))


def int8_only(args: argparse.Namespace, seed0: dict[str, Path]) -> None:
    """`--int8-only`: each head's export and its int8 error on its own cache -> JSON + a table."""
    import onnxruntime

    results: dict = {"bound": INT8_BOUND, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                     "heads": {}}
    with tempfile.TemporaryDirectory(prefix="jmt-onnx-int8-") as tmp:
        for name in args.heads:
            ckpt_path = seed0[name] / "model.pt"
            r = export_checkpoint(ckpt_path, Path(tmp) / f"{name.replace(':', '_')}.onnx", int8=True, force=True)
            results["heads"][name] = {"checkpoint": str(ckpt_path), "int8_error": json.loads(r.int8_error.to_meta())}
            print(name, json.dumps(results["heads"][name]["int8_error"]), flush=True)
    write_json(args.out, results)
    print(int8_table(results))


def int8_table(results: dict) -> str:
    """The markdown table of docs/onnx.md: the int8 error per head, per task, against the bound."""
    heads = results["heads"]
    tasks = list(next(iter(heads.values()))["int8_error"]["per_task"]) if heads else []
    lines = [f"| head | max (activated) | at | {' | '.join(tasks)} | raw outputs | within {results['bound']:g} |",
             "| --- | --- | --- | " + "--- | " * len(tasks) + "--- | --- |"]
    for name, r in heads.items():
        e = r["int8_error"]
        per = " | ".join(f"{e['per_task'][t]:.4f}" for t in tasks)
        lines.append(f"| `{name}` | {e['max_abs']:.4f} | {e['task']} `{e['output']}` | {per} | "
                     f"{e['raw_max_abs']:.4f} | {'yes' if e['max_abs'] <= e['bound'] else '**no**'} |")
    return "\n".join(lines)


def table(results: dict) -> str:
    """The markdown table of docs/measurements.md."""
    lines = ["| head | PyTorch ms/1000 frames | onnxruntime fp32 | onnxruntime int8 | file MB fp32 / int8 | "
             "CCC V / A / mean fp32 | int8 | int8 - fp32 (mean) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in results["heads"].items():
        ms, mb = r["ms_per_1000_frames"], r["size_mb"]
        v = {k: r["validation"][k]["va"]["post"] for k in ("onnx_fp32", "onnx_int8")}
        fmt = lambda s: f"{s['ccc_valence']:.4f} / {s['ccc_arousal']:.4f} / {s['ccc_mean']:.4f}"  # noqa: E731
        lines.append(f"| `{name}` | {ms['torch']:.1f} | {ms['onnx_fp32']:.1f} | {ms['onnx_int8']:.1f} | "
                     f"{mb['onnx_fp32']:.2f} / {mb['onnx_int8']:.2f} | {fmt(v['onnx_fp32'])} | {fmt(v['onnx_int8'])} | "
                     f"{v['onnx_int8']['ccc_mean'] - v['onnx_fp32']['ccc_mean']:+.4f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
