"""Small synthetic caches with every task (va, expr, au), written the way `jmt embed` and `jmt
labels` write them (tests/embeddings.py), and real `jmt compare` runs on them, made once per
session and shared by test_compare.py, test_evaluate.py, test_verdicts.py and tests/test_report.py.

The labels are random, so no head learns much; what the tests check is the bookkeeping: each
task on its own split's entries, the multi-task `score`, availability per task and stream, the
entries left out of training and why, and numbers recomputed from the files written.

Entries (60 frames each, the first 5 invalid for every task):
- t0, t1, t2: training for every task; v0, v1: validation; s0, s1: test;
- `mixed`: validation for va, training for expr and au; `mixed2`: training for va, validation
  for expr and au. Splits leaves both out of training (an entry a scored task evaluates is
  never trained on) and scores each for its validation tasks only;
- `va_test`: in va's test split only (no expr or au labels at all).
"""

from __future__ import annotations

from pathlib import Path

from ..embeddings import write_entry
from ..stage1.helpers import params_at

TASKS = ("va", "expr", "au")
N = 60
PLAN: dict[str, dict[str, str]] = {
    **{f"t{i}": dict.fromkeys(TASKS, "train") for i in range(3)},
    **{f"v{i}": dict.fromkeys(TASKS, "validation") for i in range(2)},
    **{f"s{i}": dict.fromkeys(TASKS, "test") for i in range(2)},
    "mixed": {"va": "validation", "expr": "train", "au": "train"},
    "mixed2": {"va": "train", "expr": "validation", "au": "validation"},
    "va_test": {"va": "test"},
}
LEFT_OUT = [{"entry": "mixed", "why": "train for expr, au but validation for va: never trained on an entry a "
                                      "scored task evaluates"},
            {"entry": "mixed2", "why": "train for va but validation for expr, validation for au: never trained "
                                       "on an entry a scored task evaluates"}]
THREE = {"visual": 6, "audio": 4, "prosody": 3}   # a third stream (prosody-like), in the cache's order

_MEMO: dict = {}


def synthetic_cache(root: Path, *, streams: dict[str, int] | None = None,
                    plan: dict[str, dict[str, str]] | None = None) -> Path:
    """Both caches under root (root/embeddings, root/labels), one entry per item of `plan`."""
    for i, (name, splits) in enumerate((plan or PLAN).items()):
        write_entry(root, name, seed=i, n=N, splits=splits, streams=streams)
    return root


def params_for(root: Path, *, tasks=TASKS, heads=("jmt", "concat", "only:*"), seeds=(0, 1),
               reference: str = "jmt", epochs: int = 2, **sections):
    """Params over the synthetic caches under root: tiny model, `epochs` epochs, the comparison
    and every output under root/work. The corpus is not at hand (a cache is evaluated without
    its videos), so no corpus check runs."""
    work = root / "work"
    over = {
        "embed": {"out": str(root / "embeddings")}, "labels": {"out": str(root / "labels")},
        "model": {"d_model": 8},
        "train": {"epochs": epochs, "window": 16, "hop": 8, "batch_size": 4, "tasks": list(tasks),
                  "out": str(work / "model.pt"), "live_dir": str(work / "live")},
        "evaluate": {"metrics": str(work / "eval.json"), "out": str(work / "eval")},
        "compare": {"heads": list(heads), "seeds": list(seeds), "reference": reference, "runs": str(work / "runs"),
                    "metrics": str(work / "compare.json"), "table": str(work / "compare.md"),
                    "bootstrap": 200, "latency_repeats": 1, "min_subset_frames": 10},
        "report": {"out": str(work / "reports"), "videos": 1, "dpi": 60},
    }
    for section, values in sections.items():
        over[section] = {**over.get(section, {}), **values}
    return params_at(work, root / "no-corpus", **over)


def compared_tasks(tmp_path_factory):
    """(params, result) of `jmt compare` on va + expr + au: jmt (the reference), concat and
    `only:*` (one unimodal head per stream), two seeds, two epochs; run once per session."""
    from pipeline.stage2.compare import run_compare

    if "tasks" not in _MEMO:
        root = synthetic_cache(tmp_path_factory.mktemp("tasks_compare"))
        params = params_for(root)
        _MEMO["tasks"] = (params, run_compare(params))
    return _MEMO["tasks"]


def compared_three_streams(tmp_path_factory):
    """(params, result) of `jmt compare` (va) on a three-stream cache: concat and `only:*`, one
    seed; run once per session."""
    from pipeline.stage2.compare import run_compare

    if "three" not in _MEMO:
        root = synthetic_cache(tmp_path_factory.mktemp("three_streams"), streams=THREE)
        params = params_for(root, tasks=("va",), heads=("concat", "only:*"), seeds=(0,), reference="concat")
        _MEMO["three"] = (params, run_compare(params))
    return _MEMO["three"]
