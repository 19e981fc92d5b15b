"""pipeline.engine: joining Ray (and failing clearly), the storage check, tasks and actors on a
real two-node cluster on loopback (tests/conftest.py `ray_cluster`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import engine
from pipeline.config import ActorResources, Resources, RunParams
from pipeline.engine import EngineError, Unit
from pipeline.errors import InputError
from pipeline.local_cluster import free_port

from .stage1.helpers import write_params


def test_no_cluster_at_the_address_is_a_clear_error_within_30_s():
    address = f"127.0.0.1:{free_port()}"
    t0 = time.time()
    with pytest.raises(EngineError, match=f"no Ray cluster at {address}"):
        engine.connect(RunParams(engine="ray", address=address))
    assert time.time() - t0 < 30


def test_auto_without_a_cluster_says_how_to_start_one(monkeypatch, tmp_path):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))  # no ray_current_cluster there
    with pytest.raises(EngineError, match="'auto'.*ray start --head"):
        engine.connect(RunParams(engine="ray", address="auto"))


def test_a_stage_command_with_no_cluster_exits_with_the_address(tiny_corpus, tmp_path):
    address = f"127.0.0.1:{free_port()}"
    params = write_params(tmp_path, tiny_corpus, run={"engine": "ray", "address": address})
    t0 = time.time()
    out = subprocess.run([sys.executable, "-m", "pipeline", "audio", "--params", str(params)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert f"no Ray cluster at {address}" in out.stderr
    assert time.time() - t0 < 30
    assert not (tmp_path / "cache/audio").exists() or not list((tmp_path / "cache/audio").glob("*.h5"))


def test_storage_check_names_the_node_and_folder(tmp_path):
    with engine.shared_storage(tmp_path) as marker:
        engine.check_storage(tmp_path, marker)  # the driver's own folder: fine
        other = tmp_path / "elsewhere"
        other.mkdir()
        with pytest.raises(EngineError, match=f"does not see {other}.*storage every node sees"):
            engine.check_storage(other, marker)
    assert not list(tmp_path.glob(".jmt-*")), "the marker is removed afterwards"


def test_loopback_cluster_addresses():
    assert engine._is_loopback("127.0.0.1") and engine._is_loopback("localhost")
    assert not engine._is_loopback("10.0.0.3")
    assert engine._host_port("ray://10.0.0.3:10001") == ("10.0.0.3", 10001)
    with pytest.raises(EngineError, match="host:port"):
        engine._host_port("nowhere")


# ------------------------------------------------------------------------- on the real cluster

def _square(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def _bad(x: int) -> None:
    raise InputError(f"video {x}: unreadable")


class _Counter:
    """An actor that records how often it was built (its weights would be loaded here)."""

    builds = 0

    def __init__(self, offset: int) -> None:
        type(self).builds += 1
        self.offset, self.pid = offset, os.getpid()

    def add(self, x: int) -> tuple[int, int, int]:
        return x + self.offset, self.pid, type(self).builds


@pytest.fixture
def on_cluster(ray_cluster):
    yield RunParams(engine="ray", address=ray_cluster.address, max_retries=1)
    engine.shutdown()


def test_tasks_run_on_both_nodes_and_every_result_comes_back(on_cluster):
    got = {}
    engine.run_units(_square, [Unit(str(i), (i,)) for i in range(12)], cfg=on_cluster, res=Resources(cpus=1),
                     on_result=lambda u, r: got.__setitem__(int(u.name), r))
    assert {k: v[0] for k, v in got.items()} == {i: i * i for i in range(12)}
    assert len({pid for _, pid in got.values()}) >= 2  # two nodes of one CPU: two workers at least


def test_a_units_own_error_reaches_the_driver_as_itself(on_cluster):
    with pytest.raises(InputError, match="^video 3: unreadable$"):
        engine.run_units(_bad, [Unit("3", (3,))], cfg=on_cluster, res=Resources(cpus=1), on_result=print)


def test_actors_are_built_once_and_take_many_units(on_cluster):
    got = []
    engine.run_on_actors(_Counter, (100,), "add", [Unit(str(i), (i,)) for i in range(10)], cfg=on_cluster,
                         res=ActorResources(cpus=1, actors=2), on_result=lambda u, r: got.append(r))
    assert sorted(v for v, _, _ in got) == list(range(100, 110))
    pids = {pid for _, pid, _ in got}
    assert len(pids) == 2
    assert {builds for _, _, builds in got} == {1}  # each actor process built its state once


def test_at_most_twice_the_clusters_capacity_is_in_flight(on_cluster):
    """The driver takes units from the iterator only as slots free up: two nodes of one CPU hold
    2 units of 1 CPU, so 4 are in flight at most, whatever the number of units."""
    window = 4
    taken, delivered, in_flight = [], [], []

    def units():
        for i in range(3 * window):
            taken.append(i)
            in_flight.append(len(taken) - len(delivered))   # submitted, result not yet handed over
            yield Unit(str(i), (i,))

    engine.run_units(_square, units(), cfg=on_cluster, res=Resources(cpus=1),
                     on_result=lambda u, r: delivered.append(int(u.name)))
    assert sorted(delivered) == list(range(3 * window))
    assert max(in_flight) == window and in_flight[:window] == list(range(1, window + 1))


def _dies_once(flag: str) -> int:
    """Kills its own worker process the first time (as a crashed or OOM-killed worker), then
    returns on the retry."""
    if not os.path.exists(flag):
        with open(flag, "w") as f:
            f.write(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return os.getpid()


def test_a_unit_whose_worker_dies_is_retried(on_cluster, tmp_path):
    flag = tmp_path / "died"
    got = []
    engine.run_units(_dies_once, [Unit("u", (str(flag),))], cfg=on_cluster, res=Resources(cpus=1),
                     on_result=lambda u, r: got.append(r))
    assert flag.is_file() and len(got) == 1
    assert got[0] != int(flag.read_text())          # the retry ran in another worker process


def test_a_unit_whose_worker_dies_without_retries_left_is_named(ray_cluster, tmp_path):
    cfg = RunParams(engine="ray", address=ray_cluster.address, max_retries=0)
    try:
        with pytest.raises(EngineError, match=r"^u7: lost after .*retries exhausted \(run.max_retries\)"):
            engine.run_units(_dies_once, [Unit("u7", (str(tmp_path / "died"),))], cfg=cfg, res=Resources(cpus=1),
                             on_result=print)
    finally:
        engine.shutdown()


def test_the_local_engine_runs_in_this_process():
    got = []
    engine.run_units(_square, [Unit("2", (2,))], cfg=RunParams(), res=Resources(),
                     on_result=lambda u, r: got.append(r))
    assert got == [(4, os.getpid())]
