"""How often does a nominal 95 % percentile bootstrap over n videos cover the truth? The
reasoning behind `compare.min_videos_bootstrap` (docs/compare.md).

Model: each video contributes one difference d_i (head A - head B on that video), drawn from a
distribution centred on 0 (normal, or heavy-tailed Student t with 3 degrees of freedom); the
statistic is their mean, the interval the 2.5 % and 97.5 % quantiles of the means of `--boot`
resamples of the n videos with replacement. Coverage = the share of `--reps` simulated
comparisons whose interval contains 0. Also printed: C(2n-1, n), the number of distinct
resamples of n videos, and the width of the percentile interval relative to the Student t
interval on the same n values, sqrt((n-1)/n) z_0.975 / t_{0.975, n-1} (the bootstrap's plug-in
variance divides by n, and it uses normal-like rather than t quantiles).

    python bench/bootstrap_coverage.py --out docs/bench/bootstrap_coverage.json
"""

from __future__ import annotations

import argparse
import sys
from math import comb, sqrt
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))      # bench/: common.py
from common import REPO, write_json  # noqa: E402


def coverage(n: int, draw, rng: np.random.Generator, reps: int, boot: int, confidence: float = 0.95) -> float:
    """Share of simulated n-video comparisons whose percentile bootstrap interval contains 0."""
    hits = 0
    for _ in range(reps):
        d = draw(n)
        means = d[rng.integers(n, size=(boot, n))].mean(1)
        low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
        hits += low <= 0 <= high
    return hits / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, nargs="+", default=[3, 5, 8, 10, 15, 20, 40, 70])
    ap.add_argument("--reps", type=int, default=4000)
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "docs/bench/bootstrap_coverage.json")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    draws = {"normal": lambda n: rng.normal(0, 1, n), "student_t3": lambda n: rng.standard_t(3, n)}
    rows = []
    print(f"{'videos':>6} {'resamples':>12} {'width vs t':>10} " + " ".join(f"{k:>11}" for k in draws))
    for n in args.videos:
        width = sqrt((n - 1) / n) * stats.norm.ppf(0.975) / stats.t.ppf(0.975, n - 1)
        row = {"videos": n, "distinct_resamples": comb(2 * n - 1, n), "width_vs_t": round(width, 3),
               "coverage": {k: coverage(n, d, rng, args.reps, args.boot) for k, d in draws.items()}}
        rows.append(row)
        print(f"{n:>6} {row['distinct_resamples']:>12.3g} {width:>10.3f} "
              + " ".join(f"{c:>11.3f}" for c in row["coverage"].values()))
    write_json(args.out, {"what": __doc__.split("\n\n")[0], "nominal": 0.95, "reps": args.reps,
                          "boot": args.boot, "seed": args.seed, "rows": rows})
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
