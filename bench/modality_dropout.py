"""Does training with modality dropout (`train.modality_dropout`) make the heads robust to a
missing stream? Runs `jmt compare` for a few heads and seeds with dropout 0 (reusing the
runs in runs/compare when their keys match) and with dropout p, and writes, per head, split and
key (each task of `train.tasks` by its main metric; with several tasks their sum, `score`), the
validation and test numbers with every stream, and with each stream masked (`no_<stream>`).

    python bench/modality_dropout.py --p 0.3 --heads jmt concat --out docs/bench/modality_dropout.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.config import load_params
from pipeline.stage2.compare import run_compare
from pipeline.stage2.compare.aggregate import SCORE

REPO = Path(__file__).resolve().parent.parent


def robustness(result: dict) -> dict:
    """head -> split -> key -> condition -> {mean, std, n} of the key's main metric, from a
    compare.json (results[head][split][key][condition][metric])."""
    keys = [*result["tasks"], *([SCORE] if len(result["tasks"]) > 1 else [])]
    metric = {k: SCORE if k == SCORE else result["main_metric"][k] for k in keys}
    return {head: {split: {key: {c: res[split][key][c][metric[key]] for c in result["conditions"]}
                           for key in keys if key in res[split]}
                   for split in ("validation", "test") if split in res}
            for head, res in result["results"].items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--p", type=float, default=0.3, help="modality dropout probability to test")
    ap.add_argument("--heads", nargs="+", default=["jmt", "concat"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--work", type=Path, default=Path("/tmp/jmt-modality-dropout"))
    ap.add_argument("--out", type=Path, default=REPO / "docs/bench/modality_dropout.json")
    args = ap.parse_args()
    base = load_params(args.params)
    rows, result = {}, None
    for p in (0.0, args.p):
        runs = base.compare.runs if p == base.train.modality_dropout else str(args.work / f"runs-p{p}")
        params = base.updated(train={"modality_dropout": p}, compare={
            "heads": args.heads, "seeds": args.seeds, "reference": args.heads[0], "runs": runs,
            "metrics": str(args.work / f"compare-p{p}.json"), "table": str(args.work / f"compare-p{p}.md")})
        result = run_compare(params)
        rows[f"modality_dropout={p}"] = robustness(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"corpus": str(args.params), "seeds": args.seeds, "heads": result["heads"],
                                    "tasks": result["tasks"], "streams": result["streams"],
                                    "metric": {t: result["main_metric"][t] for t in result["tasks"]},
                                    "what": "per head, split and key: the main metric's mean and sample std over "
                                            "seeds, every stream present (full) and each stream masked",
                                    "results": rows}, indent=1) + "\n")
    for setting, heads in rows.items():
        for head, splits in heads.items():
            for key in next(iter(splits.values())):
                cells = "  ".join(f"{s[:4]} {c}: {v['mean']:.3f}±{v['std'] or 0:.3f}"
                                  for s, by in splits.items() for c, v in by[key].items())
                print(f"{setting:22} {head:12} {key:5} {cells}")


if __name__ == "__main__":
    main()
