"""Does training with modality dropout (`train.modality_dropout`) make the heads robust to a
missing stream? Runs `jmt compare` for a few heads and seeds with dropout 0 (reusing the
runs in runs/compare when their keys match) and with dropout p, and writes validation and
test CCC mean with both streams, audio masked and visual masked, for each.

    python bench/modality_dropout.py --p 0.3 --heads jmt concat --out docs/bench/modality_dropout.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.config import load_params
from pipeline.stage2.compare import CONDITIONS, run_compare

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--p", type=float, default=0.3, help="modality dropout probability to test")
    ap.add_argument("--heads", nargs="+", default=["jmt", "concat"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--work", type=Path, default=Path("/tmp/jmt-modality-dropout"))
    ap.add_argument("--out", type=Path, default=REPO / "docs/bench/modality_dropout.json")
    args = ap.parse_args()
    base = load_params(REPO / "params.yaml")
    rows = {}
    for p in (0.0, args.p):
        runs = base.compare.runs if p == base.train.modality_dropout else str(args.work / f"runs-p{p}")
        params = base.model_copy(update={
            "train": base.train.model_copy(update={"modality_dropout": p}),
            "compare": base.compare.model_copy(update={
                "heads": args.heads, "seeds": args.seeds, "reference": args.heads[0], "runs": runs,
                "metrics": str(args.work / f"compare-p{p}.json"), "table": str(args.work / f"compare-p{p}.md")}),
        })
        params._root = base.root
        result = run_compare(params)
        rows[f"modality_dropout={p}"] = {
            head: {split: {c: result["results"][head][split][c]["ccc_mean"] for c in CONDITIONS}
                   for split in ("validation", "test")}
            for head in args.heads}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"corpus": "demo (params.yaml)", "seeds": args.seeds, "heads": args.heads,
                                    "metric": "CCC mean (mean, sample std over seeds)", "results": rows},
                                   indent=1) + "\n")
    for setting, heads in rows.items():
        for head, splits in heads.items():
            cells = "  ".join(f"{s[:4]} {c}: {v['mean']:.3f}±{v['std'] or 0:.3f}"
                              for s, conds in splits.items() for c, v in conds.items())
            print(f"{setting:22} {head:8} {cells}")


if __name__ == "__main__":
    main()
