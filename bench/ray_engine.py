"""The Ray engine on this machine: 2 workers vs 1 for `jmt faces` and `jmt compare`, Ray's
overhead per video with empty work, and the driver's peak RSS on the demo corpus vs a 10x
larger one. Every cluster is real (pipeline.local_cluster: `ray start --head` + `ray start
--address`, one CPU per node, loopback only) and every command a fresh `jmt` process.

    python bench/ray_engine.py --corpus data/demo --embeddings data/cache/embeddings \\
        --labels data/cache/labels --work /tmp/bench-ray --out docs/bench/ray_engine.json

Ratios are measured in one run, back to back (the machine is shared and noisy). Peak RSS is the
driver process's own (getrusage, as `/usr/bin/time -f %M`): Ray's workers are the cluster's
processes, not the driver's.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))      # bench/: common.py
from common import REPO, run_measured, write_json, write_params  # noqa: E402
from common import jmt as jmt_command  # noqa: E402

from pipeline.local_cluster import LocalCluster  # noqa: E402

COMPARE_HEADS, COMPARE_SEEDS = ["concat", "late"], [0, 1, 2]


def timed(args: list[str], env: dict | None = None) -> dict:
    """Runs a command in a fresh process: wall seconds and peak RSS (MB)."""
    m = run_measured(args, env=env)
    if m.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{m.stderr[-3000:]}")
    return {"wall_s": round(m.seconds, 2), "peak_rss_mb": round(m.max_rss / 2**20, 1), "stdout": m.stdout}


def jmt(command: str, params: Path, address: str | None) -> dict:
    env = {"RAY_ADDRESS": address} if address else None
    out = timed(jmt_command(command, "--params", str(params)), env)
    out.pop("stdout")
    return out


def scaled_corpus(corpus: Path, folder: Path, copies: int) -> Path:
    """A manifest corpus listing every demo entry `copies` times (symlinked videos, distinct
    names), each with its annotation and split for every task the demo labels (va:
    `annotation`,`split`; another task: `<task>_annotation`,`<task>_split`)."""
    from pipeline.corpus.entries import affwild2

    folder.mkdir(parents=True, exist_ok=True)
    entries = affwild2(corpus).entries
    tasks = sorted({t for e in entries for t in e.labels})
    columns = {t: ("annotation", "split") if t == "va" else (f"{t}_annotation", f"{t}_split") for t in tasks}
    rows = []
    for e in entries:
        for k in range(copies):
            link = folder / "videos" / f"{e.video.stem}-{k}{e.video.suffix}"
            link.parent.mkdir(exist_ok=True)
            if not link.exists():
                link.symlink_to(e.video.resolve())
            row = {"video": str(link), "name": f"{e.name}-{k}", "side": e.side or ""}
            for t, (ann, split) in columns.items():
                label = e.labels.get(t)
                row[ann] = str(label.path or "") if label else ""
                row[split] = label.split if label else ""
            rows.append(row)
    with (folder / "manifest.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["video", "name", "side", *(c for pair in columns.values() for c in pair)])
        w.writeheader()
        w.writerows(rows)
    return folder / "manifest.csv"


# ------------------------------------------------------------------- empty work (a driver run)

class EmptyProcess:
    """A stage's process that does nothing: what is left is the engine's own cost."""

    def __call__(self, video, entries, hashes, advance):
        return {e.name: {"frames": 0} for e in entries}


def empty_driver(params_file: Path) -> None:
    """`run_stage` over the corpus with empty work (run in a fresh process for its peak RSS)."""
    from pipeline.config import load_params
    from pipeline.corpus.entries import load_corpus
    from pipeline.stage1.runner import run_stage

    params = load_params(params_file)
    out = params.path("cache/empty")
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.time()
    result = run_stage("empty", out, load_corpus(params), {"empty": 1}, "fail", EmptyProcess(),
                       lambda v: 1, run=params.run, resources=params.run.audio)
    print(json.dumps({"videos": len(load_corpus(params).videos()), "stage_s": round(time.time() - t0, 3),
                      "done": len(result.done)}))


def empty(params_file: Path, address: str | None) -> dict:
    env = {"RAY_ADDRESS": address} if address else None
    out = timed([sys.executable, __file__, "--empty-driver", str(params_file)], env)
    stats = json.loads(out.pop("stdout").strip().splitlines()[-1])
    return {**out, **stats, "ms_per_video": round(1000 * stats["stage_s"] / stats["videos"], 1)}


# --------------------------------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=REPO / "data/demo")
    ap.add_argument("--embeddings", type=Path, default=REPO / "data/cache/embeddings")
    ap.add_argument("--labels", type=Path, default=REPO / "data/cache/labels", help="the labels of --embeddings")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench-ray"))
    ap.add_argument("--out", type=Path, default=REPO / "docs/bench/ray_engine.json")
    ap.add_argument("--skip", nargs="*", default=[], choices=["empty", "faces", "compare"])
    ap.add_argument("--empty-driver", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.empty_driver:
        return empty_driver(args.empty_driver)
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    shutil.rmtree(args.work, ignore_errors=True)
    result: dict = {"machine": f"{os.cpu_count()} CPU cores", "corpus": str(args.corpus),
                    "workers": "Ray nodes of one CPU each on this machine (loopback)"}
    ray = {"engine": "ray", "address": "auto"}

    if "empty" not in args.skip:
        ten = scaled_corpus(args.corpus, args.work / "x10", 10)
        one = write_params(args.work / "empty-1x", args.corpus, run=ray)
        tenp = write_params(args.work / "empty-10x", args.corpus, run=ray,
                            corpus={"layout": "manifest", "manifest": str(ten)})
        local = write_params(args.work / "empty-local", args.corpus)
        result["empty"] = {"local_1x": empty(local, None)}
        with LocalCluster(nodes=2, cpus=1) as c:
            empty(one, c.address)  # warm: the workers' first start is not per-video overhead
            result["empty"]["ray_1x"] = empty(one, c.address)
            result["empty"]["ray_10x"] = empty(tenp, c.address)
        print(json.dumps(result["empty"], indent=1), flush=True)

    if "faces" not in args.skip:
        faces = {"local_engine": jmt("faces", write_params(args.work / "faces-local", args.corpus), None)}
        for workers in (1, 2):
            with LocalCluster(nodes=workers, cpus=1) as c:
                faces[f"ray_{workers}_worker"] = jmt("faces", write_params(args.work / f"faces-{workers}",
                                                                            args.corpus, run=ray), c.address)
        faces["speedup_2_vs_1"] = round(faces["ray_1_worker"]["wall_s"] / faces["ray_2_worker"]["wall_s"], 2)
        result["faces"] = faces
        print(json.dumps(faces, indent=1), flush=True)

    if "compare" not in args.skip:
        cmp = {"heads": COMPARE_HEADS, "seeds": COMPARE_SEEDS}
        runs = {"heads": COMPARE_HEADS, "seeds": COMPARE_SEEDS, "reference": COMPARE_HEADS[0]}
        for workers in (1, 2):
            folder = args.work / f"compare-{workers}"
            params = write_params(folder, args.corpus, run=ray, embed={"out": str(args.embeddings.resolve())},
                                  labels={"out": str(args.labels.resolve())},
                                  compare={**runs, "runs": "runs", "metrics": "compare.json", "table": "compare.md"})
            with LocalCluster(nodes=workers, cpus=1) as c:
                cmp[f"ray_{workers}_worker"] = jmt("compare", params, c.address)
        cmp["speedup_2_vs_1"] = round(cmp["ray_1_worker"]["wall_s"] / cmp["ray_2_worker"]["wall_s"], 2)
        a = json.loads((args.work / "compare-1/compare.json").read_text())["runs"]
        b = json.loads((args.work / "compare-2/compare.json").read_text())["runs"]
        cmp["same_scores_1_vs_2_workers"] = all(
            x["validation"] == y["validation"] and x.get("test") == y.get("test") for x, y in zip(a, b))
        result["compare"] = cmp
        print(json.dumps(cmp, indent=1), flush=True)

    write_json(args.out, result, merge=True)   # keeps the parts skipped this time
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
