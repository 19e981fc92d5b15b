"""Stage 2 at Aff-Wild2 size (issue 12): is it still the fast loop at 2.8 million frames?

1. Writes an embeddings cache and a labels cache shaped like Aff-Wild2's valence-arousal set
   through the project's own writer (`cache.write_entry`, the layouts `jmt embed` and `jmt
   labels` write) under --work (`embeddings/`, `labels/`): 564 videos (341 train, 71
   validation, 152 test with hidden labels, as in the ABAW VA track), 2.8 M frames at 30 fps,
   lengths log-normal from 20 s to 15 min, every 20th video with two annotated people; two
   streams of random float16 features (default 512-d `visual`, 768-d `audio`); face, voice and
   -5 label runs at Aff-Wild2-like rates (about 93 %, 57 % and 3 % of frames); the va labels
   and splits in the labels cache. `--scale 0.05` writes 5 % of it.
2. Measures on it, each step in its own process with its page cache dropped first (cold reads;
   only this cache's pages, `posix_fadvise`), peak RSS of the process tree polled every 0.1 s:
   `jmt cache verify` and `jmt cache info` of the embeddings; the cache fingerprint (recorded
   hashes) against hashing every byte (the old way); `jmt compare` until its first run; `jmt train` (params
   defaults, jmt head) for a slice of an epoch: time to the first step, data loading vs compute,
   then its validation pass (what `jmt evaluate` runs on the validation split: every window,
   the official score); DataLoader workers 0 vs 1; one 2-minute and one 20-minute video through
   `predict_entry` (what `jmt predict` runs after stage 1: no labels); window reads in this
   layout against the old chunked gzip layout of the features.
3. Writes --out (docs/bench/scale.json) and prints it.

    python bench/scale.py                          # full size: ~7.3 GB under --work
    python bench/scale.py --scale 0.05 --steps 50  # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))      # bench/: common.py (also on bare machines)
from common import REPO, jmt, run_measured, write_json, write_params  # noqa: E402

import numpy as np  # noqa: E402

from pipeline import cache  # noqa: E402

FPS = 30.0
SPLITS = {"train": 341, "validation": 71, "test": 152}
FRAMES = 2_800_000
SECONDS = (20.0, 900.0)          # shortest and longest video
# (mean seconds present, mean seconds absent) of the alternating runs of each mask
FACE_RUNS, VOICE_RUNS, LABEL_RUNS = (20.0, 1.5), (4.0, 3.0), (100.0, 3.0)
STREAM_RUNS = {"visual": FACE_RUNS, "audio": VOICE_RUNS}
STREAM_INPUTS = {"visual": "crops", "audio": "logmel"}   # what a real backbone of each stream reads
TASK = "va"                      # the labels written (Aff-Wild2's VA track)
# the old embed layout (before cache.FEATURES), for the read comparison
OLD_FEATURES = {"compression": "gzip", "compression_opts": 1}


def caches(work: Path) -> tuple[Path, Path]:
    """The bench's embeddings and labels folders under `work`."""
    return work / "embeddings", work / "labels"


# ---- the cache ------------------------------------------------------------------------------

def plan(scale: float, seed: int) -> list[dict]:
    """The entries to write: name, video, split, side, frames (the lengths sum to FRAMES * scale)."""
    rng = np.random.default_rng(seed)
    videos = []
    for split, count in SPLITS.items():
        videos += [(split, i) for i in range(max(1, round(count * scale)))]
    seconds = np.exp(rng.normal(np.log(150.0), 0.8, len(videos)))
    people = np.where(np.arange(len(videos)) % 20 == 19, 2, 1)     # entries per video
    target = FRAMES * scale / FPS
    for _ in range(20):  # rescale to the total (of entries), keeping every length inside SECONDS
        seconds = np.clip(seconds * target / (seconds * people).sum(), *SECONDS)
    out = []
    for k, ((split, i), s) in enumerate(zip(videos, seconds)):
        video = f"{split[:3]}{i:03d}"
        sides = ("left", "right") if people[k] == 2 else (None,)
        for side in sides:
            out.append({"name": f"{video}_{side}" if side else video, "video": video, "split": split,
                        "side": side, "frames": int(s * FPS), "seed": seed * 100_003 + k * 2 + (side == "right")})
    return out


def runs(n: int, rng: np.random.Generator, on_s: float, off_s: float) -> np.ndarray:
    """(n,) bool: alternating runs, True for ~on_s seconds, False for ~off_s (exponential lengths)."""
    out = np.zeros(n, bool)
    i, on = 0, rng.random() < on_s / (on_s + off_s)
    while i < n:
        length = max(1, int(rng.exponential((on_s if on else off_s) * FPS)))
        out[i:i + length] = on
        i, on = i + length, not on
    return out


def write_entry(folder: Path, spec: dict, widths: dict[str, int], old_layout: bool = False,
                labels: Path | None = None) -> int:
    """One entry as `jmt embed` writes it (pipeline/stage1/embed.py process_entries) to `folder`
    (streams: name -> width, `visual` and `audio`) and, given a `labels` folder, its va labels
    as `jmt labels` writes them (pipeline/stage1/labels.py); returns the embeddings file's bytes."""
    rng = np.random.default_rng(spec["seed"])
    n = spec["frames"]
    features = {s: rng.standard_normal((n, d), np.float32).astype(np.float16) for s, d in widths.items()}
    t = np.arange(n) / FPS    # slow valence/arousal curves in [-1, 1]
    va = np.stack([np.sin(t / 17 + rng.random() * 6), np.sin(t / 11 + rng.random() * 6)], 1).astype(np.float32)
    va *= rng.uniform(0.3, 0.9)
    if spec["split"] == "test":
        va[:] = -5            # hidden, as Aff-Wild2's test labels are (an entry of Test_Set_names.txt)
    else:
        va[~runs(n, rng, *LABEL_RUNS)] = -5
    masks = {s: runs(n, rng, *STREAM_RUNS[s]) for s in widths}
    streams = [{"name": s, "backbone": "bench_random", "input": STREAM_INPUTS[s], "weights_sha256": "none",
                "weights": "RANDOM", "dim": d} for s, d in widths.items()]
    video = f"batch1/{spec['video']}.mp4"
    attrs = {"video": video, "fps": FPS, "n_frames": n, "side": spec["side"], "detector": "none (bench/scale.py)",
             "crop_size": 112, "sample_rate": 16000, "faces_config_hash": "bench", "audio_config_hash": "bench",
             "streams": streams}
    config = {"bench": "scale", "widths": widths, "seed": spec["seed"]}
    with cache.write_entry(folder, spec["name"], stage="embed", config=config, attrs=attrs) as f:
        for s, arr in features.items():
            layout = {**OLD_FEATURES, "chunks": (min(max(n, 1), 1024), arr.shape[1])} if old_layout else cache.FEATURES
            f.create_dataset(cache.stream_key(s, "features"), data=arr, **layout)
            f.create_dataset(cache.stream_key(s, "mask"), data=masks[s])
        f.create_dataset("timestamps", data=t)
    if labels is not None:
        meta = [{"task": TASK, "split": spec["split"], "annotation": None, "rows_minus_frames": 0,   # no file
                 "valid_frames": int((va != -5).all(1).sum())}]
        with cache.write_entry(labels, spec["name"], stage="labels", config={"bench": "scale", "seed": spec["seed"]},
                               attrs={"video": video, "side": spec["side"], "fps": FPS, "n_frames": n,
                                      "tasks": meta}) as f:
            f.create_dataset(cache.label_key(TASK), data=va)
    return cache.entry_path(folder, spec["name"]).stat().st_size


def write_cache(folder: Path, specs: list[dict], widths: dict[str, int], jobs: int,
                old_layout: bool = False, labels: Path | None = None) -> dict:
    """Writes every entry (`jobs` processes, one writer per file); returns what was written
    (`bytes`: the embeddings, `labels_bytes`: the labels when written)."""
    from multiprocessing import get_context

    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    args = [(folder, s, widths, old_layout, labels) for s in specs]
    if jobs > 1:
        with get_context("fork").Pool(jobs) as pool:
            sizes = pool.starmap(write_entry, args, chunksize=1)
    else:
        sizes = [write_entry(*a) for a in args]
    out = {"entries": len(specs), "frames": sum(s["frames"] for s in specs), "bytes": int(sum(sizes)),
           "seconds": round(time.time() - t0, 1), "jobs": jobs,
           "splits": {sp: sum(s["split"] == sp for s in specs) for sp in SPLITS},
           "longest_minutes": round(max(s["frames"] for s in specs) / FPS / 60, 1),
           "shortest_seconds": round(min(s["frames"] for s in specs) / FPS, 1)}
    if labels is not None:
        out["labels_bytes"] = sum(cache.entry_path(labels, s["name"]).stat().st_size for s in specs)
    return out


def ensure_cache(work: Path, scale: float, seed: int, widths: dict[str, int], jobs: int) -> dict:
    """The bench's caches under `work` (`caches`), written unless complete ones with the same
    spec and layouts are there."""
    folder, labels = caches(work)
    spec = {"scale": scale, "seed": seed, "widths": widths,
            "schemas": [cache.schema("embed"), cache.schema("labels")]}
    marker = folder / "bench.json"
    if marker.is_file() and json.loads(marker.read_text())["spec"] == spec:
        return {**json.loads(marker.read_text())["written"], "reused": True}
    marker.unlink(missing_ok=True)
    for p in (*folder.glob("*.h5"), *labels.glob("*.h5")):
        p.unlink()
    written = write_cache(folder, plan(scale, seed), widths, jobs, labels=labels)
    marker.write_text(json.dumps({"spec": spec, "written": written}) + "\n")
    return written


def current(folder: Path, specs: list[dict]) -> bool:
    """The folder holds exactly these entries, as embeddings files of this jmt's layout (a folder
    written by an older bench is rewritten)."""
    import h5py

    paths = [cache.entry_path(folder, s["name"]) for s in specs]
    if len(list(Path(folder).glob("*.h5"))) != len(specs) or not all(p.is_file() for p in paths):
        return False
    for p in paths:
        with h5py.File(p, "r") as f:
            if cache.attrs_of(f).get("schema") != cache.schema("embed"):
                return False
    return True


def evict(*folders: Path) -> None:
    """Drops these folders' files from the page cache (theirs only), so reads are cold."""
    for folder in folders:
        for p in Path(folder).glob("*.h5"):
            fd = os.open(p, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)


# ---- measuring a step in its own process ---------------------------------------------------

def measure(cmd: list[str], result: Path | None = None) -> dict:
    """Runs cmd; wall seconds, peak RSS of its process tree, and the JSON it wrote to `result`."""
    m = run_measured(cmd)
    out = {"seconds": round(m.seconds, 2), "peak_rss_mb": round(m.tree_rss / 1e6), "exit": m.returncode,
           "started_at": m.started_at}
    if m.returncode != 0:
        out["output"] = (m.stdout + m.stderr)[-2000:]
    if result is not None and result.is_file():
        out.update(json.loads(result.read_text()))
    return out


def child(step: str, work: Path, **kw) -> list[str]:
    out = [sys.executable, str(Path(__file__).resolve()), "--child", step, "--work", str(work)]
    for k, v in kw.items():
        out += [f"--{k.replace('_', '-')}", str(v)]
    return out


def _hwm() -> int:
    """This process's peak RSS so far (VmHWM), bytes."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:"))


# ---- the steps run in child processes --------------------------------------------------------

def run_child(args: argparse.Namespace) -> dict:
    """One measured step in this (child) process; returns what it measured."""
    t_import = time.time()
    from pipeline.cli import app  # noqa: F401  (what `jmt` imports before any command)
    from pipeline.config import load_params

    imported = time.time() - t_import
    params = load_params(args.work / "params.yaml")
    if args.child == "train":
        from pipeline.stage2.train import train_model

        r = train_model(params, quiet=True, max_steps=args.steps)
        return {"imports_s": imported, **r.timing, "frames_per_s": r.frames_per_s}
    if args.child == "compare":
        from pipeline.stage2 import compare

        class FirstRun(Exception):
            pass

        def stop(*_a, **_k):
            raise FirstRun(time.time())

        compare.load_run = stop  # called for the first (head, seed) after every start-up step
        try:
            compare.run_compare(params)
        except FirstRun as exc:
            return {"imports_s": imported, "first_run_at": exc.args[0]}
        raise SystemExit("jmt compare never reached its first run")
    import torch

    from pipeline.stage2.checkpoints import load as load_checkpoint
    from pipeline.stage2.data import load_entries
    from pipeline.stage2.windows import inference_hop, predict_entry
    from pipeline.tasks import tasks_of

    folder = args.work / "long"
    model, ckpt = load_checkpoint(params.path(params.train.out), folder)
    model.eval()
    window, device = ckpt.window, torch.device("cpu")
    tasks = tasks_of(model.tasks, params.tasks)
    entry = load_entries(folder, None, list(tasks), names=[args.entry])[0]   # no labels, as `jmt predict`
    t0 = time.time()   # the first forward pass sets up kernels: a fixed cost, timed apart
    with torch.no_grad():
        model({s: torch.zeros(32, window, entry.widths[s]) for s in entry.streams},
              {s: torch.ones(32, window, dtype=torch.bool) for s in entry.streams})
    warmup = time.time() - t0
    before = _hwm()
    t0 = time.time()
    raw = predict_entry(model, entry, window, inference_hop(window), device)
    pred = {t: task.postprocess(task.activate(raw[t])) for t, task in tasks.items()}   # as `jmt evaluate`
    return {"predict_s": time.time() - t0, "warmup_s": warmup, "frames": len(next(iter(pred.values()))),
            "hwm_before_mb": before / 1e6, "hwm_growth_mb": (_hwm() - before) / 1e6}


def loader_child(args: argparse.Namespace) -> dict:
    """`train_epoch` for --steps batches with 0 and with 1 DataLoader worker (same windows)."""
    import torch

    from pipeline.config import load_params
    from pipeline.stage2.data import WindowDataset, load_splits, stream_widths, window_loader
    from pipeline.stage2.heads import build_head
    from pipeline.stage2.train import Objective, head_kwargs, train_epoch
    from pipeline.tasks import tasks_of

    params = load_params(args.work / "params.yaml")
    cfg = params.train
    entries = load_splits(params).train   # preloaded below train.preload_max_mb, as `jmt train`
    model = build_head("jmt", **head_kwargs(params.model, stream_widths(entries), cfg.tasks))
    objective = Objective.of(tasks_of(cfg.tasks, params.tasks), cfg.task_weights, entries)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    out = {}
    for workers in (0, 1):
        evict(*caches(args.work))
        loader = window_loader(WindowDataset(entries, cfg.window, cfg.hop), batch_size=cfg.batch_size,
                               generator=torch.Generator().manual_seed(0), device=torch.device("cpu"),
                               workers=workers)
        ep = train_epoch(model, loader, opt, objective, device=torch.device("cpu"), amp=False,
                         scaler=torch.amp.GradScaler("cuda", enabled=False), max_steps=args.steps)
        out[str(workers)] = {"steps": ep.steps, "load_s": ep.load_s, "compute_s": ep.compute_s,
                             "load_share": ep.load_s / (ep.load_s + ep.compute_s),
                             "frames_per_s": ep.frames / (ep.load_s + ep.compute_s)}
    return out


def window_reads(folder: Path, window: int, batches: int, batch: int) -> dict:
    """Seconds per batch of `batch` random windows read by `CachedEntry.read` (every stream's features
    and mask; no labels), cold page cache."""
    from pipeline.stage2.data import load_entries
    from pipeline.stage2.windows import inference_hop, window_starts

    entries = load_entries(folder, None, [TASK], preload_max_mb=0)
    rng = np.random.default_rng(0)
    index = [(e, s) for e in entries for s in window_starts(e.n, window, inference_hop(window))]
    picks = rng.choice(len(index), batches * batch, replace=len(index) < batches * batch)
    evict(folder)
    t0 = time.time()
    for k in picks:
        e, s = index[k]
        e.read(s, s + window)
    contiguous = all(span is not None for span in entries[0].spans.values())
    return {"ms_per_batch": round((time.time() - t0) / batches * 1000, 2), "batches": batches, "batch": batch,
            "layout": "contiguous, pread" if contiguous else "chunks of 1024 rows, gzip 1, h5py"}


# ---- the whole bench -------------------------------------------------------------------------

def bench_params(work: Path) -> Path:
    """The repository's params with the bench's caches, no corpus, outputs under `work`, one epoch."""
    folder, labels = caches(work)
    return write_params(work, corpus={"root": str(work / "no-corpus")},   # names come from the caches alone
                        embed={"out": str(folder)}, labels={"out": str(labels)},
                        train={"out": str(work / "model.pt"), "live_dir": str(work / "live"), "epochs": 1},
                        evaluate={"metrics": str(work / "eval.json"), "out": str(work / "eval")},
                        compare={"runs": str(work / "runs"), "metrics": str(work / "compare.json"),
                                 "table": str(work / "compare.md")})


def gzip_saving(folder: Path) -> dict | None:
    """What the old layout's gzip (level 1, chunks of 1024 rows) saves on real float16
    embeddings (every stream's features in a demo cache), computed with zlib as HDF5's filter does."""
    import zlib

    import h5py

    raw, packed, files = 0, 0, sorted(Path(folder).glob("*.h5"))
    for p in files:
        with h5py.File(p, "r") as f:
            for stream in cache.attrs_of(f)["streams"]:
                x = f[cache.stream_key(stream["name"], "features")][...]
                for start in range(0, len(x), 1024):
                    chunk = np.ascontiguousarray(x[start:start + 1024]).tobytes()
                    raw, packed = raw + len(chunk), packed + len(zlib.compress(chunk, 1))
    return {"folder": str(folder), "entries": len(files), "raw_mb": round(raw / 1e6, 2),
            "gzip_mb": round(packed / 1e6, 2), "saved": round(1 - packed / raw, 3)} if raw else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of Aff-Wild2's size (entries and frames)")
    ap.add_argument("--visual-dim", type=int, default=512)
    ap.add_argument("--audio-dim", type=int, default=768)
    ap.add_argument("--steps", type=int, default=300, help="training batches timed (a slice of the epoch)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)), help="processes writing the cache")
    ap.add_argument("--work", type=Path, default=Path("/tmp/jmt-scale"))
    ap.add_argument("--out", type=Path, default=REPO / "docs/bench/scale.json")
    ap.add_argument("--demo-cache", type=Path, default=REPO / "data/cache/embeddings",
                    help="real embeddings, to measure what gzip saved on them")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--entry", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        result = loader_child(args) if args.child == "loader" else run_child(args)
        args.json.write_text(json.dumps(result) + "\n")
        return

    t_all = time.time()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    widths = {"visual": args.visual_dim, "audio": args.audio_dim}
    folder, labels = caches(work)
    out: dict = {"machine": {"cores": len(os.sched_getaffinity(0)), "python": sys.version.split()[0]},
                 "scale": args.scale, "widths": widths}
    out["cache"] = ensure_cache(work, args.scale, args.seed, widths, args.jobs)
    print(f"cache: {out['cache']}", flush=True)
    params = bench_params(work)
    res = work / "child.json"

    def step(name: str, cmd: list[str], evicted: bool = True) -> dict:
        res.unlink(missing_ok=True)
        if evicted:
            evict(folder, labels, work / "long")
        out[name] = measure(cmd, res)
        print(f"{name}: {json.dumps(out[name])}", flush=True)
        return out[name]

    step("verify", jmt("cache", "verify", str(folder)))
    step("info", jmt("cache", "info", str(folder)))
    from pipeline.stage2.compare.runs import files_fingerprint

    evict(folder)
    t0 = time.time()
    cache.folder_fingerprint(folder)
    recorded = time.time() - t0
    evict(folder)
    t0 = time.time()
    files_fingerprint([cache.entry_path(folder, n) for n in cache.entries(folder)], folder)
    out["fingerprint"] = {"recorded_hashes_s": round(recorded, 3), "every_byte_s": round(time.time() - t0, 1)}
    print(f"fingerprint: {out['fingerprint']}", flush=True)
    r = step("compare_startup", child("compare", work, json=res))
    r["until_first_run_s"] = round(r.pop("first_run_at", np.nan) - r["started_at"], 2)
    r = step("train", child("train", work, steps=args.steps, json=res))
    if r["exit"] == 0:
        r["first_step_s"] = round(r["first_step_at"] - r["started_at"], 2)
        r["load_share"] = round(r["load_s"] / (r["load_s"] + r["compute_s"]), 4)
        from pipeline.config import load_params
        from pipeline.stage2.windows import window_starts

        cfg = load_params(params).train
        windows = sum(len(window_starts(s["frames"], cfg.window, cfg.hop))
                      for s in plan(args.scale, args.seed) if s["split"] == "train")
        r["epoch_steps"] = windows // cfg.batch_size
        r["epoch_estimate_min"] = round(r["epoch_steps"] * (r["load_s"] + r["compute_s"]) / r["steps"] / 60, 1)
        step("loader_workers", child("loader", work, steps=max(10, args.steps // 4), json=res))
        long = work / "long"
        for p in long.glob("*.h5"):
            p.unlink()
        for minutes in (2, 20):
            spec = {"name": f"long{minutes:02d}", "video": f"long{minutes:02d}", "split": "test", "side": None,
                    "frames": int(minutes * 60 * FPS), "seed": minutes}
            write_entry(long, spec, widths)
            step(f"predict_{minutes}min", child("predict", work, entry=spec["name"], json=res))
    old = work / "old_layout"
    specs = [s for s in plan(args.scale, args.seed) if s["split"] == "train"][:16]
    small = work / "new_layout"
    for other, old_layout in ((old, True), (small, False)):
        if not current(other, specs):
            for p in other.glob("*.h5"):
                p.unlink()
            write_cache(other, specs, widths, args.jobs, old_layout=old_layout)
    out["window_reads"] = {name: window_reads(f, 64, 20, 16) for name, f in (("old", old), ("new", small))}
    out["demo_cache_gzip"] = gzip_saving(args.demo_cache)
    out["seconds"] = round(time.time() - t_all, 1)
    write_json(args.out, out)
    print(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
