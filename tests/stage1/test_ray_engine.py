"""Stage 1 on a real two-node Ray cluster (tests/conftest.py `ray_cluster`): the same cache as
the local engine, also when the process running a video is killed (kill -9) or a whole node
stops mid-run; no partial files left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from pipeline import cache, engine
from pipeline.local_cluster import LocalCluster
from pipeline.stage1.audio import run_audio
from pipeline.stage1.embed import run_embed
from pipeline.stage1.faces import run_faces

from .helpers import assert_same, contents, params_at, write_params

STAGES = {"faces": run_faces, "audio": run_audio, "embed": run_embed}


def _ray_params(tmp_path, tiny_corpus, **run):
    return write_params(tmp_path, tiny_corpus, run={"engine": "ray", "address": "auto", **run})


def test_ray_engine_writes_the_local_engines_cache(tiny_cache, tiny_corpus, ray_cluster, tmp_path, monkeypatch):
    local, local_results = tiny_cache
    monkeypatch.setenv("RAY_ADDRESS", ray_cluster.address)  # run.address: auto finds it
    params = params_at(tmp_path, tiny_corpus, run={"engine": "ray", "address": "auto"})
    try:
        for stage, run in STAGES.items():
            result = run(params)
            out, ref = params.path(getattr(params, stage).out), local.path(getattr(local, stage).out)
            assert sorted(result.done) == sorted(local_results[stage].done), stage
            assert_same(contents(out), contents(ref))
            assert not list(out.glob(".tmp-*")) and not list(out.glob(".jmt-*")), stage
            again = run(params)  # resume: every entry current, nothing redone
            assert not again.done and sorted(again.cached) == sorted(result.done)
    finally:
        engine.shutdown()


def _video_tasks(among: list[psutil.Process] | None = None) -> list[psutil.Process]:
    """Ray worker processes running a video right now (their title is ray::video_task), of all
    processes or `among` these."""
    found = []
    for proc in among if among is not None else psutil.process_iter():
        try:
            if (proc.cmdline() or [""])[0].startswith("ray::video_task"):
                found.append(proc)
        except psutil.Error:
            pass
    return found


def _run_cli(stage: str, params_file, address: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline", stage, "--params", str(params_file)],
                            env={**os.environ, "RAY_ADDRESS": address}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _when_running(among, action, timeout_s: float = 120.0) -> threading.Thread:
    """Calls `action(process)` on the first video task seen (among the processes `among()`
    returns, or all), once it has run for a moment (mid-video); records it in thread.acted."""
    def watch():
        t0 = time.time()
        while time.time() - t0 < timeout_s:
            procs = _video_tasks(among() if among else None)
            if procs:
                time.sleep(0.5)
                if procs[0].is_running():
                    action(procs[0])
                    thread.acted = True
                    return
            time.sleep(0.05)
    thread = threading.Thread(target=watch, daemon=True)
    thread.acted = False
    thread.start()
    return thread


def test_a_worker_killed_mid_video_is_retried_and_the_cache_is_identical(tiny_cache, tiny_corpus,
                                                                         ray_cluster, tmp_path):
    local, _ = tiny_cache
    params_file = _ray_params(tmp_path, tiny_corpus)
    watcher = _when_running(None, lambda p: os.kill(p.pid, signal.SIGKILL))
    proc = _run_cli("faces", params_file, ray_cluster.address)
    log, _ = proc.communicate(timeout=600)
    watcher.join(timeout=5)
    assert watcher.acted, "no video task was seen to kill"
    assert proc.returncode == 0, log
    out = tmp_path / "cache/faces"
    assert_same(contents(out), contents(local.path(local.faces.out)))
    assert not list(out.glob(".tmp-*")), "no partial files"


def test_a_node_stopped_mid_run_is_survived(tiny_cache, tiny_corpus, tmp_path):
    local, _ = tiny_cache
    params_file = _ray_params(tmp_path, tiny_corpus, max_retries=3)
    with LocalCluster(nodes=2, cpus=1) as cluster:
        watcher = _when_running(lambda: cluster.node_processes(1), lambda p: cluster.stop_node(1))
        proc = _run_cli("faces", params_file, cluster.address)
        log, _ = proc.communicate(timeout=600)
        watcher.join(timeout=5)
        assert watcher.acted, "no video task was seen on the second node"
        assert cluster.procs[1].poll() is not None
    assert proc.returncode == 0, log
    out = tmp_path / "cache/faces"
    assert_same(contents(out), contents(local.path(local.faces.out)))
    assert not list(out.glob(".tmp-*"))
    assert cache.entries(out) == cache.entries(local.path(local.faces.out))
