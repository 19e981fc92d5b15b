"""The CUDA paths, checked and timed on a GPU machine in one go (results -> one JSON):

1. faces: MTCNN detection on CUDA vs this machine's CPU cores, frames/s on demo frames
   (JPEGs made by `--prepare`: the GPU machine may have no ffmpeg); and, where ffmpeg is
   there, `jmt faces` itself on CUDA over the demo corpus;
2. embed: `run_embed` on CUDA (autocast float16) over the demo's faces and audio caches:
   frames/s, and per stream the largest difference from the CPU embeddings made here;
3. train: `train_model` of jmt on CUDA with AMP over the demo embeddings and labels caches:
   seconds per epoch, and that it learns (validation CCC mean of the va task).

The GPU machine may lack dvclive (it pulls dvc and ~60 packages): training's metric logging is
then a no-op, and the output says so.

    python bench/gpu_checks.py --prepare .gpu          # here: frames + caches to carry
    python bench/gpu_checks.py --run .gpu --out OUT.json   # there
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))      # bench/: common.py
from common import REPO, write_json, write_params  # noqa: E402


def prepare(folder: Path, corpus: Path, caches: Path, n_frames: int, n_entries: int) -> None:
    """Decodes demo frames to JPEG; copies the demo corpus, the embeddings and labels caches and
    the faces/audio caches of the first `n_entries` entries (the carried tree must stay < 64 MB)."""
    from PIL import Image

    from pipeline.media import iter_frames, probe_video

    frames = folder / "frames"
    frames.mkdir(parents=True, exist_ok=True)
    k = 0
    for video in sorted(corpus.rglob("*.mp4")):
        info = probe_video(video)
        for batch in iter_frames(video, info.width, info.height, batch=64):
            for frame in batch:
                Image.fromarray(frame).save(frames / f"{k:05d}.jpg", quality=95)
                k += 1
                if k >= n_frames:
                    break
            if k >= n_frames:
                break
        if k >= n_frames:
            break
    for sub in ("embeddings", "labels"):
        shutil.copytree(caches / sub, folder / "cache" / sub, dirs_exist_ok=True)
    for sub in ("faces", "audio"):
        (folder / "cache" / sub).mkdir(parents=True, exist_ok=True)
        for path in sorted((caches / sub).glob("*.h5"))[:n_entries]:
            shutil.copy2(path, folder / "cache" / sub / path.name)
    shutil.copytree(corpus, folder / "demo", dirs_exist_ok=True)
    print(f"{k} frames, caches and corpus -> {folder}")


def detect_rate(frames: np.ndarray, device: str, batch: int) -> float:
    import torch

    from pipeline.stage1.detect import Detector

    det = Detector(device=torch.device(device), max_side=480, min_face_size=20)
    det(frames[:batch])  # warm-up (cuDNN autotune, oneDNN primitives)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.time()
    found = 0
    for i in range(0, len(frames), batch):
        found += sum(len(d.boxes) > 0 for d in det(frames[i:i + batch]))
    if device == "cuda":
        torch.cuda.synchronize()
    return round(len(frames) / (time.time() - t0), 1), found


def params_for(folder: Path, work: Path, **sections):
    """params.yaml at `work`: the carried demo corpus, the stage-1 caches under `work`
    (faces, audio, labels, embeddings), then `sections` (write_params' overrides)."""
    from pipeline.config import load_params

    return load_params(write_params(work, folder / "demo", caches=".", **sections))


def run(folder: Path, out: Path) -> None:
    import h5py
    import torch
    from PIL import Image

    from pipeline import cache

    res: dict = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
                 "cpu_cores": os.cpu_count(), "ffmpeg": bool(shutil.which("ffmpeg") and shutil.which("ffprobe"))}
    print(json.dumps(res), flush=True)

    # 1. detection
    frames = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted((folder / "frames").glob("*.jpg"))])
    res["detect"] = {"frames": len(frames), "size": list(frames.shape[1:3])}
    for device, batch in (("cuda", 32), ("cuda", 128), ("cpu", 32)):
        rate, found = detect_rate(frames, device, batch)
        res["detect"][f"{device}_batch{batch}_frames_per_s"] = rate
        res["detect"][f"{device}_batch{batch}_frames_with_face"] = int(found)
    print(json.dumps(res["detect"]), flush=True)
    if res["ffmpeg"]:
        from pipeline.stage1.faces import run_faces

        r = run_faces(params_for(folder, Path("/tmp/gpu-faces"), faces={"device": "cuda"}))
        frames_done = sum(s["frames"] for s in r.done.values())
        res["faces_stage_cuda"] = {"frames": frames_done, "seconds": round(r.seconds, 1),
                                   "frames_per_s": round(frames_done / r.seconds, 1)}
        print(json.dumps(res["faces_stage_cuda"]), flush=True)

    # 2. embed on CUDA over the carried caches, against the CPU embeddings made on the dev machine
    from pipeline.stage1.embed import run_embed

    work = Path("/tmp/gpu-embed")
    shutil.rmtree(work, ignore_errors=True)
    params = params_for(folder, work, embed={"device": "cuda"})
    for sub in ("faces", "audio"):
        shutil.copytree(folder / "cache" / sub, work / sub)
    r = run_embed(params)
    n = sum(s["frames"] for s in r.done.values())
    diffs = {name: 0.0 for name in params.embed.streams}
    for name in cache.entries(work / "embeddings"):  # the carried entries (others: skipped, no input)
        with h5py.File(work / "embeddings" / f"{name}.h5") as g, \
                h5py.File(folder / "cache/embeddings" / f"{name}.h5") as c:
            for k in diffs:
                key = cache.stream_key(k, "features")
                a, b = g[key][...].astype(np.float32), c[key][...].astype(np.float32)
                scale = float(np.abs(b).max()) or 1.0
                diffs[k] = max(diffs[k], float(np.abs(a - b).max()) / scale)
    res["embed_cuda"] = {"entries": len(r.done), "frames": n, "seconds": round(r.seconds, 2),
                         "frames_per_s": round(n / r.seconds, 1),
                         "max_abs_diff_vs_cpu_relative_to_max": {k: round(v, 5) for k, v in diffs.items()}}
    print(json.dumps(res["embed_cuda"]), flush=True)

    # 3. train jmt on CUDA with AMP (the carried CPU embeddings and labels)
    try:
        import dvclive  # noqa: F401
    except ImportError:
        # The GPU machine cannot install dvclive (it pulls dvc and ~60 packages, no registry
        # there): this check's metric logging goes to a no-op. Stated in the output.
        import types

        class _NoLive:
            def __init__(self, *a, **k): pass
            def __getattr__(self, name): return lambda *a, **k: None

        sys.modules["dvclive"] = types.SimpleNamespace(Live=_NoLive)
        res["train_note"] = "dvclive absent on the GPU machine: metric logging replaced by a no-op here"
    from pipeline.stage2.train import train_model

    tw = Path("/tmp/gpu-train")
    shutil.rmtree(tw, ignore_errors=True)
    params = params_for(folder, tw, train={"device": "cuda", "amp": True, "epochs": 20,
                                           "out": str(tw / "model.pt"), "live_dir": str(tw / "live")},
                        embed={"out": str(folder / "cache/embeddings")}, labels={"out": str(folder / "cache/labels")})
    torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    trained = train_model(params, quiet=True)
    secs = time.time() - t0
    res["train_cuda_amp"] = {"epochs": len(trained.history), "seconds": round(secs, 1),
                             "seconds_per_epoch": round(secs / len(trained.history), 2),
                             "best_epoch": trained.best_epoch,
                             "best_validation_ccc_mean": round(max(h["val_va_ccc_mean"] for h in trained.history), 4),
                             "train_frames_per_s": round(trained.frames_per_s, 1),
                             "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)}
    print(json.dumps(res["train_cuda_amp"]), flush=True)
    write_json(out, res)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepare", type=Path)
    ap.add_argument("--corpus", type=Path, default=REPO / "data/demo")
    ap.add_argument("--caches", type=Path, default=REPO / "data/cache")
    ap.add_argument("--frames", type=int, default=256)
    ap.add_argument("--entries", type=int, default=12)
    ap.add_argument("--run", type=Path)
    ap.add_argument("--out", type=Path, default=Path("gpu_checks.json"))
    args = ap.parse_args()
    if args.prepare:
        prepare(args.prepare, args.corpus, args.caches, args.frames, args.entries)
    elif args.run:
        run(args.run, args.out)
    else:
        ap.error("--prepare FOLDER or --run FOLDER")


if __name__ == "__main__":
    main()
