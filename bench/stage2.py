"""Stage-2 benchmark: training throughput of every head on the demo cache; one epoch on the
cached embeddings vs the same epoch re-running the frozen backbones on the cached face crops
and spectrograms in the loop (the JMT authors' design); and the share of step time spent
loading data. Same data, same run. Numbers -> JSON + stdout.

    python bench/stage2.py --out docs/bench/stage2.json
    python bench/stage2.py --heads concat jmt --visual-backbones fer_xception --out /tmp/stage2.json  # quicker

Every registered head, the unimodal reference once per stream (`only:<stream>`), with the
params' streams and tasks (`train.tasks`: the loss is the run's `Objective`). The in-loop
comparison swaps the backbone of one stream (`--stream`, default visual) for each of
`--visual-backbones`; every stream's backbone must read crops or log-mel windows (a waveform
backbone runs over whole tracks, not per window).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))      # bench/: common.py
from common import REPO, write_json  # noqa: E402

from pipeline import cache  # noqa: E402
from pipeline.config import load_params  # noqa: E402
from pipeline.stage1.embed import Backbones, audio_windows  # noqa: E402
from pipeline.stage2.data import WindowDataset, load_splits, read_window, stream_widths  # noqa: E402
from pipeline.stage2.windows import window_starts  # noqa: E402
from pipeline.stage2.heads import HEADS, build_head, head_names  # noqa: E402
from pipeline.stage2.train import Objective, head_kwargs  # noqa: E402
from pipeline.tasks import tasks_of  # noqa: E402

RAW = ("crops", "logmel")   # the inputs a window of RawWindows holds


def epoch(model, batches, opt, objective: Objective, backbones=None) -> dict:
    """One training epoch; returns seconds, frames, and seconds spent getting batches."""
    model.train()
    load_s, frames, t0 = 0.0, 0, time.time()
    it = iter(batches)
    while True:
        l0 = time.time()
        try:
            batch = next(it)
        except StopIteration:
            break
        if backbones is not None:  # the authors' design: frozen backbones inside the loop
            batch = backbones(batch)
        load_s += time.time() - l0
        pred = model(batch["streams"], batch["masks"])
        loss = objective.loss(pred, batch)
        if loss is None:
            continue
        opt.zero_grad()
        loss.backward()
        opt.step()
        frames += next(iter(batch["masks"].values())).numel()   # B * T
    return {"seconds": time.time() - t0, "frames": frames, "load_seconds": load_s}


def cached_vs_in_loop(model, cached, raw, objective: Objective, batch_size: int, backbones) -> tuple[dict, dict]:
    """One epoch of `model` on the cached windows (after a warm-up epoch), then one on the raw
    windows with `backbones` run on every batch: (cached, in loop), as `epoch` returns them."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    fast_loader = torch.utils.data.DataLoader(cached, batch_size=batch_size, shuffle=True)
    slow_loader = torch.utils.data.DataLoader(raw, batch_size=batch_size, shuffle=True)
    epoch(model, fast_loader, opt, objective)  # warm-up
    return epoch(model, fast_loader, opt, objective), epoch(model, slow_loader, opt, objective, backbones=backbones)


def _rows(a: np.ndarray, start: int, window: int) -> torch.Tensor:
    """Rows [start, start + window) of a per-frame array, zero-padded past its end."""
    x = a[start:start + window]
    if len(x) < window:
        x = np.concatenate([x, np.zeros((window - len(x), *x.shape[1:]), x.dtype)])
    return torch.as_tensor(x)


class RawWindows(torch.utils.data.Dataset):
    """The same windows as WindowDataset, but holding decoded face crops and log-mel windows
    (from the faces/audio caches, under `raw`) instead of embeddings; masks, labels and valid
    frames as WindowDataset has them."""

    def __init__(self, params, entries, window: int, hop: int) -> None:
        self.items = []
        for e in entries:
            with cache.open_entry(cache.entry_path(params.path(params.faces.out), e.name)) as f, \
                    cache.open_entry(cache.entry_path(params.path(params.audio.out), e.name)) as a:
                raw = {"crops": cache.read_crops(f),
                       "logmel": audio_windows(a["logmel"][...], a["frame_end"][...], int(a.attrs["window_frames"]),
                                               float(a.attrs["log_floor"]))}
            for s in window_starts(e.n, window, hop):
                item = read_window(e, s, window)
                self.items.append({"raw": {k: _rows(v, s, window) for k, v in raw.items()},
                                   **{k: item[k] for k in ("masks", "labels", "valid")}})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _map(fn, nested: dict) -> dict:
    """fn applied to every tensor of a nested dict."""
    return {k: _map(fn, v) if isinstance(v, dict) else fn(v) for k, v in nested.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "docs/bench/stage2.json")
    ap.add_argument("--visual-backbones", nargs="+", default=["fer_xception", "timm:resnet18"])
    ap.add_argument("--stream", default="visual", help="the stream whose backbone --visual-backbones replace")
    ap.add_argument("--heads", nargs="+", default=None,
                    help="heads timed [default: every registered head, only:* = one per stream]")
    args = ap.parse_args()
    torch.manual_seed(0)
    params = load_params(REPO / "params.yaml")
    cfg = params.train
    entries = load_splits(params).train
    streams = stream_widths(entries)
    if args.stream not in streams:
        raise SystemExit(f"--stream {args.stream}: the cache's streams are {', '.join(streams)}")
    tasks = tasks_of(cfg.tasks, params.tasks)
    objective = Objective.of(tasks, cfg.task_weights, entries)
    cached = WindowDataset(entries, cfg.window, cfg.hop)
    loader = torch.utils.data.DataLoader(cached, batch_size=cfg.batch_size, shuffle=True)
    results = {"windows": len(cached), "window": cfg.window, "batch_size": cfg.batch_size, "tasks": list(tasks),
               "streams": streams, "heads": {}}
    heads = args.heads or [n if n != "only" else "only:*" for n in HEADS.names()]
    for name in head_names(heads, list(streams)):
        model = build_head(name, **head_kwargs(params.updated(model={"fusion": name}).model, streams, cfg.tasks))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        epoch(model, loader, opt, objective)  # warm-up epoch
        r = epoch(model, loader, opt, objective)
        results["heads"][name] = {"frames_per_s": round(r["frames"] / r["seconds"], 1),
                                  "epoch_s": round(r["seconds"], 2),
                                  "data_loading_share": round(r["load_seconds"] / r["seconds"], 4)}
        print(name, results["heads"][name], flush=True)

    # cached embeddings vs frozen backbones in the loop: same head, same windows, per backbone
    raw_set = RawWindows(params, entries, cfg.window, cfg.hop)
    results["cached_vs_in_loop"] = {}
    for visual in args.visual_backbones:
        p = params.updated(embed={f"streams.{args.stream}": {"name": visual, "allow_random": visual.startswith("timm:")}})
        nets = Backbones(p)
        waveform = [s for s, kind in nets.inputs.items() if kind not in RAW]
        if waveform:
            raise SystemExit(f"streams {', '.join(waveform)}: a waveform backbone cannot run per window here")

        def run_backbones(batch, nets=nets):
            b, t = next(iter(batch["masks"].values())).shape
            out = {}
            for s, net in nets.nets.items():
                x = batch["raw"][nets.inputs[s]]
                y = nets.run(net, x.reshape(b * t, *x.shape[2:]).numpy())
                out[s] = torch.as_tensor(y).reshape(b, t, -1).half().float()   # float16, as the cache stores them
            return {**batch, "streams": out}

        # the cache: the same backbones run once over every window (what stage 1 stores)
        cached_items = [_map(lambda v: v[0], {k: v for k, v in run_backbones(_map(lambda v: v.unsqueeze(0), item)).items()
                                              if k != "raw"}) for item in raw_set.items]
        widths = {s: int(v.shape[-1]) for s, v in cached_items[0]["streams"].items()}
        model = build_head("jmt", **head_kwargs(params.model, widths, cfg.tasks))
        fast, slow = cached_vs_in_loop(model, cached_items, raw_set, objective, cfg.batch_size, run_backbones)
        results["cached_vs_in_loop"][visual] = {
            "epoch_cached_s": round(fast["seconds"], 2), "epoch_backbones_in_loop_s": round(slow["seconds"], 2),
            "speedup": round(slow["seconds"] / fast["seconds"], 1), f"{args.stream}_dim": widths[args.stream]}
        print(visual, results["cached_vs_in_loop"][visual], flush=True)
    others = "; ".join(f"{s} backbone: {bp.name}" for s, bp in params.embed.streams.items() if s != args.stream)
    results["note"] = (f"head: jmt; {others}; timm backbones with random weights (same "
                       "compute as trained ones); the in-loop epoch starts from JPEG-decoded crops and log-mel "
                       "windows already in memory, so it excludes video decoding, face detection and "
                       "spectrograms: a lower bound on the authors' per-epoch cost")
    write_json(args.out, results)
    print(json.dumps({k: v for k, v in results.items() if k != "heads"}, indent=1))


if __name__ == "__main__":
    main()
