"""The two-stream valence-arousal path before and after a code change (the streams-and-tasks
refactor), side by side in one run on this machine: each head's training seconds (one seed, the
comparison's recipe and threads) and `jmt compare`'s wall time when every run is reused (its own
work: loading the caches, scoring the availability subsets, intervals, bootstrap, latency,
tables), the old and the new code alternating so that drift in the machine's speed hits both.

The old code is checked out from git (`--old-ref`) into a temporary folder and run with it first
on PYTHONPATH; it reads its own caches (`--old-params`: a params file whose caches the old code
wrote, e.g. a clone of the old commit after `make demo`); the new code reads `--new-params`. Both
must hold the same corpus; each needs its runs already done for the compare timing (its
compare.runs), which this bench never trains (it would take the full comparison's time).

    .venv/bin/python bench/refactor_speed.py --old-ref b479f1c --old-params ../old/params.yaml \\
        --out docs/bench/refactor_speed.json

Numbers: docs/measurements.md, *Streams and tasks: speed of the two-stream path*.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))   # bench/: common.py
from common import REPO, write_json  # noqa: E402

# the old code's unimodal names -> the new ones
NEW_NAME = {"audio_only": "only:audio", "visual_only": "only:visual"}


def child_train(params_path: str, head: str, out: str) -> dict:
    """In the child process: one run of `head`, seed 0, with the comparison's threads; seconds."""
    import torch

    from pipeline.config import load_params
    from pipeline.stage2.train import train_model

    p = load_params(params_path)
    threads = max(1, int(p.run.compare.cpus))
    changes = {"fusion": head}, {"seed": 0, "out": str(Path(out) / "model.pt"), "live_dir": str(Path(out) / "live")}
    if hasattr(p, "updated"):
        run = p.updated(model=changes[0], train=changes[1])
    else:  # the old code: no Params.updated
        run = p.model_copy(update={"model": p.model.model_copy(update=changes[0]),
                                   "train": p.train.model_copy(update=changes[1])})
        run._root = p.root
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    result = train_model(run, quiet=True)
    return {"seconds": round(time.perf_counter() - t0, 2), "epochs": len(result.history),
            "best_epoch": result.best_epoch, "threads": threads}


def _run(code_root: Path, args: list[str]) -> tuple[float, str]:
    """A command with `code_root` first on PYTHONPATH; (wall seconds, stdout)."""
    env = {**os.environ, "PYTHONPATH": str(code_root), "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(args, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, proc.stdout


def train_seconds(code_root: Path, params: Path, head: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="jmt-speed-") as tmp:
        _, out = _run(code_root, [sys.executable, str(Path(__file__).resolve()), "--child-train", str(params),
                                  head, tmp])
    return json.loads(out.strip().splitlines()[-1])


def compare_seconds(code_root: Path, params: Path) -> float:
    """`jmt compare` wall time with every run reused (fails when one would train)."""
    wall, out = _run(code_root, [sys.executable, "-m", "pipeline", "compare", "--params", str(params)])
    if " 0 runs trained" not in out.replace("\n", " "):
        raise SystemExit(f"{params}: compare trained runs; do the full comparison first (this bench only "
                         "times its reused path)")
    return round(wall, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old-ref", required=True, help="git revision of the old code")
    parser.add_argument("--old-params", type=Path, required=True, help="params file of the old code's caches")
    parser.add_argument("--new-params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--heads", default="jmt,mt,jca,rjca,concat,late,audio_only,visual_only",
                        help="heads, by their old names")
    parser.add_argument("--compare-repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "docs/bench/refactor_speed.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="jmt-old-") as tmp:
        old = Path(tmp) / "code"
        archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", args.old_ref, "pipeline"],
                                 capture_output=True, check=True).stdout
        old.mkdir()
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        heads = [h.strip() for h in args.heads.split(",") if h.strip()]
        rows = []
        for i, head in enumerate(heads):
            versions = [("old", old, args.old_params, head), ("new", REPO, args.new_params, NEW_NAME.get(head, head))]
            if i % 2:  # alternate which goes first
                versions.reverse()
            row = {"head": NEW_NAME.get(head, head)}
            for tag, code, params, name in versions:
                row[tag] = train_seconds(code, params, name)
                print(f"{name} {tag}: {row[tag]}", flush=True)
            row["new_over_old"] = round(row["new"]["seconds"] / row["old"]["seconds"], 3)
            rows.append(row)
        compare = {"old": [], "new": []}
        for i in range(args.compare_repeats):
            for tag, code, params in ([("old", old, args.old_params), ("new", REPO, args.new_params)][::1 - 2 * (i % 2)]):
                compare[tag].append(compare_seconds(code, params))
                print(f"compare {tag}: {compare[tag][-1]} s", flush=True)
    out = {"old_ref": args.old_ref, "new": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                                          capture_output=True, text=True).stdout.strip() + " + tree",
           "train": rows,
           "train_total_new_over_old": round(sum(r["new"]["seconds"] for r in rows)
                                             / sum(r["old"]["seconds"] for r in rows), 3),
           "compare_reused_s": compare,
           "compare_median_new_over_old": round(sorted(compare["new"])[len(compare["new"]) // 2]
                                                / sorted(compare["old"])[len(compare["old"]) // 2], 3)}
    write_json(args.out, out)
    print(json.dumps({k: v for k, v in out.items() if k != "train"}, indent=1))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child-train":
        print(json.dumps(child_train(*sys.argv[2:])))
    else:
        main()
