"""A real Ray cluster of several nodes on this one machine, on loopback only.

For the tests and benches of the Ray engine, and for trying `run.engine: ray` on a
workstation: `ray start --head` plus `ray start --address ...` for each further node, as on a
real cluster, but every node with `--node-ip-address=127.0.0.1`, no dashboard, usage
statistics off, a small object store and its own temp folder. Each node runs in its own
process group, so one node can be stopped (as a machine failing) and all are stopped at exit.

    with LocalCluster(nodes=2, cpus=1) as cluster:
        ...  # run.address: cluster.address (or "auto" with RAY_ADDRESS=cluster.address)
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline.errors import JmtError

RAY = str(Path(sys.executable).with_name("ray"))
# Ray swaps 127.0.0.1 for the machine's own address ("remotely reachable") unless it believes
# it runs a single-machine (Windows/macOS-style) cluster; this keeps every process, the agents
# and workers included, on loopback.
# Token authentication on, explicitly: the services listen on every interface, and a node
# joining a cluster that has it needs it set. The token is Ray's own ~/.ray/auth_token (made by
# `ray get-auth-token --generate` when missing, as a local ray.init makes it); every node and
# driver on this machine reads it there.
QUIET_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
             "RAY_AUTH_MODE": "token"}
# A node joining a cluster is refused in that mode: `ray start` for the other nodes runs with
# the check passed and the address resolution kept on loopback (its children read QUIET_ENV).
_JOIN = ("import sys, ray._private.ray_constants as c, ray._private.services as s; "
         "c.ENABLE_RAY_CLUSTER = True; s.node_ip_address_from_perspective = lambda *a, **k: '127.0.0.1'; "
         "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; main()")
OBJECT_STORE_BYTES = 100 * 2**20


def free_port() -> int:
    """A TCP port nobody listens on right now (loopback)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class LocalCluster:
    """`nodes` Ray nodes of `cpus` CPUs each on 127.0.0.1; `address` is the head's host:port."""

    def __init__(self, nodes: int = 2, cpus: int = 1, start_timeout_s: float = 90.0) -> None:
        self.nodes, self.cpus, self.timeout = nodes, cpus, start_timeout_s
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # Short: Ray's unix sockets live under it (path length limit ~107 characters).
        self.temp_dir = Path(tempfile.mkdtemp(prefix="jmt-ray-", dir="/tmp"))
        self.procs: list[subprocess.Popen] = []

    def _start(self, *args: str, join: bool = False) -> subprocess.Popen:
        log = open(self.temp_dir / f"node{len(self.procs)}.log", "wb")
        ray = [sys.executable, "-c", _JOIN] if join else [RAY]
        proc = subprocess.Popen(
            [*ray, "start", "--block", "--node-ip-address=127.0.0.1", f"--num-cpus={self.cpus}",
             "--num-gpus=0", f"--object-store-memory={OBJECT_STORE_BYTES}", "--disable-usage-stats", *args],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,  # own process group
            env={**os.environ, **QUIET_ENV})
        self.procs.append(proc)
        return proc

    def start(self) -> LocalCluster:
        """Starts the head, waits for it, then the other nodes, and waits until all joined."""
        if not (Path.home() / ".ray" / "auth_token").is_file():
            subprocess.run([RAY, "get-auth-token", "--generate"], check=True, capture_output=True,
                           env={**os.environ, **QUIET_ENV}, timeout=60)
        self._start("--head", f"--port={self.port}", "--include-dashboard=false",
                    f"--temp-dir={self.temp_dir}")
        self._wait(lambda: _listening(self.port), "the head node")
        for _ in range(self.nodes - 1):
            self._start(f"--address={self.address}", join=True)
        self._wait(lambda: self.alive_nodes() >= self.nodes, f"{self.nodes} nodes")
        return self

    def _wait(self, ready, what: str) -> None:
        t0 = time.time()
        while not ready():
            dead = [p for p in self.procs if p.poll() is not None]
            if dead or time.time() - t0 > self.timeout:
                logs = "\n".join(p.read_text(errors="replace")[-2000:] for p in self.temp_dir.glob("node*.log"))
                self.stop()
                raise JmtError(f"local Ray cluster: {what} did not start within {self.timeout:.0f} s\n{logs}")
            time.sleep(0.5)

    def alive_nodes(self) -> int:
        """Alive nodes, as the head's GCS sees them (`ray list nodes` needs the dashboard)."""
        out = subprocess.run([RAY, "status", f"--address={self.address}"], capture_output=True,
                             text=True, env={**os.environ, **QUIET_ENV}, timeout=30)
        if out.returncode != 0:
            return 0
        lines = out.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0]
        return sum(1 for line in lines.splitlines() if line.strip().startswith("1 node_"))

    def node_processes(self, index: int) -> list:
        """Every process node `index` runs now (its raylet, agents and workers: Ray starts some
        in sessions of their own, so they are found by parentage), as psutil.Process."""
        import psutil

        try:
            return psutil.Process(self.procs[index].pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop_node(self, index: int, sig: int = signal.SIGKILL) -> None:
        """Stops node `index` (0 = head) and every process it started, as a failing machine."""
        procs = self.node_processes(index)
        try:
            os.killpg(self.procs[index].pid, sig)
        except ProcessLookupError:
            pass
        for p in procs:
            try:
                p.send_signal(sig)
            except Exception:  # already gone
                pass
        self.procs[index].wait(timeout=30)

    def stop(self) -> None:
        """Stops every node (workers first), then removes the temp folder."""
        for i in reversed(range(len(self.procs))):
            if self.procs[i].poll() is None:
                try:
                    os.killpg(self.procs[i].pid, signal.SIGTERM)
                    self.procs[i].wait(timeout=5)
                except subprocess.TimeoutExpired:
                    os.killpg(self.procs[i].pid, signal.SIGKILL)
                    self.procs[i].wait(timeout=20)
                except ProcessLookupError:
                    pass
            # worker processes can outlive `ray start --block`: end the whole group
            try:
                os.killpg(self.procs[i].pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
