"""The two-stream valence-arousal path before and after a code change (the streams-and-tasks
refactor), side by side in one run on this machine, on one corpus: every head's training seconds
per run, its CPU latency (the comparison's cost table) and `jmt compare`'s wall time, fresh
(every run trained) and with every run reused (its own work: loading the caches, scoring,
availability subsets, intervals, bootstrap, latency, tables); the old and the new code
alternate so that drift in the machine's speed hits both.

The old code is `git archive`d from `--old-ref` into the work folder and run with it first on
PYTHONPATH; it runs its own stage 1 (faces, audio, embed: its cache layout) on the corpus the new
code's params name (default: the demo corpus `make demo` built, so the new caches must exist).
Both comparisons use the same recipe, capped at `--epochs` epochs (early stopping's patience is
longer, so every run trains exactly that many: equal work, whatever the old and new code's random
draws; a run's seconds are then a per-epoch cost times a constant) and `--seeds`.

    .venv/bin/python bench/refactor_speed.py --old-ref b479f1c --epochs 12 --repeats 2

Numbers: docs/measurements.md, *Streams and tasks*, *Speed of the two-stream path*.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))   # bench/: common.py
from common import REPO, params_data, write_json, write_params  # noqa: E402

from pipeline.config import load_params  # noqa: E402

# the old code's unimodal names -> the new ones
NEW_NAME = {"audio_only": "only:audio", "visual_only": "only:visual"}
OLD_HEADS = ["jmt", "mt", "jca", "rjca", "concat", "late", "audio_only", "visual_only"]


def _run(code_root: Path, args: list[str]) -> tuple[float, str]:
    """`python -m pipeline <args>` in `code_root` (`-m` puts the working folder first on sys.path,
    before PYTHONPATH and the installed package); (wall seconds, stdout)."""
    env = {**os.environ, "PYTHONPATH": str(code_root), "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=code_root, env=env, capture_output=True,
                          text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{code_root}: pipeline {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, proc.stdout


def _recipe(folder: Path, heads: list[str], args: argparse.Namespace,
            outs: dict[str, Path]) -> dict[str, dict[str, object]]:
    """What both params files change (`write_params` sections): the capped recipe, runs and
    outputs in `folder`, each stage-1 cache at `outs[stage]`."""
    return {"train": {"epochs": args.epochs, "patience": args.epochs + 10, "out": str(folder / "model.pt"),
                      "live_dir": str(folder / "live")},
            "compare": {"heads": heads, "seeds": args.seeds, "runs": str(folder / "runs"),
                        "metrics": str(folder / "compare.json"), "table": str(folder / "compare.md")},
            "run": {"engine": "local"},
            **{stage: {"out": str(out)} for stage, out in outs.items()}}


def old_params(folder: Path, corpus: Path, base: Path, sections: dict[str, dict[str, object]]) -> Path:
    """`folder/params.yaml` for the old code: its params.yaml `base` with `corpus.root` = `corpus`
    and `sections`' keys laid over it. Written as plain YAML, not through `write_params`: the old
    code's schema is another (no labels section), which this code's `Params` cannot validate; the
    old code validates it when it runs."""
    data = params_data(base)
    data["corpus"]["root"] = str(corpus)
    for section, values in sections.items():
        data[section].update(values)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def compare_once(code: Path, params: Path, runs: Path, fresh: bool) -> dict:
    """One `jmt compare` (fresh: its runs folder emptied first): wall seconds and each run's
    seconds and epochs from the comparison it wrote."""
    if fresh:
        shutil.rmtree(runs, ignore_errors=True)
    wall, _ = _run(code, ["compare", "--params", str(params)])
    result = json.loads((params.parent / "compare.json").read_text())
    trained = result["timing"]["trained"]
    if fresh != (trained > 0) or (not fresh and result["timing"]["reused"] == 0):
        raise SystemExit(f"{params}: expected {'every run trained' if fresh else 'every run reused'}, "
                         f"got {result['timing']}")
    return {"wall_s": round(wall, 2), "in_command_s": result["timing"]["seconds"],
            "runs": {f"{NEW_NAME.get(r['head'], r['head'])}/{r['seed']}": {"seconds": r["seconds"], "epochs": r["epochs"]}
                     for r in result["runs"]},
            "cpu_ms_per_1000_frames": {NEW_NAME.get(h, h): r["cpu_ms_per_1000_frames"] for h, r in result["results"].items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old-ref", required=True, help="git revision of the old code")
    parser.add_argument("--new-params", type=Path, default=REPO / "params.yaml",
                        help="the new code's params (its corpus and caches; the old code embeds that corpus)")
    parser.add_argument("--epochs", type=int, default=4, help="every run trains exactly this many epochs")
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1])
    parser.add_argument("--repeats", type=int, default=2, help="fresh + reused comparisons per code")
    parser.add_argument("--work", type=Path, default=Path("/tmp/jmt-refactor-speed"),
                        help="the old code, its caches, both codes' runs (kept: a rerun reuses the old stage 1)")
    parser.add_argument("--out", type=Path, default=REPO / "docs/bench/refactor_speed.json")
    args = parser.parse_args()

    work = args.work.resolve()
    old_code = work / "old/code"
    if not (old_code / "pipeline").is_dir():
        archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", args.old_ref, "pipeline"],
                                 capture_output=True, check=True).stdout
        old_code.mkdir(parents=True)
        subprocess.run(["tar", "-x", "-C", str(old_code)], input=archive, check=True)

    new = load_params(args.new_params)
    corpus = new.path(new.corpus.root)
    new_outs = {stage: new.path(getattr(new, stage).out)   # the new caches, where its params put them
                for stage in ("faces", "audio", "labels", "embed")}
    new_params = write_params(work / "new", corpus, caches=None, base=args.new_params,
                              **_recipe(work / "new", [NEW_NAME.get(h, h) for h in OLD_HEADS], args, new_outs))

    old_base = work / "old/base.yaml"   # the old code's params.yaml (another schema: no labels section)
    old_base.write_text(subprocess.run(["git", "-C", str(REPO), "show", f"{args.old_ref}:params.yaml"],
                                       capture_output=True, text=True, check=True).stdout)
    old_outs = {stage: work / "old/cache" / sub for stage, sub in (("faces", "faces"), ("audio", "audio"),
                                                                   ("embed", "embeddings"))}
    old = old_params(work / "old", corpus, old_base, _recipe(work / "old", OLD_HEADS, args, old_outs))
    stage1 = {}
    for stage in ("faces", "audio", "embed"):   # the old code's own caches of the same corpus (resumes)
        stage1[stage] = round(_run(old_code, [stage, "--params", str(old)])[0], 1)
        print(f"old {stage}: {stage1[stage]} s", flush=True)

    codes = {"old": (old_code, old, work / "old/runs"), "new": (REPO, new_params, work / "new/runs")}
    results: dict[str, dict[str, list]] = {tag: {"fresh": [], "reused": []} for tag in codes}
    for i in range(args.repeats):
        for tag in (("old", "new") if i % 2 == 0 else ("new", "old")):   # alternate which goes first
            code, params, runs = codes[tag]
            for fresh in (True, False):
                r = compare_once(code, params, runs, fresh)
                results[tag]["fresh" if fresh else "reused"].append(r)
                print(f"{tag} compare {'fresh' if fresh else 'reused'}: {r['wall_s']} s", flush=True)

    heads = [NEW_NAME.get(h, h) for h in OLD_HEADS]
    per_head = []
    for head in heads:
        row: dict = {"head": head}
        for tag in codes:  # every seed of every fresh repeat of this head
            runs = [v for r in results[tag]["fresh"] for k, v in r["runs"].items() if k.split("/")[0] == head]
            row[tag] = {"seconds_per_run": round(median([r["seconds"] for r in runs]), 2),
                        "epochs": sorted({r["epochs"] for r in runs}), "runs": len(runs)}
            row[tag]["cpu_ms_per_1000_frames"] = median([r["cpu_ms_per_1000_frames"][head]
                                                          for kind in ("fresh", "reused") for r in results[tag][kind]])
        row["new_over_old"] = round(row["new"]["seconds_per_run"] / row["old"]["seconds_per_run"], 3)
        row["latency_new_over_old"] = round(row["new"]["cpu_ms_per_1000_frames"]
                                            / row["old"]["cpu_ms_per_1000_frames"], 3)
        per_head.append(row)
    summary = {kind: {tag: median([r["wall_s"] for r in results[tag][kind]]) for tag in codes}
               for kind in ("fresh", "reused")}
    out = {"old_ref": args.old_ref,
           "new": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                 capture_output=True, text=True).stdout.strip() + " + tree",
           "corpus": str(corpus), "epochs": args.epochs, "seeds": args.seeds, "repeats": args.repeats,
           "old_stage1_s": stage1, "train_per_run": per_head,
           "train_total_new_over_old": round(sum(r["new"]["seconds_per_run"] for r in per_head)
                                             / sum(r["old"]["seconds_per_run"] for r in per_head), 3),
           "compare_wall_median_s": summary,
           "compare_fresh_new_over_old": round(summary["fresh"]["new"] / summary["fresh"]["old"], 3),
           "compare_reused_new_over_old": round(summary["reused"]["new"] / summary["reused"]["old"], 3),
           "compare": results}
    write_json(args.out, out)
    print(json.dumps({k: v for k, v in out.items() if k not in ("compare",)}, indent=1))


if __name__ == "__main__":
    main()
