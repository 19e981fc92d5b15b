"""`jmt audio`, `jmt labels` and `jmt embed` killed mid-run (SIGKILL, in the middle of writing an entry) then
re-run: the partial file is removed, the committed entries are kept, the rest is written, and
the cache equals an uninterrupted run's (the session's tiny cache, built with the same params;
for labels, a run of its own).
Their report.json files say what each run did."""

import json
import signal
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from pipeline import cache
from pipeline.stage1.audio import run_audio
from pipeline.stage1.embed import run_embed
from pipeline.stage1.labels import run_labels

from .helpers import assert_same, contents, params_at, write_params

# Runs one stage through the real CLI, with cache.write_entry wrapped so that the process
# SIGKILLs itself while the `kill_at`-th entry file is open and half written: a crash at a
# known point instead of a race with a timer.
KILLER = textwrap.dedent("""
    import contextlib, os, signal, sys
    from pipeline import cache
    from pipeline.cli import run

    real, opened, kill_at = cache.write_entry, [], int(sys.argv[1])

    @contextlib.contextmanager
    def write_entry(*args, **kwargs):
        with real(*args, **kwargs) as f:
            opened.append(1)
            if len(opened) == kill_at:
                f.create_dataset("half", data=[1, 2, 3])
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            yield f

    cache.write_entry = write_entry
    sys.argv = ["jmt", *sys.argv[2:]]
    run()
""")


def kill_midway(stage, params_file, kill_at):
    proc = subprocess.run([sys.executable, "-c", KILLER, str(kill_at), stage, "--params", str(params_file)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


RUN = {"audio": run_audio, "labels": run_labels, "embed": run_embed}


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["audio", "labels", "embed"])
def test_sigkill_mid_entry_then_rerun_equals_an_uninterrupted_run(tiny_cache, tiny_corpus, tmp_path, stage):
    params, _ = tiny_cache
    shared = {s: str(params.path(getattr(params, s).out)) for s in ("faces", "audio", "embed")}
    # labels and embed read the session's faces (and audio) caches, read-only, and write their own folder
    outs = {"audio": {"audio": {"out": str(tmp_path / "audio")}},
            "labels": {"faces": {"out": shared["faces"]}, "labels": {"out": str(tmp_path / "labels")}},
            "embed": {"faces": {"out": shared["faces"]}, "audio": {"out": shared["audio"]},
                      "embed": {"out": str(tmp_path / "embed")}}}[stage]
    params_file = write_params(tmp_path, tiny_corpus, **outs)
    folder = tmp_path / stage
    # entries in corpus order: demo_00_left, demo_00_right (one video), demo_01, demo_02
    kill_midway(stage, params_file, kill_at=2)
    assert cache.entries(folder) == ["demo_00_left"]                     # committed whole
    assert len(list(folder.glob(".tmp-*.h5"))) == 1                      # the half-written one
    h5py.File(folder / "demo_00_left.h5").close()

    other = params_at(tmp_path, tiny_corpus, **outs)
    resumed = RUN[stage](other)
    assert resumed.cached == ["demo_00_left"]
    assert sorted(resumed.done) == ["demo_00_right", "demo_01", "demo_02"]
    assert not list(folder.glob(".tmp-*"))
    if stage == "labels":
        reference = RUN[stage](params_at(tmp_path / "clean", tiny_corpus, faces={"out": shared["faces"]}))
        assert len(reference.done) == 4
        clean = tmp_path / "clean/cache/labels"
    else:
        clean = params.path(getattr(params, stage).out)
    assert_same(contents(clean), contents(folder))

    report = json.loads((folder / "report.json").read_text())
    assert report["stage"] == stage and report["cached"] == ["demo_00_left"]
    assert sorted(report["done"]) == ["demo_00_right", "demo_01", "demo_02"]
    assert report["skipped"] == [] and report["warnings"] == []
    assert all(report["done"][n]["frames"] == (96 if n == "demo_01" else 60) for n in report["done"])
