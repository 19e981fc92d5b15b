"""What the benches share: where the repository is, params files built from its params.yaml, a
command run in a fresh process with its wall time and peak memory measured, and the JSON they
write (docs/bench/*.json).

Import it from a bench script with the script's own folder on sys.path (true when it runs as
`python bench/<script>.py`; a test that loads a script by path needs the line too):

    sys.path.insert(0, str(Path(__file__).resolve().parent))   # bench/: common.py
    from common import REPO, write_params  # noqa: E402

Imports with only the standard library (bench/scale_gpu.py runs on machines without this
package's config dependencies: it reads params.yaml raw with `params_data`, PyYAML alone);
`write_params` validates through pipeline.config (pydantic), imported when it is called. It
puts the repository on sys.path, so `pipeline` imports where the package is not installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # bare machines: the package is not installed
    sys.path.insert(0, str(REPO))

# stage -> its cache folder under `caches` (write_params), as tests/stage1/helpers.py lays them out
CACHE_FOLDERS = {"faces": "faces", "audio": "audio", "labels": "labels", "embed": "embeddings"}


# ---- params files ------------------------------------------------------------------------------

def params_data(base: Path | None = None) -> dict:
    """A params file as plain data, read with PyYAML and not validated (default: the
    repository's params.yaml): for bench/scale_gpu.py, which runs where pydantic is not
    installed, and for another code's params file, which this code's schema cannot validate."""
    import yaml

    return yaml.safe_load((base or REPO / "params.yaml").read_text())


def write_params(folder: Path, corpus_root: Path | None = None, *, caches: str | None = "cache",
                 base: Path | None = None, **sections: dict[str, Any]) -> Path:
    """`folder/params.yaml`: the repository's params (or `base`'s, its own `base:` followed), with
    `corpus.root` = `corpus_root` (made absolute) when given, every stage-1 cache under
    `folder/<caches>/` (faces, audio, labels, embeddings; None: as in the base), then `sections`
    override keys, section -> {dotted key: value}, e.g. `faces={"device": "cuda"},
    run={"compare.cpus": 2}` (`Params.updated`: a bad section, key or value is a ParamsError
    naming it, before any command runs). Relative paths in params are taken from `folder`."""
    import yaml

    from pipeline.config import load_params

    over: dict[str, dict[str, Any]] = {}
    if corpus_root is not None:
        over["corpus"] = {"root": str(Path(corpus_root).resolve())}
    if caches is not None:
        over.update({stage: {"out": f"{caches}/{sub}"} for stage, sub in CACHE_FOLDERS.items()})
    for section, values in sections.items():
        over[section] = {**over.get(section, {}), **values}
    params = load_params(base or REPO / "params.yaml").updated(**over)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params.model_dump(), sort_keys=False))
    return path


# ---- a command in a fresh process, measured ------------------------------------------------------

def tree_rss(pid: int) -> int:
    """RSS bytes of a process and its descendants (pages shared after fork counted in each)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as fh:
                total += next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo += [int(c) for c in fh.read().split()]
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            pass
    return total


class Measured(NamedTuple):
    """A command's run: wall seconds (and when it started, time.time()), exit status, its
    output, and two peaks of resident memory, in bytes:

    - `max_rss`: the kernel's own peak for the process (getrusage's ru_maxrss from wait4, what
      `/usr/bin/time -f %M` prints): the largest of the process and of each descendant it
      waited for, one process at a time, exact;
    - `tree_rss`: the largest sum of RSS over the process and all its descendants seen by
      polling every `poll` seconds (forked pages counted in each process; a spike shorter
      than `poll` can be missed)."""

    seconds: float
    started_at: float
    returncode: int
    max_rss: int
    tree_rss: int
    stdout: str
    stderr: str


def run_measured(cmd: list[str], *, cwd: Path | None = REPO, env: dict[str, str] | None = None,
                 poll: float = 0.1) -> Measured:
    """Runs `cmd` in a fresh process (env: added to this one's) and measures it (`Measured`).
    Output goes to files, not pipes, so a long one never blocks the child."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.time()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err, text=True,
                                env={**os.environ, **env} if env else None)
        peak = 0
        while True:  # wait4, not poll(): reaping the child ourselves keeps its rusage
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, tree_rss(proc.pid))
            time.sleep(poll)
        seconds = time.time() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Measured(seconds, t0, proc.returncode, usage.ru_maxrss * 1024, peak, out.read(), err.read())


def jmt(*args: str) -> list[str]:
    """A `jmt` command line in this interpreter: the console script's entry point
    (pipeline.cli:run), so a machine without the installed script runs it too."""
    return [sys.executable, "-c", "from pipeline.cli import run; run()", *args]


def comparison_runs(params_path: Path, seeds: list[int] | None = None) -> list[tuple[str, int, Path]]:
    """(head, seed, run folder) of every run the comparison of `params_path` lists (its
    compare.metrics names each run's folder in the content-keyed run store), `seeds` only when
    given. pipeline is imported here, not at the top: this module stays importable without it."""
    from pipeline.config import load_params
    from pipeline.report import load_comparison
    from pipeline.stage2.compare import run_folder

    params = load_params(params_path)
    result = load_comparison(params)
    return [(r["head"], r["seed"], run_folder(params, result, r["head"], r["seed"])) for r in result["runs"]
            if seeds is None or r["seed"] in seeds]


# ---- results ---------------------------------------------------------------------------------

def _plain(value: Any) -> Any:
    """What json cannot write by itself: numpy scalars and arrays, paths."""
    if hasattr(value, "tolist"):   # numpy scalar or array
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def write_json(path: Path, data: dict, *, merge: bool = False) -> dict:
    """Writes a bench's results (indent 1, a final newline; folders made). `merge`: the keys
    of a file already there that `data` lacks are kept (parts skipped in this run). Returns
    what was written."""
    path = Path(path)
    if merge and path.is_file():
        data = {**json.loads(path.read_text()), **data}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=_plain) + "\n")
    return data
