"""`jmt tune`'s markdown: the protocol, and per head the effort it spent (equal within one step
of the budget), its best validation score and configuration, and what mattered most."""

from __future__ import annotations


def _value(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 0.01 or abs(v) >= 1000 else f"{v:.4g}"
    return str(v)


def config_text(config: dict, keys: list[str] | None = None) -> str:
    """A configuration in a few words: `d_model 64, lr 0.00199, ...` (the given keys, else all,
    in key order; 4 significant digits)."""
    return ", ".join(f"{k.partition('.')[2]} {_value(config[k])}" for k in (keys or sorted(config)) if k in config)


def markdown(result: dict) -> str:
    """The search's table: one row per head."""
    p = result["protocol"]
    unit = f"{p['resource']}-s"
    budget = (f"{p['epochs_budget']} training epochs per head (at most {p['trials']} trials)" if p["budget"] == "epochs"
              else f"{p['seconds_budget']:g} {unit} per head (at most {p['trials']} trials)" if p["budget"] == "seconds"
              else f"{p['trials']} trials per head")
    rungs = ", ".join(map(str, p["rungs"]))
    lines = [
        "## Tuning: every head searched with the same budget\n",
        f"Budget: **{budget}**; sampler {p['sampler']} (Optuna, seed {p['seed']}"
        + (f", {p['startup_trials']} random trials first" if p["sampler"] == "tpe" else "") + "); scheduler "
        + (f"ASHA (rungs at {rungs} epochs, 1/{p['reduction']} promoted)" if p["scheduler"] == "asha"
           else "none (every trial trained until early stopping)")
        + f". Objective: {p['objective']}, training seed {p['train_seed']}. The test split is never read. "
        "The first trial of each head is the params' own configuration (where the space holds it).\n",
        f"| head | trials (complete / pruned) | epochs | {unit} | default config | best validation | trial | "
        "best configuration (searched keys) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for head, r in result["results"].items():
        e, best, default = r["effort"], r["best"], r["default"]
        dv = "-" if default is None else f"{default['value']:.4f}" + (
            f" (pruned at {len(default['values'])} epochs)" if default["state"] == "pruned" else "")
        partial = "" if best is None or best.get("complete", True) else f" (at {best['epochs']} epochs)"
        bv, bt, bc = ("-", "-", "-") if best is None else (f"{best['value']:.4f}{partial}", best["trial"],
                                                             config_text(best["config"], r["searched"]))
        lines.append(f"| {head} | {e['trials']} ({e['complete']} / {e['pruned']}) | {e['epochs']} | "
                     f"{e['resource_seconds']:.0f} | {dv} | {bv} | {bt} | {bc} |")
    if any(r["best"] and not r["best"].get("complete", True) for r in result["results"].values()):
        lines.append("\nA best validation score \"at n epochs\": no trial of that head completed every rung within the "
                     "budget; the best of those trained furthest is taken (the tuned comparison trains it fully).")
    lines.append("\nWhat mattered most in each head's search (Optuna's fANOVA importances over its completed trials):\n")
    for head, r in result["results"].items():
        imp = r["importances"]
        text = imp if isinstance(imp, str) else ", ".join(f"{k} {v:.2f}" for k, v in list(imp.items())[:3])
        lines.append(f"- {head}: {text}")
    return "\n".join(lines) + "\n"
