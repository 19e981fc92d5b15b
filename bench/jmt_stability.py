"""Why is `jmt` slow to start and unstable across seeds? Trains it under several recipes and
seeds on one cache and records, per run: the validation score per epoch (the sum of the
`train.tasks` metrics: with the default va alone, the CCC mean), the best epoch and how the run
ended, and two diagnostics of the trained model on the validation split:

- the entropy of the aggregation self-attention over the N(N+1) stream tokens (six for the
  default visual and audio streams: ln 6 = 1.79 is uniform; near 0 means it collapsed onto one
  token), and the share of attention the kept token (the last stream -> J; A->J by default) pays
  to each of them;
- the scale of the joint stream J against each stream where they enter their encoders (RMS per
  frame), at initialisation and after training.

Streams are named by their initials (V, A and J for the joint stream; `rms_v`, `rms_a`,
`rms_j`) when those are distinct, else by their names.

    python bench/jmt_stability.py --params params.yaml --seeds 0 1 2 --recipes old protocol lr3e-4
    python bench/jmt_stability.py --list

Writes docs/bench/jmt_stability.json (append-merge by recipe) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))      # bench/: common.py
from common import REPO, write_json  # noqa: E402

from pipeline.config import load_params  # noqa: E402
from pipeline.stage2.checkpoints import load as load_checkpoint  # noqa: E402
from pipeline.stage2.data import feature_key, load_splits, mask_key, preload, stream_widths  # noqa: E402
from pipeline.stage2.heads import build_head  # noqa: E402
from pipeline.stage2.heads.jmt import JOINT  # noqa: E402
from pipeline.stage2.train import head_kwargs, seed_everything, train_model  # noqa: E402

# name -> (train overrides, model overrides). "old" is the comparison's protocol before issue 9.
RECIPES: dict[str, tuple[dict, dict]] = {
    "old": ({"schedule": "warmup_cosine", "epochs": 30, "patience": 8, "lr": 1e-3, "warmup_epochs": 2}, {}),
    "protocol": ({"schedule": "warmup_plateau", "epochs": 60, "patience": 10, "lr": 1e-3, "warmup_epochs": 2}, {}),
    "lr3e-4": ({"schedule": "warmup_plateau", "epochs": 60, "patience": 10, "lr": 3e-4, "warmup_epochs": 2}, {}),
    "lr3e-4-warm5": ({"schedule": "warmup_plateau", "epochs": 60, "patience": 10, "lr": 3e-4,
                      "warmup_epochs": 5}, {}),
    "lr1e-4": ({"schedule": "warmup_plateau", "epochs": 60, "patience": 10, "lr": 1e-4, "warmup_epochs": 2}, {}),
    "nodrop": ({"schedule": "warmup_plateau", "epochs": 60, "patience": 10, "lr": 1e-3, "warmup_epochs": 2},
               {"dropout": 0.0}),
    "lr3e-4-nodrop": ({"schedule": "warmup_plateau", "epochs": 60, "patience": 10, "lr": 3e-4,
                       "warmup_epochs": 2}, {"dropout": 0.0}),
}


def short_names(streams: list[str]) -> dict[str, str]:
    """stream (and JOINT) -> how the output names it: upper-case initials (V, A, J) when they are
    distinct, else the names themselves."""
    initials = {s: s[0].upper() for s in streams}
    if len(set(initials.values())) < len(streams) or JOINT in initials.values():
        return {**{s: s for s in streams}, JOINT: JOINT}
    return {**initials, JOINT: JOINT}


@torch.no_grad()
def diagnostics(model: torch.nn.Module, entries, window: int) -> dict:
    """Aggregation attention entropy/shares and stream scales on validation windows (whole
    windows of `window` frames, no padding; a video shorter than that as one window)."""
    model.eval()
    name = short_names(model.streams)
    encoders = {**dict(model.enc.items()), JOINT: model.enc_joint}   # where each stream enters its encoder
    seen: dict[str, list] = {"tokens": [], **{s: [] for s in encoders}}
    hooks = []
    if hasattr(model, "agg_attn"):
        hooks.append(model.agg_attn.register_forward_pre_hook(lambda m, args: seen["tokens"].append(args[0])))
    for s, enc in encoders.items():
        hooks.append(enc.register_forward_pre_hook(lambda m, args, s=s: seen[s].append(args[0])))
    for e in entries:
        for start in range(0, max(1, e.n - window + 1), window):
            x = e.read(start, min(e.n, start + window))
            model({s: torch.as_tensor(x[feature_key(s)], dtype=torch.float32)[None] for s in e.streams},
                  {s: torch.as_tensor(x[mask_key(s)])[None] for s in e.streams})
    for h in hooks:
        h.remove()
    out = {f"rms_{name[s].lower()}": float(torch.cat([v.reshape(-1, v.shape[-1]) for v in seen[s]])
                                         .pow(2).mean(1).sqrt().mean()) for s in (*model.streams, JOINT)}
    if seen["tokens"]:
        tokens = torch.cat(seen["tokens"])                                   # (frames, N(N+1), d)
        _, w = model.agg_attn(tokens, tokens, tokens, need_weights=True)      # (frames, N(N+1), N(N+1))
        ent = -(w.clamp_min(1e-12).log() * w).sum(-1)                         # (frames, N(N+1))
        out["agg_entropy"] = float(ent.mean())
        labels = [f"{name[q]}->{name[k]}" for q, k in model.pairs]
        out["kept_token_attends"] = dict(zip(labels, [round(float(x), 4) for x in w[:, -1].mean(0)]))
    return out


def run(params, recipe: str, seed: int, work: Path, device: str | None = None) -> dict:
    t_over, m_over = RECIPES[recipe]
    if device:
        t_over = {**t_over, "device": device}
    folder = work / f"{recipe}-seed{seed}"
    p = params.updated(model={"fusion": "jmt", **m_over},
                       train={"seed": seed, "out": str(folder / "model.pt"), "live_dir": str(folder / "live"), **t_over})
    cache = p.path(p.embed.out)
    splits = load_splits(p, preload_max_mb=0)   # checked against the corpus, as train_model does
    val = splits.union("validation")
    preload(val, 1e9)
    # scales at initialisation: the same seed builds the same initial weights as train_model
    seed_everything(seed)
    widths = stream_widths(splits.train + val)
    init = diagnostics(build_head("jmt", **head_kwargs(p.model, widths, p.train.tasks)), val, p.train.window)
    result = train_model(p, quiet=True)
    model, _ = load_checkpoint(folder / "model.pt", cache)
    trained = diagnostics(model, val, p.train.window)
    curve = [round(h["val_score"], 4) for h in result.history]
    return {"recipe": recipe, "seed": seed, "device": str(p.train.device), "best": round(result.best["val_score"], 4),
            "best_epoch": result.best_epoch, "epochs": len(curve), "stopped": result.stopped,
            "val_at_epoch_10": curve[min(9, len(curve) - 1)], "seconds": round(result.seconds, 1),
            "curve": curve, "init": {k: v for k, v in init.items() if k.startswith("rms")}, "trained": trained}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--recipes", nargs="+", default=["old", "protocol", "lr3e-4"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=REPO / "docs/bench/jmt_stability.json")
    ap.add_argument("--device", help="override train.device (e.g. cpu on a GPU machine)")
    ap.add_argument("--list", action="store_true", help="print the recipes and exit")
    args = ap.parse_args()
    if args.list:
        for name, (t, m) in RECIPES.items():
            print(f"{name:16} train {t} model {m}")
        return
    params = load_params(args.params)
    data = json.loads(args.out.read_text()) if args.out.is_file() else {"runs": []}
    with tempfile.TemporaryDirectory(prefix="jmt-stability-") as tmp:
        for recipe in args.recipes:
            rows = [run(params, recipe, s, Path(tmp), args.device) for s in args.seeds]
            data["runs"] = [r for r in data["runs"] if not (r["recipe"] == recipe and r["seed"] in args.seeds)] + rows
            write_json(args.out, data)
            best = np.array([r["best"] for r in rows])
            print(f"{recipe:16} best {best.mean():.3f} ± {best.std(ddof=1) if len(best) > 1 else 0:.3f}  "
                  f"epoch-10 {[r['val_at_epoch_10'] for r in rows]}  best epochs {[r['best_epoch'] for r in rows]}  "
                  f"stopped {[r['stopped'] for r in rows]}  agg entropy "
                  f"{[round(r['trained'].get('agg_entropy', float('nan')), 2) for r in rows]}  "
                  f"rms {'/'.join(k[4:] for k in rows[0]['init'])} init "
                  f"{[tuple(round(v, 2) for v in r['init'].values()) for r in rows][:1]}",
                  flush=True)


if __name__ == "__main__":
    main()
