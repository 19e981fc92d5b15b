"""Are two comparisons' runs the same, bit for bit? For every (head, seed) of two `jmt compare`
run folders (e.g. the code before and after a refactor, on the same corpus and machine), checks
whether the training histories (every epoch's loss, learning rate and validation scores), the
run's scores and the stored predictions are identical, and how far the validation and test
valence-arousal CCC means moved. Reads the run layout of jmt before the streams-and-tasks
refactor (`val_ccc_mean`, `scores[split][condition][metric]`, predictions `split/condition/name`)
as well as the current one (`val_va_ccc_mean`, `scores[split][condition]["va"][metric]`,
`split/condition/name/va`).

    .venv/bin/python bench/same_runs.py OLD/runs/compare runs/compare --out docs/bench/refactor_same_runs.json \
        --metrics OLD/metrics/compare.json metrics/compare.json

With `--metrics A B` (the two compare.json) it also reports, per head and split, how far the
paired difference from the reference (valence-arousal CCC mean, t over seeds) moved against
the rerun margin, and whether any interval verdict (t over seeds, bootstrap over videos; all
frames) changed, with the statuses of pipeline/stage2/compare/survival.py (`verdict_status`:
same, withheld, weakened or contradicted; verdicts in the words of jmt before Holm's correction
read in today's).

With `--rows CHECK.json SIDE NEW.json` it checks the interval verdicts one side of a
`bench/perturbation.py` check recorded (SIDE: `original` or `perturbed`; its rows name
`split/subset/head/interval` in the old code's subsets `all`, `both`, `no_face`, `no_audio`)
against a comparison the current code wrote, with the same statuses: how the refactor was
checked against the old code's comparison on this machine, whose own compare.json was not kept,
only that check's rows.

    .venv/bin/python bench/same_runs.py --rows docs/bench/committed_vs_this_machine.json perturbed \
        NEW/metrics/compare.json --out docs/bench/refactor_verdicts.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))   # bench/: common.py
from common import write_json  # noqa: E402

# after common: it puts the repository on sys.path
from pipeline.stage2.compare.survival import STATUSES, verdict_status  # noqa: E402

# the unimodal references' names before the refactor -> now (their folders: only_<stream>)
RENAMED = {"audio_only": "only:audio", "visual_only": "only:visual"}
METRICS = ("ccc_valence", "ccc_arousal", "ccc_mean", "pcc_valence", "pcc_arousal", "rmse_valence",
           "rmse_arousal", "frames")


def _history(run: dict) -> list[tuple]:
    def row(r: dict) -> tuple:
        key = "val_va_ccc" if "val_va_ccc_mean" in r else "val_ccc"
        return (r["train_loss"], r["lr"], r[f"{key}_valence"], r[f"{key}_arousal"], r[f"{key}_mean"])
    return [row(r) for r in run["history"]]


def _scores(run: dict) -> dict:
    """(split, condition, metric) -> value, va only."""
    out = {}
    for split, by in run["scores"].items():
        for condition, row in by.items():
            va = row.get("va", row)
            out.update({(split, condition, k): va[k] for k in METRICS if k in va})
    return out


def _predictions(folder: Path) -> dict:
    with np.load(folder / "predictions.npz") as z:
        return {k.removesuffix("/va"): z[k] for k in z.files if k.count("/") == 2 or k.endswith("/va")}


def compare_runs(a: Path, b: Path) -> list[dict]:
    """One row per run found in both folders."""
    rows = []
    for folder_a in sorted(p for p in a.iterdir() if (p / "run.json").is_file()):
        head, seed = folder_a.name.rsplit("-seed", 1)
        new = RENAMED.get(head, head)
        folder_b = b / f"{new.replace(':', '_')}-seed{seed}"
        if not (folder_b / "run.json").is_file():
            continue
        ra, rb = (json.loads((f / "run.json").read_text()) for f in (folder_a, folder_b))
        sa, sb = _scores(ra), _scores(rb)
        pa, pb = _predictions(folder_a), _predictions(folder_b)
        rows.append({
            "head": new, "seed": int(seed), "epochs": [ra["epochs"], rb["epochs"]],
            "best_epoch": [ra["best_epoch"], rb["best_epoch"]],
            "history_same": _history(ra) == _history(rb),
            "scores_same": sa == sb,
            "predictions_same": pa.keys() == pb.keys() and all(np.array_equal(pa[k], pb[k]) for k in pa),
            "max_abs_ccc_mean_change": max(abs(sa[s, "full", "ccc_mean"] - sb[s, "full", "ccc_mean"])
                                           for s in ("validation", "test") if (s, "full", "ccc_mean") in sa),
        })
    return rows


def _paired(result: dict, head: str, split: str) -> dict:
    vs = result["results"][head]["vs_reference"][split]
    return vs.get("va", vs)


def compare_verdicts(a: dict, b: dict) -> dict:
    """Per head and split: the shift of the paired difference and each interval's verdicts."""
    rows, counts = [], dict.fromkeys(STATUSES, 0)
    for head in a["heads"]:
        if head == a["reference"]:
            continue
        new = RENAMED.get(head, head) if head not in b["results"] else head
        for split in ("validation", "test"):
            va, vb = _paired(a, head, split), _paired(b, new, split)
            row = {"head": new, "split": split, "difference": [va["seeds"]["mean"], vb["seeds"]["mean"]],
                   "shift": round(vb["seeds"]["mean"] - va["seeds"]["mean"], 6), "margin": [va["margin"], vb["margin"]]}
            for which in ("seeds", "videos"):
                x, y = va[which]["verdict"], vb[which]["verdict"]
                kind = verdict_status(x, y)
                counts[kind] += 1
                row[which] = [x, y, kind]
            rows.append(row)
    return {"rows": rows, **counts}


# the old code's availability subsets -> the current ones (two streams: visual, audio)
OLD_SUBSETS = {"both": "all_streams", "no_face": "no_visual", "no_audio": "no_audio"}


def verdicts_vs_rows(check: dict, side: str, new: dict) -> dict:
    """The interval verdicts of one side of a perturbation check's rows against a current
    comparison (va), each with its status (`verdict_status`: same, weakened, withheld or
    contradicted) and the count of each."""
    rows, counts = [], dict.fromkeys(STATUSES, 0)
    for row in check["rows"]:
        if row["kind"] != "interval":
            continue
        split, subset, head, which = row["key"].split("/")
        result = new["results"][RENAMED.get(head, head)]
        if subset == "all":
            verdict = result["vs_reference"][split]["va"][which]["verdict"]
        else:
            verdict = result["availability"][split]["va"][OLD_SUBSETS[subset]]["vs_reference"][which]["verdict"]
        old = row[side]
        kind = verdict_status(old, verdict)
        counts[kind] += 1
        rows.append({"key": row["key"], "old": old, "new": verdict, "status": kind})
    return {"rows": rows, **counts}


def _counts(verdicts: dict) -> str:
    return "interval verdicts: " + ", ".join(f"{verdicts[status]} {status}" for status in STATUSES)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", type=Path, nargs="?", help="runs folder of one comparison (e.g. the old code's)")
    ap.add_argument("b", type=Path, nargs="?", help="runs folder of the other")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--metrics", type=Path, nargs=2, default=None, metavar=("A.json", "B.json"),
                    help="the two comparisons' compare.json: verdicts and shifts against the rerun margins")
    ap.add_argument("--rows", nargs=3, default=None, metavar=("CHECK.json", "SIDE", "NEW.json"),
                    help="a perturbation check's verdicts (SIDE: original | perturbed) against a current compare.json")
    args = ap.parse_args()
    if args.rows:
        check, new = (json.loads(Path(p).read_text()) for p in (args.rows[0], args.rows[2]))
        verdicts = verdicts_vs_rows(check, args.rows[1], new)
        for r in verdicts["rows"]:
            if r["status"] != "same":
                print(f"{r['key']}: {r['old']} -> {r['new']} ({r['status']})")
        print(_counts(verdicts))
        if args.out:
            write_json(args.out, {"check": args.rows[0], "side": args.rows[1], "new": args.rows[2], **verdicts})
        return
    if args.a is None or args.b is None:
        ap.error("two runs folders, or --rows")
    rows = compare_runs(args.a, args.b)
    for r in rows:
        same = all(r[k] for k in ("history_same", "scores_same", "predictions_same"))
        print(f"{r['head']:12s} seed {r['seed']}: {'bit for bit' if same else 'differs'}; epochs {r['epochs']}, "
              f"best {r['best_epoch']}, max |change| of the CCC mean {r['max_abs_ccc_mean_change']:.2e}")
    identical = sorted({r["head"] for r in rows} - {r["head"] for r in rows if not (
        r["history_same"] and r["scores_same"] and r["predictions_same"])})
    summary = {"a": str(args.a), "b": str(args.b), "runs": len(rows), "identical_heads": identical, "rows": rows}
    print(f"{len(rows)} runs; heads identical on every seed: {', '.join(identical) or 'none'}")
    if args.metrics:
        verdicts = compare_verdicts(*(json.loads(p.read_text()) for p in args.metrics))
        for r in verdicts["rows"]:
            print(f"{r['head']:12s} {r['split']:10s} difference {r['difference'][0]:+.4f} -> {r['difference'][1]:+.4f} "
                  f"(shift {r['shift']:+.4f}, margins ±{r['margin'][0]:.4f} / ±{r['margin'][1]:.4f}); "
                  f"t: {' -> '.join(r['seeds'][:2])}; bootstrap: {' -> '.join(r['videos'][:2])}")
        print(_counts(verdicts))
        summary["verdicts"] = verdicts
    if args.out:
        write_json(args.out, summary)


if __name__ == "__main__":
    main()
