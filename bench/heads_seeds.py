"""Trains and evaluates every fusion head over several seeds on the demo cache and writes a
table (validation and test CCC, mean +- std over seeds). A stopgap for the README until
`jmt compare` exists; it calls the same train/evaluate functions.

    python bench/heads_seeds.py --seeds 0 1 2 --out docs/bench/heads_seeds.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from pipeline.config import load_params
from pipeline.stage2.evaluate import evaluate_model
from pipeline.stage2.heads import HEADS
from pipeline.stage2.train import train_model

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--heads", nargs="+", default=HEADS.names())
    ap.add_argument("--work", type=Path, default=Path("/tmp/jmt-heads-seeds"))
    ap.add_argument("--out", type=Path, default=REPO / "docs/bench/heads_seeds.json")
    args = ap.parse_args()
    base = load_params(REPO / "params.yaml")
    runs = []
    for head in args.heads:
        for seed in args.seeds:
            t0 = time.time()
            work = args.work / f"{head}-{seed}"
            params = base.model_copy(update={
                "model": base.model.model_copy(update={"fusion": head}),
                "train": base.train.model_copy(update={"seed": seed, "out": str(work / "model.pt"),
                                                       "live_dir": str(work / "live")}),
                "evaluate": base.evaluate.model_copy(update={"metrics": str(work / "eval.json"),
                                                             "out": str(work / "eval")}),
            })
            params._root = base.root
            trained = train_model(params, quiet=True)
            result = evaluate_model(params)
            runs.append({"head": head, "seed": seed, "epochs": len(trained.history),
                         "best_epoch": trained.best_epoch, "parameters": trained.parameters,
                         "train_frames_per_s": round(trained.frames_per_s, 1), "seconds": round(time.time() - t0, 1),
                         "validation": result["validation"]["post"], "test": result["test"]["post"]})
            print(json.dumps({k: runs[-1][k] for k in ("head", "seed", "seconds")} |
                             {"val": round(runs[-1]["validation"]["ccc_mean"], 4),
                              "test": round(runs[-1]["test"]["ccc_mean"], 4)}), flush=True)
    table = {}
    for head in args.heads:
        mine = [r for r in runs if r["head"] == head]
        table[head] = {f"{split}_{k}": [round(float(np.mean(v)), 4), round(float(np.std(v)), 4)]
                       for split in ("validation", "test") for k in ("ccc_valence", "ccc_arousal", "ccc_mean")
                       for v in [[r[split][k] for r in mine]]}
        table[head]["parameters"] = mine[0]["parameters"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"corpus": "demo (params.yaml)", "seeds": args.seeds,
                                    "model": base.model.model_dump(), "train": base.train.model_dump(),
                                    "table": table, "runs": runs}, indent=1) + "\n")


if __name__ == "__main__":
    main()
