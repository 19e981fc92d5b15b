"""Stage-2 benchmark: training throughput of every head on the demo cache; one epoch on the
cached embeddings vs the same epoch re-running the frozen backbones on the cached face crops
and spectrograms in the loop (the JMT authors' design); and the share of step time spent
loading data. Same data, same run. Numbers -> JSON + stdout.

    python bench/stage2.py --out docs/bench/stage2.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from pipeline import cache
from pipeline.config import BackboneParams, load_params
from pipeline.stage1.embed import Backbones, audio_windows
from pipeline.stage2.data import WindowDataset, dims, load_split, window_starts
from pipeline.stage2.heads import HEADS, build_head
from pipeline.stage2.train import ccc_loss, head_kwargs

REPO = Path(__file__).resolve().parent.parent


def epoch(model, batches, opt, backbones=None) -> dict:
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
        pred = model(batch["audio"], batch["visual"], batch["audio_mask"], batch["visual_mask"])
        loss = ccc_loss(pred, batch["labels"], batch["label_mask"])
        if loss is None:
            continue
        opt.zero_grad()
        loss.backward()
        opt.step()
        frames += batch["labels"].shape[0] * batch["labels"].shape[1]
    return {"seconds": time.time() - t0, "frames": frames, "load_seconds": load_s}


class RawWindows(torch.utils.data.Dataset):
    """The same windows as WindowDataset, but holding decoded face crops and log-mel windows
    (from the faces/audio caches) instead of embeddings."""

    def __init__(self, params, entries, window: int, hop: int) -> None:
        self.items = []
        for e in entries:
            with cache.open_entry(cache.entry_path(params.path(params.faces.out), e.name)) as f, \
                    cache.open_entry(cache.entry_path(params.path(params.audio.out), e.name)) as a:
                crops = cache.read_crops(f)
                wins = audio_windows(a["logmel"][...], a["frame_end"][...], int(a.attrs["window_frames"]),
                                     float(a.attrs["log_floor"]))
            arr = e.read(0, e.n)
            for s in window_starts(e.n, window, hop):
                sl = slice(s, s + window)
                self.items.append({"crops": torch.as_tensor(crops[sl]), "logmel": torch.as_tensor(wins[sl]),
                                   **{k: torch.as_tensor(arr[k][sl]) for k in
                                      ("audio_mask", "visual_mask", "labels", "label_mask")}})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "docs/bench/stage2.json")
    ap.add_argument("--visual-backbones", nargs="+", default=["fer_xception", "timm:resnet18"])
    args = ap.parse_args()
    torch.manual_seed(0)
    params = load_params(REPO / "params.yaml")
    cfg = params.train
    entries = load_split(params.path(params.embed.out), "train", preload_max_mb=cfg.preload_max_mb)
    da, dv = dims(entries)
    cached = WindowDataset(entries, cfg.window, cfg.hop)
    loader = torch.utils.data.DataLoader(cached, batch_size=cfg.batch_size, shuffle=True)
    results = {"windows": len(cached), "window": cfg.window, "batch_size": cfg.batch_size, "heads": {}}
    for name in HEADS.names():
        model = build_head(name, **head_kwargs(params.model.model_copy(update={"fusion": name}), da, dv))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        epoch(model, loader, opt)  # warm-up epoch
        r = epoch(model, loader, opt)
        results["heads"][name] = {"frames_per_s": round(r["frames"] / r["seconds"], 1),
                                  "epoch_s": round(r["seconds"], 2),
                                  "data_loading_share": round(r["load_seconds"] / r["seconds"], 4)}
        print(name, results["heads"][name], flush=True)

    # cached embeddings vs frozen backbones in the loop: same head, same windows, per backbone
    raw_set = RawWindows(params, entries, cfg.window, cfg.hop)
    results["cached_vs_in_loop"] = {}
    for visual in args.visual_backbones:
        bp = BackboneParams(name=visual, allow_random=visual.startswith("timm:"))
        p = params.model_copy(update={"embed": params.embed.model_copy(update={"visual": bp})})
        p._root = params.root
        nets = Backbones(p)

        def run_backbones(batch, nets=nets):
            b, t = batch["labels"].shape[:2]
            vis = nets.run(nets.visual, batch["crops"].reshape(b * t, *batch["crops"].shape[2:]).numpy())
            aud = nets.run(nets.audio, batch["logmel"].reshape(b * t, *batch["logmel"].shape[2:]).numpy())
            return {**batch, "visual": torch.as_tensor(vis).reshape(b, t, -1).half().float(),
                    "audio": torch.as_tensor(aud).reshape(b, t, -1).half().float()}

        # the cache: the same backbones run once over every window (what stage 1 stores)
        cached_items = [run_backbones({k: v.unsqueeze(0) for k, v in item.items()}) for item in raw_set.items]
        cached_items = [{k: v[0] for k, v in it.items() if k not in ("crops", "logmel")} for it in cached_items]
        vdim, adim = cached_items[0]["visual"].shape[1], cached_items[0]["audio"].shape[1]
        model = build_head("jmt", **head_kwargs(params.model, adim, vdim))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        fast_loader = torch.utils.data.DataLoader(cached_items, batch_size=cfg.batch_size, shuffle=True)
        slow_loader = torch.utils.data.DataLoader(raw_set, batch_size=cfg.batch_size, shuffle=True)
        epoch(model, fast_loader, opt)  # warm-up
        fast = epoch(model, fast_loader, opt)
        slow = epoch(model, slow_loader, opt, backbones=run_backbones)
        results["cached_vs_in_loop"][visual] = {
            "epoch_cached_s": round(fast["seconds"], 2), "epoch_backbones_in_loop_s": round(slow["seconds"], 2),
            "speedup": round(slow["seconds"] / fast["seconds"], 1), "visual_dim": int(vdim)}
        print(visual, results["cached_vs_in_loop"][visual], flush=True)
    results["note"] = ("head: jmt; audio backbone: logmel_stats; timm backbones with random weights (same "
                       "compute as trained ones); the in-loop epoch starts from JPEG-decoded crops and log-mel "
                       "windows already in memory, so it excludes video decoding, face detection and "
                       "spectrograms: a lower bound on the authors' per-epoch cost")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "heads"}, indent=1))


if __name__ == "__main__":
    main()
