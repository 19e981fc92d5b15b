"""How fast `jmt tune` searches, measured in one run on the demo cache (docs/measurements.md, issue 26):

1. throughput: the same search (sampler random, scheduler none, fixed seed: the same
   configurations) on a Ray instance of 1 worker and of 2 workers; trials per minute (goal: 2
   workers >= 1.7 x 1 worker);
2. ASHA against full-length trials at the same trial count (sampler random, the same seed: the
   same configurations in both): epochs spent (goal: ASHA <= 50 % of full length), and whether
   the head chosen best and its best configuration's validation score agree;
3. the study database's overhead: the driver's seconds in the study (asks, reports, pruning,
   tells) per trial, against a trial's own seconds (goal: < 1 %).

Each search is a `jmt tune` in a fresh process with its own tune folder and params file under
--work (the repository's caches, read only). Writes --out (docs/bench/tune.json).

    python bench/tune.py                       # all three, about 15 minutes on 2 cores
    python bench/tune.py --trials 6 --epochs 12
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))   # bench/: common.py
from common import REPO, jmt, run_measured, write_json, write_params  # noqa: E402


def search(work: Path, name: str, *, heads: list[str], trials: int, epochs: int, scheduler: str,
           workers: int) -> dict:
    """One `jmt tune` in a fresh process on a local Ray instance of `workers` CPUs; its tune.json
    and wall seconds."""
    folder = work / name
    params = write_params(folder, caches=None, base=REPO / "params.yaml",
                          corpus={"root": str(REPO / "data/demo")},
                          faces={"out": str(REPO / "data/cache/faces")}, audio={"out": str(REPO / "data/cache/audio")},
                          labels={"out": str(REPO / "data/cache/labels")},
                          embed={"out": str(REPO / "data/cache/embeddings")},
                          compare={"heads": heads, "reference": heads[0]}, train={"epochs": epochs},
                          tune={"trials": trials, "sampler": "random", "scheduler": scheduler, "seed": 0,
                                "out": "tune", "metrics": "tune.json", "table": "tune.md"},
                          run={"engine": "ray", "cpus": workers})
    m = run_measured(jmt("tune", "--params", str(params)))
    if m.returncode != 0:
        raise SystemExit(f"{name}: jmt tune failed:\n{m.stderr[-3000:]}")
    result = json.loads((folder / "tune.json").read_text())
    return {"wall_s": round(m.seconds, 1), "result": result}


def trials_of(result: dict) -> list[dict]:
    return [t for r in result["results"].values() for t in r["trials"] if t["state"] in ("complete", "pruned")]


def best(result: dict) -> tuple[str, float, dict]:
    """The head with the highest best validation score, that score and its configuration."""
    head = max(result["results"], key=lambda h: (result["results"][h]["best"] or {}).get("value", -1e9))
    b = result["results"][head]["best"]
    return head, b["value"], b["config"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/jmt-bench-tune"))
    ap.add_argument("--out", type=Path, default=REPO / "docs/bench/tune.json")
    ap.add_argument("--trials", type=int, default=8, help="trials per head")
    ap.add_argument("--epochs", type=int, default=36, help="train.epochs: a full-length trial's cap")
    args = ap.parse_args()
    heads = ["concat", "jca", "only:audio"]
    out: dict = {"heads": heads, "trials_per_head": args.trials, "train_epochs": args.epochs}

    # 1. throughput: the same configurations, scheduler none, 1 vs 2 workers
    n = 2 * args.trials
    one = search(args.work, "workers1", heads=["concat"], trials=n, epochs=12, scheduler="none", workers=1)
    two = search(args.work, "workers2", heads=["concat"], trials=n, epochs=12, scheduler="none", workers=2)
    same = [t["config"] for t in trials_of(one["result"])] == [t["config"] for t in trials_of(two["result"])]
    rate = {k: len(trials_of(v["result"])) / v["result"]["this_run"]["search_span_s"] * 60 for k, v in (("1", one), ("2", two))}
    out["throughput"] = {"trials": n, "head": "concat", "train_epochs": 12, "same_configs": same,
                         "search_s": {"1 worker": one["result"]["this_run"]["search_span_s"],
                                      "2 workers": two["result"]["this_run"]["search_span_s"]},
                         "command_wall_s": {"1 worker": one["wall_s"], "2 workers": two["wall_s"]},
                         "trials_per_min": {"1 worker": round(rate["1"], 2), "2 workers": round(rate["2"], 2)},
                         "speedup": round(rate["2"] / rate["1"], 2), "goal": ">= 1.7"}
    print(json.dumps(out["throughput"], indent=1))

    # 2. ASHA vs full length, the same configurations (sampler random, seed 0)
    full = search(args.work, "full", heads=heads, trials=args.trials, epochs=args.epochs, scheduler="none", workers=2)
    asha = search(args.work, "asha", heads=heads, trials=args.trials, epochs=args.epochs, scheduler="asha", workers=2)
    epochs = {k: sum(t["epochs"] for t in trials_of(v["result"])) for k, v in (("full", full), ("asha", asha))}
    (hf, vf, cf), (ha, va, ca) = best(full["result"]), best(asha["result"])
    per_head = {h: {"full": full["result"]["results"][h]["best"]["value"],
                    "asha": (asha["result"]["results"][h]["best"] or {}).get("value"),
                    "same_config": full["result"]["results"][h]["best"]["config"] ==
                    (asha["result"]["results"][h]["best"] or {}).get("config")} for h in heads}
    out["asha"] = {"epochs": epochs, "share": round(epochs["asha"] / epochs["full"], 3), "goal": "<= 0.5",
                   "seconds": {"full": full["result"]["this_run"]["search_span_s"], "asha": asha["result"]["this_run"]["search_span_s"]},
                   "best_head": {"full": hf, "asha": ha, "same": hf == ha},
                   "best_value": {"full": vf, "asha": va}, "best_config_same": cf == ca, "per_head": per_head,
                   "pruned": sum(t["state"] == "pruned" for t in trials_of(asha["result"]))}
    print(json.dumps(out["asha"], indent=1))

    # 3. the study database's overhead per trial, from the ASHA search (the most study calls)
    trials = trials_of(asha["result"])
    study_s = asha["result"]["this_run"]["study_seconds"]
    trial_s = sum(t["seconds"] for t in trials)
    out["study_overhead"] = {"trials": len(trials), "study_s": study_s, "trial_s": round(trial_s, 1),
                             "per_trial_ms": round(1000 * study_s / len(trials), 1),
                             "share": round(study_s / trial_s, 5), "goal": "< 0.01",
                             "storage": "SQLite (study.db in the tune folder)"}
    print(json.dumps(out["study_overhead"], indent=1))
    write_json(args.out, out)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
