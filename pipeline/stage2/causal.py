"""The causal protocol as the commands choose it: the prediction for frame t uses frames <= t
only, from the window that ENDS at t, [max(0, t - window + 1), t], its last output kept. The
code is windows.py's, beside the offline protocol's (`predict_split` runs either; `jmt live`
runs the same rule one frame at a time, windows.RollingWindow).

Selectable where the offline protocol is used: `evaluate.protocol` and `compare.protocol`
(`offline` | `causal`, and `--protocol` on both commands); `protocol_paths` keeps a protocol
chosen on the command line out of the params' outputs.
"""

from __future__ import annotations

from pathlib import Path

# the protocols and their one prediction function, also importable from here (compare, bench/live.py)


def protocol_paths(paths: dict[str, str], protocol: str) -> dict[str, str]:
    """Output paths for a protocol chosen on the command line against the params' one: `x.json`
    -> `x-causal.json`, `reports/eval` -> `reports/eval-causal`, so the params' (DVC-tracked)
    outputs are never overwritten by the other protocol's."""
    out = {}
    for key, value in paths.items():
        p = Path(value)
        out[key] = str(p.with_name(f"{p.stem}-{protocol}{p.suffix}"))
    return out
