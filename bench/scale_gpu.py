"""One epoch of jmt at Aff-Wild2 size on a GPU, with AMP (issue 12, item 5): frames/s, GPU
memory and the share of step time spent waiting for data.

The same code as `jmt train`: `load_entries` and `split_entries` over the embeddings and labels
caches (lazy: the train split is far above train.preload_max_mb), `window_loader` (its
DataLoader workers, pinned memory) and `train_epoch` with the run's `Objective` (autocast
float16, GradScaler, gradient clipping), on the caches bench/scale.py writes (written here
unless --work already holds them). The model, the training settings and the tasks are
params.yaml's (read with PyYAML, not validated): no dvclive needed, and no pydantic either
(pipeline/tasks' options are plain dataclasses; only pipeline/config.py needs pydantic), so it
runs on a bare GPU machine with torch, h5py, numpy, PyYAML, typer and rich.

The first epoch of each batch size starts with the cache dropped from the page cache (cold
reads), later ones read what the first left there.

    python bench/scale_gpu.py --device cuda                                   # -> docs/bench/scale_gpu.json
    python bench/scale_gpu.py --device cpu --scale 0.002 --batch-sizes 4 --epochs 1 --max-steps 3 --out /tmp/x.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))        # bench/: common.py, scale.py
from common import REPO, params_data, write_json  # noqa: E402


from scale import caches, ensure_cache, evict  # noqa: E402

import torch  # noqa: E402

from pipeline.stage2.data import (WindowDataset, feature_stats, load_entries, preload, split_entries,  # noqa: E402
                                  stream_widths, window_loader)
from pipeline.stage2.heads import build_head  # noqa: E402
from pipeline.stage2.protocol import labels_of, score, task_outputs  # noqa: E402
from pipeline.stage2.windows import inference_hop, predict_split  # noqa: E402
from pipeline.stage2.train import Objective, head_kwargs, seed_everything, train_epoch  # noqa: E402
from pipeline.tasks import TASKS, build_task  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--visual-dim", type=int, default=512)
    ap.add_argument("--audio-dim", type=int, default=768)
    ap.add_argument("--batch-sizes", default="16,256", help="comma-separated; params.yaml's is 16")
    ap.add_argument("--epochs", type=int, default=2, help="epochs per batch size (the first one cold)")
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers [default: data.loader_workers]")
    ap.add_argument("--max-steps", type=int, default=None, help="batches per epoch at most (quick checks)")
    ap.add_argument("--no-deterministic", action="store_true",
                    help="allow non-deterministic kernels (jmt train asks for deterministic ones)")
    ap.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)), help="processes writing the cache")
    ap.add_argument("--work", type=Path, default=Path("/tmp/jmt-scale"))
    ap.add_argument("--out", type=Path, default=REPO / "docs/bench/scale_gpu.json")
    args = ap.parse_args()

    p = params_data()
    model_cfg, cfg = SimpleNamespace(**p["model"]), SimpleNamespace(**p["train"])
    cfg.tasks = list(getattr(cfg, "tasks", None) or ["va"])
    options = p.get("tasks") or {}
    tasks = {t: build_task(t, TASKS.get(t).Options(**options.get(t, {}))) for t in cfg.tasks}
    device = torch.device(args.device)
    out: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                 "torch": torch.__version__, "cores": len(os.sched_getaffinity(0)), "scale": args.scale,
                 "model": p["model"], "tasks": cfg.tasks, "window": cfg.window, "hop": cfg.hop,
                 "amp": device.type == "cuda"}
    folder, labels = caches(args.work)
    out["cache"] = ensure_cache(args.work, args.scale, 0, {"visual": args.visual_dim, "audio": args.audio_dim},
                                args.jobs)
    print(f"cache: {out['cache']}", flush=True)

    t0 = time.time()
    splits = split_entries(load_entries(folder, labels, cfg.tasks), cfg.tasks)
    train, val = splits.train, splits.union("validation")
    preload(train, cfg.preload_max_mb)
    preload(val, cfg.preload_max_mb)
    widths = stream_widths(train + val)
    stats = {s: feature_stats(train, s) for s in sorted(widths)} if getattr(model_cfg, "standardize", True) else None
    objective = Objective.of(tasks, getattr(cfg, "task_weights", None) or {}, train)
    out["load_split_and_stats_s"] = round(time.time() - t0, 2)
    out["runs"] = []
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        gen = seed_everything(cfg.seed)
        if args.no_deterministic:
            torch.use_deterministic_algorithms(False)
        model = build_head(model_cfg.fusion, **head_kwargs(model_cfg, widths, cfg.tasks))
        if stats is not None:
            model.set_input_stats(stats)
        model.to(device)
        loader = window_loader(WindowDataset(train, cfg.window, cfg.hop), batch_size=batch_size, generator=gen,
                               device=device, workers=args.workers)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        amp = device.type == "cuda"
        scaler = torch.amp.GradScaler("cuda", enabled=amp)
        for epoch in range(args.epochs):
            if epoch == 0:
                evict(folder, labels)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            e0 = time.time()
            ep = train_epoch(model, loader, opt, objective, device=device, amp=amp, scaler=scaler,
                             grad_clip=cfg.grad_clip, modality_dropout=cfg.modality_dropout, generator=gen,
                             max_steps=args.max_steps)
            seconds = time.time() - e0
            row = {"batch_size": batch_size, "epoch": epoch, "cold": epoch == 0, "workers": loader.num_workers,
                   "pin_memory": loader.pin_memory, "seconds": round(seconds, 2), "steps": ep.steps,
                   "frames": ep.frames, "frames_per_s": round(ep.frames / seconds),
                   "compute_ms_per_step": round(ep.compute_s / max(1, ep.steps) * 1000, 2),
                   "deterministic": not args.no_deterministic,
                   "load_share": round(ep.load_s / (ep.load_s + ep.compute_s), 4), "loss": round(ep.loss, 4)}
            if device.type == "cuda":
                row["gpu_max_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / 1e6)
                row["gpu_max_reserved_mb"] = round(torch.cuda.max_memory_reserved(device) / 1e6)
            out["runs"].append(row)
            print(json.dumps(row), flush=True)
        del loader  # stops its workers
    v0 = time.time()
    model.eval()
    with torch.autocast("cuda", dtype=torch.float16, enabled=device.type == "cuda"):
        preds = predict_split(model, val, cfg.window, inference_hop(cfg.window), device, tasks)
    out["validation"] = {"seconds": round(time.time() - v0, 2), "frames": sum(e.n for e in val)}
    for name, task in tasks.items():   # each task's main metric (va: ccc_mean), on its own validation split
        s = score(task_outputs(preds, name), labels_of(splits.validation[name], name), task, "validation")
        out["validation"][task.metric if name == "va" else f"{name}_{task.metric}"] = round(s[task.metric], 4)
    print(json.dumps(out["validation"]), flush=True)
    write_json(args.out, out)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
