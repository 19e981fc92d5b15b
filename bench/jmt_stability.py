"""Why is `jmt` slow to start and unstable across seeds? Trains it under several recipes and
seeds on one cache and records, per run: the validation CCC mean per epoch, the best epoch and
how the run ended, and two diagnostics of the trained model on the validation split:

- the entropy of the aggregation self-attention over the six stream tokens (ln 6 = 1.79 is
  uniform; near 0 means it collapsed onto one token), and the share of attention the kept token
  (A->J) pays to each of the six;
- the scale of the joint stream J against A and V where they enter their encoders (RMS per frame),
  at initialisation and after training.

    python bench/jmt_stability.py --params params.yaml --seeds 0 1 2 --recipes old protocol lr3e-4
    python bench/jmt_stability.py --list

Writes docs/bench/jmt_stability.json (append-merge by recipe) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from pipeline.config import load_params
from pipeline.stage2.data import corpus_names, load_split
from pipeline.stage2.checkpoints import load as load_checkpoint
from pipeline.stage2.heads import build_head
from pipeline.stage2.train import head_kwargs, seed_everything, train_model

REPO = Path(__file__).resolve().parent.parent
TOKENS = ["V->A", "A->V", "J->V", "V->J", "J->A", "A->J"]

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


@torch.no_grad()
def diagnostics(model: torch.nn.Module, entries, window: int) -> dict:
    """Aggregation attention entropy/shares and stream scales on validation windows."""
    model.eval()
    seen: dict[str, list] = {"tokens": [], "a": [], "v": [], "j": []}
    hooks = []
    if hasattr(model, "agg_attn"):
        hooks.append(model.agg_attn.register_forward_pre_hook(lambda m, args: seen["tokens"].append(args[0])))
    for name in ("a", "v", "j"):
        hooks.append(getattr(model, f"enc_{name}").register_forward_pre_hook(
            lambda m, args, name=name: seen[name].append(args[0])))
    for e in entries:
        for start in range(0, max(1, e.n - window + 1), window):
            x = e.read(start, min(e.n, start + window))
            t = {k: torch.as_tensor(v)[None] for k, v in x.items()}
            model(t["audio"], t["visual"], t["audio_mask"], t["visual_mask"])
    for h in hooks:
        h.remove()
    out = {f"rms_{k}": float(torch.cat([s.reshape(-1, s.shape[-1]) for s in seen[k]]).pow(2).mean(1).sqrt().mean())
           for k in ("a", "v", "j")}
    if seen["tokens"]:
        tokens = torch.cat(seen["tokens"])                                   # (N, 6, d)
        _, w = model.agg_attn(tokens, tokens, tokens, need_weights=True)      # (N, 6, 6)
        ent = -(w.clamp_min(1e-12).log() * w).sum(-1)                         # (N, 6)
        out["agg_entropy"] = float(ent.mean())
        out["kept_token_attends"] = dict(zip(TOKENS, [round(float(x), 4) for x in w[:, -1].mean(0)]))
    return out


def run(params, recipe: str, seed: int, work: Path, device: str | None = None) -> dict:
    t_over, m_over = RECIPES[recipe]
    if device:
        t_over = {**t_over, "device": device}
    folder = work / f"{recipe}-seed{seed}"
    p = params.model_copy(update={
        "model": params.model.model_copy(update={"fusion": "jmt", **m_over}),
        "train": params.train.model_copy(update={"seed": seed, "out": str(folder / "model.pt"),
                                                 "live_dir": str(folder / "live"), **t_over}),
    })
    p._root = params.root
    cache = p.path(p.embed.out)
    val = load_split(cache, "validation", preload_max_mb=1e9, expected=corpus_names(p, "validation"))
    # scales at initialisation: the same seed builds the same initial weights as train_model
    seed_everything(seed)
    a_dim, v_dim = val[0].read(0, 1)["audio"].shape[-1], val[0].read(0, 1)["visual"].shape[-1]
    init = diagnostics(build_head("jmt", **head_kwargs(p.model, a_dim, v_dim)), val, p.train.window)
    result = train_model(p, quiet=True)
    model, _ = load_checkpoint(folder / "model.pt", cache)
    trained = diagnostics(model, val, p.train.window)
    curve = [round(h["val_ccc_mean"], 4) for h in result.history]
    return {"recipe": recipe, "seed": seed, "device": str(p.train.device), "best": round(result.best["val_ccc_mean"], 4),
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
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(data, indent=1) + "\n")
            best = np.array([r["best"] for r in rows])
            print(f"{recipe:16} best {best.mean():.3f} ± {best.std(ddof=1) if len(best) > 1 else 0:.3f}  "
                  f"epoch-10 {[r['val_at_epoch_10'] for r in rows]}  best epochs {[r['best_epoch'] for r in rows]}  "
                  f"stopped {[r['stopped'] for r in rows]}  agg entropy "
                  f"{[round(r['trained'].get('agg_entropy', float('nan')), 2) for r in rows]}  "
                  f"rms a/v/j init {[tuple(round(v, 2) for v in r['init'].values()) for r in rows][:1]}",
                  flush=True)


if __name__ == "__main__":
    main()
