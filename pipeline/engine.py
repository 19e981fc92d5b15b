"""Where the heavy commands run: in this process (`run.engine: local`, the default) or on a Ray
cluster (`run.engine: ray`), with the same cache, byte for byte.

The stages do not change between engines: a stage hands its units of work (one video of stage
1, one (head, seed) run of `jmt compare`) to `run_units` (stateless tasks: faces, audio,
compare) or `run_on_actors` (long-lived actors that load their weights once: embed). Locally
they run one after another in this process; on Ray each is a task (or an actor call) with the
resources of `run.<stage>`, retried up to `run.max_retries` times when its worker process or
its node dies (every unit is idempotent: entries are committed atomically and skipped once
current). The driver keeps a bounded number of units in flight and takes results as they come,
so its memory does not grow with the corpus.

The cache folder must be on storage every node sees: before any unit runs the driver writes a
marker file there, and each unit checks that it sees the marker and can write beside it
(`check_storage`), failing with the node and the path when it cannot.

Ray is told to stay quiet and local where it can: no dashboard, usage statistics off unless
the user set RAY_USAGE_STATS_ENABLED, and loopback addresses for a local instance.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import ActorResources, Resources, RunParams
from pipeline.errors import JmtError

MARKER = ".jmt-storage-"   # + run id: the driver's proof-of-storage file in a cache folder
CONNECT_TIMEOUT_S = 10.0
_connected: tuple | None = None  # (run.address, run.cpus) this process is connected with


class EngineError(JmtError):
    """The Ray engine cannot run: no cluster at the address, storage not shared, a unit lost."""


@dataclass
class Unit:
    """One unit of work: a name for messages, the call's arguments, a weight for progress."""

    name: str
    args: tuple
    weight: int = 1


# ---------------------------------------------------------------------------------- connecting

def _ray():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # before ray is imported
    import ray
    return ray


def _token_auth_if_available() -> None:
    """Joining a cluster: use token authentication when a token is at hand and RAY_AUTH_MODE is
    unset, as Ray itself does for a local instance (a cluster with tokens refuses a driver
    without; one without tokens ignores it)."""
    from ray._private.authentication.authentication_token_setup import (
        maybe_enable_token_auth_if_token_available)

    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _keep_loopback() -> None:
    """For a cluster on this machine's loopback (or a local instance): stop Ray from swapping
    127.0.0.1 for the machine's own address in this process (it does unless it believes it
    runs a single-machine cluster, as on Windows/macOS; the env var is Ray's own switch)."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    if "ray" in sys.modules:  # already imported: the constant was read then
        import ray._private.ray_constants as constants
        constants.ENABLE_RAY_CLUSTER = False


def _cluster_file() -> Path:
    return Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray" / "ray_current_cluster"


def resolve_address(address: str) -> str:
    """'auto' -> RAY_ADDRESS or the address `ray start` recorded on this machine; others as given."""
    if address != "auto":
        return address
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    try:
        return _cluster_file().read_text().strip()
    except OSError:
        raise EngineError("run.address is 'auto' but no Ray cluster was started on this machine "
                          f"(no RAY_ADDRESS, no {_cluster_file()}); start one with `ray start --head` "
                          "(docs/scale.md) or set run.address") from None


def _host_port(address: str) -> tuple[str, int]:
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise EngineError(f"run.address {address!r}: expected host:port, ray://host:port, auto or null")
    return host, int(port)


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def connect(cfg: RunParams) -> None:
    """Starts (address None) or joins (otherwise) Ray for this process; a no-op if connected.

    Raises EngineError naming the address when nothing answers there within CONNECT_TIMEOUT_S.
    """
    ray = _ray()
    global _connected
    address = resolve_address(cfg.address) if cfg.address is not None else None
    if ray.is_initialized():
        if _connected == (address, cfg.cpus):
            return
        ray.shutdown()  # connected elsewhere (another address in the same process): switch
    common = {"include_dashboard": False, "log_to_driver": False, "logging_level": "WARNING",
              "configure_logging": True}
    if address is None:
        _keep_loopback()
        ray.init(num_cpus=cfg.cpus, _node_ip_address=cfg.node_ip_address or "127.0.0.1", **common)
        _connected = (None, cfg.cpus)
        return
    host, port = _host_port(address)
    try:  # fail fast and clearly: ray.init would retry for a minute before a vaguer error
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise EngineError(f"no Ray cluster at {address} (run.address {cfg.address!r}): {exc}; "
                          "start one (`ray start --head`, docs/scale.md) or fix run.address") from None
    if _is_loopback(host):
        _keep_loopback()
    node_ip = cfg.node_ip_address or ("127.0.0.1" if _is_loopback(host) else None)
    extra = {"_node_ip_address": node_ip} if node_ip and not address.startswith("ray://") else {}
    common.pop("include_dashboard")  # a cluster's own setting
    _token_auth_if_available()
    try:
        ray.init(address=address, **extra, **common)
    except (ConnectionError, RuntimeError) as exc:
        raise EngineError(f"could not join the Ray cluster at {address}: {exc}") from None
    _connected = (address, cfg.cpus)


def shutdown() -> None:
    """Disconnects this process from Ray (stops the local instance if this process started it)."""
    global _connected
    ray = _ray()
    if ray.is_initialized():
        ray.shutdown()
    _connected = None


# ------------------------------------------------------------------------------------- storage

@contextmanager
def shared_storage(folder: Path) -> Iterator[str]:
    """Writes a marker file in `folder` for the units to find (check_storage); yields its name."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = f"{MARKER}{uuid.uuid4().hex}"
    (folder / marker).write_text(f"{socket.gethostname()}\n")
    try:
        yield marker
    finally:
        (folder / marker).unlink(missing_ok=True)


def check_storage(folder: Path, marker: str) -> None:
    """In a unit: the driver's marker must be visible and the folder writable, else EngineError
    naming this node and the folder (the cache must live on storage every node sees)."""
    node = socket.gethostname()
    if not (folder / marker).is_file():
        raise EngineError(f"node {node} does not see {folder} as the driver wrote it (no {marker} "
                          "there): the cache folders must be on storage every node sees "
                          "(a shared filesystem; docs/scale.md)")
    probe = folder / f".jmt-probe-{uuid.uuid4().hex}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise EngineError(f"node {node} cannot write to {folder}: {exc} (the cache folders must be "
                          "writable from every node; docs/scale.md)") from None


# ------------------------------------------------------------------------------------- running

def _capacity(ray, res: Resources) -> int:
    """How many units of `res` the cluster holds at once (at least 1)."""
    total = ray.cluster_resources()
    n = int(total.get("CPU", 1) // res.cpus)
    if res.gpus:
        n = min(n, int(total.get("GPU", 0) // res.gpus))
        if n < 1:
            raise EngineError(f"the units ask for {res.gpus} GPU each but the cluster has "
                              f"{total.get('GPU', 0)} GPUs")
    return max(n, 1)


def _unwrap(ray, unit: Unit, exc: BaseException) -> BaseException:
    """A unit's own error (JmtError, ...) as raised in it; a lost worker or node named."""
    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, JmtError):
            return type(cause)(*cause.args)  # the plain message, no remote traceback
        return exc.as_instanceof_cause()
    return EngineError(f"{unit.name}: lost after {exc.__class__.__name__} ({exc}); "
                       "retries exhausted (run.max_retries)")


def threads_for(res: Resources) -> int:
    """CPU threads a unit uses on Ray: its whole CPUs (at least 1), as Ray's OMP_NUM_THREADS."""
    return max(int(res.cpus), 1)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's CPU threads set to `n` for the block (restored after). On CPU the last bits of
    a training run depend on the thread count, so a (head, seed) run uses its unit's CPUs as
    threads in both engines; on a busy machine more threads than free cores also cost up to
    10x (OpenMP threads spin: docs/measurements.md)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _in_worker(fn: Callable[..., Any], threads: int, *args: Any) -> Any:
    """Runs fn in a Ray worker with torch's thread count set to the unit's CPUs: a worker
    process is reused across tasks, and torch reads OMP_NUM_THREADS only once."""
    import torch

    torch.set_num_threads(threads)
    return fn(*args)


class _ActorHost:
    """A Ray actor wrapping `actor_class` with torch's threads set to its CPUs first."""

    def __init__(self, threads: int, actor_class: type, *args: Any) -> None:
        import torch

        torch.set_num_threads(threads)
        self.actor = actor_class(*args)

    def call(self, method: str, *args: Any) -> Any:
        return getattr(self.actor, method)(*args)


def run_units(fn: Callable[..., Any], units: Iterable[Unit], *, cfg: RunParams, res: Resources,
              on_result: Callable[[Unit, Any], None], queued: int = 2) -> None:
    """Calls `fn(*unit.args)` for every unit and hands each result to `on_result` as it comes.

    Local engine: in order, in this process. Ray: as tasks with `res`, at most `queued` times
    the cluster's capacity in flight, retried when a worker or node dies; the first unit that
    raises stops the run (units in flight are cancelled; finished ones stay committed).

    `units` is read lazily, one unit per free slot: an iterator that has nothing now may stop
    and be asked again after the next result (jmt tune makes each trial step from the results
    before it; `queued=1` keeps it from asking ahead of the free workers).
    """
    if cfg.engine == "local":
        for unit in units:
            on_result(unit, fn(*unit.args))
        return
    ray = _ray()
    connect(cfg)
    task = ray.remote(_in_worker).options(num_cpus=res.cpus, num_gpus=res.gpus, max_retries=cfg.max_retries,
                                          retry_exceptions=False, name=getattr(fn, "__name__", "unit"))
    window = queued * _capacity(ray, res)
    threads = threads_for(res)
    _drain(ray, iter(units), lambda unit: task.remote(fn, threads, *unit.args), window, on_result)


def run_on_actors(actor_class: type, init_args: tuple, method: str, units: Iterable[Unit], *,
                  cfg: RunParams, res: ActorResources, on_result: Callable[[Unit, Any], None]) -> None:
    """Calls `actor.<method>(*unit.args)` for every unit on long-lived actors of `actor_class`
    (built once each from `init_args`: weights loaded once per actor); results as they come.

    Local engine: one instance in this process. Ray: `res.actors` actors (None: as many as the
    cluster fits), each with `res`; an actor whose process or node dies is restarted and its
    calls retried (run.max_retries).
    """
    units = list(units)
    if cfg.engine == "local":
        actor = actor_class(*init_args)
        for unit in units:
            on_result(unit, getattr(actor, method)(*unit.args))
        return
    if not units:
        return
    ray = _ray()
    connect(cfg)
    remote = ray.remote(_ActorHost).options(num_cpus=res.cpus, num_gpus=res.gpus,
                                            max_restarts=cfg.max_retries, max_task_retries=cfg.max_retries)
    n = min(res.actors or _capacity(ray, res), len(units))
    actors = [remote.remote(threads_for(res), actor_class, *init_args) for _ in range(n)]
    idle = list(actors)
    busy: dict[Any, Any] = {}  # ref -> actor

    def submit(unit: Unit):
        actor = idle.pop()
        ref = actor.call.options(name=f"{actor_class.__name__}.{method}").remote(method, *unit.args)
        busy[ref] = actor
        return ref

    def freed(ref) -> None:
        idle.append(busy.pop(ref))

    try:
        _drain(ray, iter(units), submit, n, on_result, freed)
    finally:
        for actor in actors:
            ray.kill(actor)


def _drain(ray, units: Iterator[Unit], submit: Callable[[Unit], Any], window: int,
           on_result: Callable[[Unit, Any], None], freed: Callable[[Any], None] = lambda ref: None) -> None:
    """Keeps up to `window` units in flight; hands results over in completion order."""
    pending: dict[Any, Unit] = {}

    def fill() -> None:
        while len(pending) < window:
            unit = next(units, None)
            if unit is None:
                return
            pending[submit(unit)] = unit

    fill()
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            ref = ready[0]
            unit = pending.pop(ref)
            freed(ref)
            try:
                result = ray.get(ref)
            except (ray.exceptions.RayError, ray.exceptions.RayTaskError) as exc:
                raise _unwrap(ray, unit, exc) from None
            on_result(unit, result)
            fill()
    finally:
        for ref in pending:  # an error stopped the run: cancel what is still in flight
            ray.cancel(ref, force=False)


def wait_for_nodes(n: int, timeout_s: float = 60.0) -> None:
    """Blocks until the connected cluster has `n` alive nodes (tests and benches)."""
    ray = _ray()
    t0 = time.time()
    while sum(1 for node in ray.nodes() if node["Alive"]) < n:
        if time.time() - t0 > timeout_s:
            raise EngineError(f"the cluster has fewer than {n} nodes after {timeout_s:.0f} s")
        time.sleep(0.2)
