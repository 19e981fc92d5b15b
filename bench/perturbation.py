"""Do the comparison's verdicts survive another machine? A different CPU, BLAS or torch build
changes the last bits of the numbers; a verdict that flips under a change that small was never
a finding. This script makes such a change on purpose and checks every verdict:

1. copies the embeddings cache (`embed.out`) and moves every float16 embedding value (the
   `audio` and `visual` arrays) by one ulp, up or down at random (seeded); masks, labels and
   timestamps are kept byte for byte;
2. writes a params file under --work pointing at the copy, with its own runs folder, metrics
   file and table, and runs the whole comparison on it (every run is retrained: the cache
   fingerprint differs; this takes a full comparison's time);
3. compares the significance verdicts with the original comparison's `compare.metrics`: every
   interval's direction (above / below the reference, or including 0) for both splits and
   both interval kinds, overall and on every availability subset; whether each interval is
   used in the findings (the video bootstrap is not below compare.min_videos_bootstrap); the
   ranking of the heads per split and the winner of every subset.

Prints a table and writes --out (docs/bench/perturbation.json).

    python bench/perturbation.py                       # params.yaml, its metrics/compare.json
    python bench/perturbation.py --seed 1 --work /tmp/jmt-perturbation
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import h5py
import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
EMBEDDINGS = ("audio", "visual")  # the float16 arrays of an embeddings file; everything else is kept
# params keys holding paths: made absolute (the params file moves to --work)
PATH_KEYS = ("demo.out", "corpus.root", "corpus.manifest", "faces.out", "faces.cropped_aligned", "audio.out",
             "embed.visual.checkpoint", "embed.audio.checkpoint")
BLOCK = 1 << 16  # rows perturbed at a time: memory stays flat on long videos


def perturb_cache(src: Path, dst: Path, seed: int) -> dict:
    """Copies the embeddings folder src to dst and moves every float16 value of every entry's
    `audio` and `visual` arrays by +-1 ulp (np.nextafter towards +-inf, sign drawn per value)."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    rng = np.random.default_rng(seed)
    files, values = 0, 0
    for path in sorted(dst.glob("*.h5")):
        with h5py.File(path, "r+") as f:
            for key in EMBEDDINGS:
                ds = f[key]
                if ds.dtype != np.float16:
                    raise SystemExit(f"{path}: {key} is {ds.dtype}, expected float16 embeddings")
                for start in range(0, ds.shape[0], BLOCK):
                    x = ds[start:start + BLOCK]
                    up = rng.random(x.shape) < 0.5
                    ds[start:start + BLOCK] = np.where(up, np.nextafter(x, np.float16(np.inf)),
                                                       np.nextafter(x, np.float16(-np.inf)))
                    values += x.size
        files += 1
    return {"files": files, "values": values, "seed": seed}


def perturbed_params(params_file: Path, cache_copy: Path, work: Path, original: dict,
                     engine: str | None = None) -> Path:
    """A params file in `work`: the same params, paths absolute, embeddings from the copy, the
    original comparison's heads, seeds and reference, and its runs, metrics and table (and every
    other output) under `work`."""
    data = yaml.safe_load(params_file.read_text())
    root = params_file.resolve().parent
    for key in PATH_KEYS:
        *parents, last = key.split(".")
        node = data
        for part in parents:
            node = node.get(part) or {}
        if node.get(last):
            node[last] = str((root / node[last]).resolve())
    data["embed"]["out"] = str(cache_copy)
    data["train"].update(out=str(work / "model.pt"), live_dir=str(work / "live"))
    data["evaluate"].update(metrics=str(work / "eval.json"), out=str(work / "eval"))
    data.setdefault("compare", {}).update(runs=str(work / "runs"), metrics=str(work / "compare.json"),
                                          table=str(work / "compare.md"), heads=original["heads"],
                                          seeds=original["seeds"], reference=original["reference"])
    data.setdefault("report", {})["out"] = str(work / "reports")
    if engine:  # the runs' threads (run.compare.cpus) are kept: the engine changes no number
        data.setdefault("run", {}).update(engine=engine, address=None)
    path = work / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _direction(iv: dict | None) -> str:
    if iv is None:
        return "n/a"
    return "above" if iv["low"] > 0 else "below" if iv["high"] < 0 else "includes 0"


def verdicts(result: dict) -> dict[str, dict]:
    """Every verdict the findings can draw from a compare.json, flat: key -> {"verdict": str,
    "used": bool (cited in the findings)}. Keys: `<split>/<subset>/<head>/<seeds|videos>`
    (subset `all` = every frame) for each head but the reference; `<split>/ranking`; and
    `<split>/<subset>/best`."""
    ref, res = result["reference"], result["results"]
    out: dict[str, dict] = {}

    def add(key: str, iv: dict | None, which: str) -> None:
        used = iv is not None and (which == "seeds" or not iv.get("indicative", False))
        out[key] = {"verdict": _direction(iv), "used": used}

    splits = [s for s in ("validation", "test") if s in res[ref]]
    for split in splits:
        ranking = sorted(result["heads"], key=lambda h: -res[h][split]["full"]["ccc_mean"]["mean"])
        out[f"{split}/ranking"] = {"verdict": " > ".join(ranking), "used": True}
        for subset in result.get("subsets", {}):
            rows = {h: res[h]["availability"][split][subset] for h in result["heads"]}
            scored = all(r["scored"] for r in rows.values())
            best = max(rows, key=lambda h: rows[h]["ccc_mean"]["mean"]) if scored else "not scored"
            out[f"{split}/{subset}/best"] = {"verdict": best, "used": scored}
        for head in result["heads"]:
            if head == ref:
                continue
            for which in ("seeds", "videos"):
                add(f"{split}/all/{head}/{which}", res[head]["vs_reference"][split][which], which)
                for subset in result.get("subsets", {}):
                    vs = res[head]["availability"][split][subset].get("vs_reference")
                    add(f"{split}/{subset}/{head}/{which}", vs[which] if vs else None, which)
    return out


def compare_verdicts(original: dict, perturbed: dict) -> dict:
    """The verdicts of two comparisons side by side: one row per key (either side), whether it
    is the same, and counts (all verdicts, and those cited in the findings)."""
    a, b = verdicts(original), verdicts(perturbed)
    rows = []
    for key in sorted(a.keys() | b.keys()):
        va, vb = a.get(key, {"verdict": "missing", "used": False}), b.get(key, {"verdict": "missing", "used": False})
        rows.append({"key": key, "original": va["verdict"], "perturbed": vb["verdict"],
                     "used": va["used"] or vb["used"], "same": va["verdict"] == vb["verdict"]})
    changed = [r for r in rows if not r["same"]]
    return {"summary": {"verdicts": len(rows), "changed": len(changed),
                        "used_in_findings": sum(r["used"] for r in rows),
                        "changed_in_findings": sum(r["used"] for r in changed),
                        "rankings_same": all(r["same"] for r in rows if r["key"].endswith("/ranking"))},
            "changed": [r["key"] for r in changed], "rows": rows}


def score_shift(original: dict, perturbed: dict) -> float:
    """The largest |change| of a head's mean (over seeds) CCC mean, over heads and splits."""
    res_a, res_b = original["results"], perturbed["results"]
    return max(abs(res_a[h][s]["full"]["ccc_mean"]["mean"] - res_b[h][s]["full"]["ccc_mean"]["mean"])
               for h in res_a if h in res_b for s in ("validation", "test") if s in res_a[h] and s in res_b[h])


def print_table(diff: dict) -> None:
    width = max(len(r["key"]) for r in diff["rows"])
    print(f"{'verdict':{width}}  {'original':>24}  {'perturbed':>24}  used  same")
    for r in diff["rows"]:
        print(f"{r['key']:{width}}  {r['original'][:24]:>24}  {r['perturbed'][:24]:>24}  "
              f"{'yes' if r['used'] else 'no':>4}  {'yes' if r['same'] else 'CHANGED'}")
    s = diff["summary"]
    print(f"\n{s['changed']} of {s['verdicts']} verdicts changed; {s['changed_in_findings']} of the "
          f"{s['used_in_findings']} used in the findings; rankings the same: {s['rankings_same']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--original", type=Path, default=None, help="compare.json to check [default: compare.metrics]")
    ap.add_argument("--seed", type=int, default=0, help="seed of the +-1 ulp signs")
    ap.add_argument("--work", type=Path, default=Path("/tmp/jmt-perturbation"))
    ap.add_argument("--out", type=Path, default=REPO / "docs/bench/perturbation.json")
    ap.add_argument("--engine", choices=["local", "ray"], default=None,
                    help="run the perturbed comparison on this engine (ray: a local Ray instance)")
    args = ap.parse_args()
    from pipeline.config import load_params
    from pipeline.stage2.compare import (_STAGE2, TRAINING_CODE, cache_fingerprint, files_fingerprint, run_compare,
                                         shared_params)

    base = load_params(args.params)
    original_path = args.original or base.path(base.compare.metrics)
    original = json.loads(original_path.read_text())
    # the only difference allowed between the two comparisons is the perturbation
    now = {"cache": cache_fingerprint(base.path(base.embed.out)),
           "code": files_fingerprint(TRAINING_CODE, _STAGE2.parent)}
    what = {"cache": "embeddings cache", "code": "stage-2 training code"}
    stale = [what[k] for k in now if original["fingerprints"][k] != now[k]]
    if json.loads(json.dumps(shared_params(base))) != original["params"]:
        stale.append("model/train/evaluate params")
    if stale:
        raise SystemExit(f"{original_path} was made with other {', '.join(stale)} than the ones at hand: "
                         "rerun `jmt compare` first")
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    copy = args.work / "embeddings"
    facts = perturb_cache(base.path(base.embed.out), copy, args.seed)
    print(f"perturbed {facts['values']:,} float16 values in {facts['files']} files -> {copy}")
    perturbed = run_compare(load_params(perturbed_params(args.params, copy, args.work, original, args.engine)))
    diff = compare_verdicts(original, perturbed)
    print_table(diff)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "what": "every float16 embedding value moved by +-1 ulp (random sign), the comparison rerun",
        "original": str(original_path), "perturbed": str(args.work / "compare.json"), "cache": facts,
        "heads": perturbed["heads"], "seeds": perturbed["seeds"],
        "max_abs_change_ccc_mean": round(score_shift(original, perturbed), 6),
        "seconds": round(time.time() - t0, 1), **diff}, indent=1) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
