"""Do the comparison's verdicts survive another machine? A different CPU, BLAS or torch build
changes the last bits of the numbers; a verdict that flips under a change that small was never
a finding. This script makes such a change on purpose and checks every verdict:

1. copies the embeddings cache (`embed.out`) and moves every float16 embedding value (every
   stream's `streams/<name>/features`) by one ulp, up or down at random (seeded); masks and
   timestamps are kept byte for byte, the labels cache is not touched; each copied file's
   content hash is recorded again, so the copy's fingerprint differs from the original's;
2. writes a params file under --work pointing at the copy, with its own runs folder, metrics
   file and table, and runs the whole comparison on it (every run is retrained; this takes a
   full comparison's time);
3. compares the significance verdicts with the original comparison's `compare.metrics`: every
   interval's verdict (pipeline/stage2/verdicts.py: `better` / `worse` than the reference when
   its Holm-adjusted p-value of "within the rerun margin" is below 1 - confidence, over its
   family; else `within rerun noise` when a bound lies within the margin; else `no difference
   shown`; `indicative` for a bootstrap over too few videos) for both splits, every key (each
   task's metric and, with several tasks, their sum `score`) and both interval kinds, overall and
   on every availability subset of each task; whether each interval is used in the findings (not
   `indicative`); and, descriptive only, the ranking of the heads per split and key and the
   winner of every subset.

Each interval row gets a status (pipeline/stage2/compare/survival.py, `verdict_status`): `same`,
`withheld`, `weakened` (a difference shown on one side only: absence of evidence, counted apart
from contradictions) or `contradicted` (better against worse, or a verdict on one side only).
The check holds when no verdict the findings use is contradicted. A rule without a margin cannot
promise more: any threshold has intervals that end next to it. It also reports what the rule
without a margin (k = 0, Holm's correction kept) would have changed.

Prints a table and writes --out (docs/bench/perturbation.json).

    python bench/perturbation.py                       # params.yaml, its metrics/compare.json
    python bench/perturbation.py --seed 1 --work /tmp/jmt-perturbation --engine ray
    python bench/perturbation.py --original a/compare.json --against b/compare.json  # two machines
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import yaml

from pipeline import cache
from pipeline.stage2.compare.survival import compare_verdicts, keys_of, main_metric

sys.path.insert(0, str(Path(__file__).resolve().parent))   # bench/: common.py
from common import REPO  # noqa: E402

# the params keys of inputs that hold paths: made absolute (the params file moves to --work), and
# each stream's `embed.streams.<name>.checkpoint`; the outputs' stay relative: under --work
INPUT_PATHS = ("demo.out", "corpus.root", "corpus.manifest", "faces.out", "faces.cropped_aligned", "audio.out",
               "labels.out")
BLOCK = 1 << 16  # rows perturbed at a time: memory stays flat on long videos


def perturb_cache(src: Path, dst: Path, seed: int) -> dict:
    """Copies the embeddings folder src to dst and moves every float16 value of every entry's
    stream features (`streams/<name>/features`, the streams its attributes list) by +-1 ulp
    (np.nextafter towards +-inf, sign drawn per value); each file's content hash is recorded
    again (cache.CONTENT_HASH), so the copy's fingerprint is its own."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    rng = np.random.default_rng(seed)
    files, values = 0, 0
    for path in sorted(dst.glob("*.h5")):
        with h5py.File(path, "r+") as f:
            for stream in cache.attrs_of(f)["streams"]:
                key = cache.stream_key(stream["name"], "features")
                ds = f[key]
                if ds.dtype != np.float16:
                    raise SystemExit(f"{path}: {key} is {ds.dtype}, expected float16 embeddings")
                for start in range(0, ds.shape[0], BLOCK):
                    x = ds[start:start + BLOCK]
                    up = rng.random(x.shape) < 0.5
                    ds[start:start + BLOCK] = np.where(up, np.nextafter(x, np.float16(np.inf)),
                                                       np.nextafter(x, np.float16(-np.inf)))
                    values += x.size
            f.attrs[cache.CONTENT_HASH] = cache.content_hash(f)
        files += 1
    return {"files": files, "values": values, "seed": seed}


def perturbed_params(params_file: Path, cache_copy: Path, work: Path, original: dict,
                     engine: str | None = None) -> Path:
    """A params file in `work`: the same params, input paths absolute, embeddings from the copy,
    the original comparison's heads, seeds and reference, and its runs, metrics and table (and
    every other output) under `work`."""
    from pipeline.config import load_params

    params = load_params(params_file)
    dumped, over = params.model_dump(), {}
    for key in (*INPUT_PATHS, *(f"embed.streams.{s}.checkpoint" for s in params.embed.streams)):
        section, _, rest = key.partition(".")
        value = dumped[section]
        for part in rest.split("."):
            value = value[part]
        if value:
            over.setdefault(section, {})[rest] = str(params.path(value).resolve())
    over.setdefault("embed", {})["out"] = str(cache_copy)
    over["train"] = {"out": str(work / "model.pt"), "live_dir": str(work / "live")}
    over["evaluate"] = {"metrics": str(work / "eval.json"), "out": str(work / "eval")}
    over["compare"] = {"runs": str(work / "runs"), "metrics": str(work / "compare.json"),
                       "table": str(work / "compare.md"), "heads": original["heads"], "seeds": original["seeds"],
                       "reference": original["reference"]}
    over["report"] = {"out": str(work / "reports")}
    if engine:  # the runs' threads (run.compare.cpus) are kept: the engine changes no number
        over["run"] = {"engine": engine, "address": None}
    path = work / "params.yaml"
    path.write_text(yaml.safe_dump(params.updated(**over).model_dump(), sort_keys=False))
    return path


def score_shift(original: dict, perturbed: dict) -> dict[str, float]:
    """Per key (a task, or `score`), the largest |change| of a head's mean (over seeds) main
    metric on all frames, over heads and splits."""
    res_a, res_b = original["results"], perturbed["results"]
    out = {}
    for key in keys_of(original):
        metric = main_metric(original, key)
        changes = [abs(res_a[h][s][key]["full"][metric]["mean"] - res_b[h][s][key]["full"][metric]["mean"])
                   for h in res_a if h in res_b for s in ("validation", "test")
                   if key in res_a[h].get(s, {}) and key in res_b[h].get(s, {})]
        if changes:
            out[key] = round(max(changes), 6)
    return out


def print_table(diff: dict) -> None:
    width = max(len(r["key"]) for r in diff["rows"])
    print(f"{'verdict':{width}}  {'original':>24}  {'perturbed':>24}  used  status")
    for r in diff["rows"]:
        print(f"{r['key']:{width}}  {r['original'][:24]:>24}  {r['perturbed'][:24]:>24}  "
              f"{'yes' if r['used'] else 'no':>4}  {r['status'].upper() if r['status'] != 'same' else 'same'}")
    s = diff["summary"]
    print(f"\n{s['interval_verdicts']} interval verdicts the findings use: {s['same']} the same, {s['withheld']} "
          f"withheld on one side (within rerun noise or indicative there), {s['weakened']} weakened (a "
          f"difference shown on one side, not shown on the other), {s['contradicted']} contradicted -> the check "
          f"{'HOLDS' if s['holds'] else 'FAILS'}. Stated on both sides and the same: {s['stated_both_same']} "
          f"(stated: {s['stated_original']} original, {s['stated_perturbed']} perturbed). The rule without a "
          f"margin would have changed {s['plain_rule_changed']}. Rankings the same: {s['rankings_same']}; "
          f"descriptive rows changed: {', '.join(s['descriptive_changed']) or 'none'}.")


def _comparison(path: Path) -> dict:
    """A compare.json of the current layout (tasks and streams), or a clear exit."""
    result = json.loads(path.read_text())
    if "tasks" not in result or "streams" not in result:
        raise SystemExit(f"{path}: written by an older `jmt compare` (no tasks and streams); run it again")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--original", type=Path, default=None, help="compare.json to check [default: compare.metrics]")
    ap.add_argument("--seed", type=int, default=0, help="seed of the +-1 ulp signs")
    ap.add_argument("--work", type=Path, default=Path("/tmp/jmt-perturbation"))
    ap.add_argument("--out", type=Path, default=REPO / "docs/bench/perturbation.json")
    ap.add_argument("--engine", choices=["local", "ray"], default=None,
                    help="run the perturbed comparison on this engine (ray: a local Ray instance)")
    ap.add_argument("--against", type=Path, default=None,
                    help="a second compare.json (another machine's, or an earlier perturbed run): check the "
                         "verdicts of the two, perturb and train nothing")
    ap.add_argument("--margin", type=float, default=None,
                    help="rerun margin in sds for both sides [default: compare.rerun_margin of --params]")
    args = ap.parse_args()
    from pipeline.config import load_params
    from pipeline.stage2.compare import run_compare
    from pipeline.stage2.compare.runs import code_fingerprint, shared_params

    base = load_params(args.params)
    k = base.compare.rerun_margin if args.margin is None else args.margin
    original_path = args.original or base.path(base.compare.metrics)
    original = _comparison(original_path)
    t0 = time.time()
    if args.against:
        perturbed, facts = _comparison(args.against), None
        differ = [key for key in ("params", "tasks", "streams", "heads", "seeds", "reference")
                  if original.get(key) != perturbed.get(key)]
        if original["fingerprints"]["code"] != perturbed["fingerprints"]["code"]:
            differ.append("stage-2 training code")
        if differ:
            raise SystemExit(f"{original_path} and {args.against} differ in {', '.join(differ)}: "
                             "not the same comparison")
    else:
        # the only difference allowed between the two comparisons is the perturbation
        now = {"cache": cache.folder_fingerprint(base.path(base.embed.out)),
               "labels": cache.folder_fingerprint(base.path(base.labels.out)),
               "code": {h: code_fingerprint(h, base.train.tasks) for h in original["heads"]}}
        what = {"cache": "embeddings cache", "labels": "labels cache", "code": "stage-2 training code"}
        stale = [what[key] for key in now if original["fingerprints"].get(key) != now[key]]
        if json.loads(json.dumps(shared_params(base))) != original["params"]:
            stale.append("model/train/tasks params")
        if stale:
            raise SystemExit(f"{original_path} was made with other {', '.join(stale)} than the ones at hand: "
                             "rerun `jmt compare` first")
        args.work.mkdir(parents=True, exist_ok=True)
        cache_copy = args.work / "embeddings"
        facts = perturb_cache(base.path(base.embed.out), cache_copy, args.seed)
        print(f"perturbed {facts['values']:,} float16 values in {facts['files']} files -> {cache_copy}")
        perturbed = run_compare(load_params(perturbed_params(args.params, cache_copy, args.work, original,
                                                             args.engine)))
    diff = compare_verdicts(original, perturbed, k)
    print_table(diff)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "what": ("every float16 embedding value moved by +-1 ulp (random sign), the comparison rerun" if facts
                 else "two existing comparisons checked against each other"),
        "original": str(original_path), "perturbed": str(args.against or args.work / "compare.json"),
        "cache": facts, "heads": perturbed["heads"], "seeds": perturbed["seeds"], "rerun_margin": k,
        "max_abs_change": score_shift(original, perturbed),
        "seconds": round(time.time() - t0, 1), **diff}, indent=1) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
