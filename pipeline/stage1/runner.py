"""What every stage-1 command shares: loop over videos, skip what is cached, record problems.

A stage processes the corpus video by video (a two-person video holds two entries). Entries
whose file exists with the same config hash are skipped (resume); a problem with one video
(unreadable, no video stream, bad annotation...) is recorded in the stage's report.json and
the stage goes on (`on_error: skip`), or stops (`on_error: fail`). Nothing already written
is ever removed by a failure.
"""

from __future__ import annotations

import functools
import threading
import time
import queue
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import cache
from pipeline.console import console, progress
from pipeline.config import ActorResources, Resources, RunParams
from pipeline.corpus.entries import Corpus, CorpusEntry, inputs_fingerprint
from pipeline.engine import (Unit, check_storage, run_on_actors, run_units, shared_storage, threads_for,
                             torch_threads)
from pipeline.errors import InputError, JmtError
from pipeline.media import Orientation, probe


@dataclass
class StageResult:
    """What a stage did, entry by entry; written as the stage's report.json."""

    stage: str
    out: Path
    done: dict[str, dict] = field(default_factory=dict)      # entry -> stats
    cached: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)        # {"entry", "file", "error"}
    warnings: list[dict] = field(default_factory=list)       # {"entry", "warning"}
    seconds: float = 0.0

    def as_report(self) -> dict[str, Any]:
        return {"stage": self.stage, "done": self.done, "cached": self.cached,
                "skipped": self.skipped, "warnings": self.warnings,
                "seconds": round(self.seconds, 2)}


def entry_hash(stage_config: dict, entry: CorpusEntry, *, with_labels: bool = False,
               more: dict | None = None) -> str:
    """Config hash of one entry: the stage's content-relevant params and the entry's inputs (its
    video; with `with_labels`, its annotation files and splits too: only the labels stage's;
    `more`: the entry's other inputs, e.g. the files a files stream reads, by their hashes).
    A video shown turned or mirrored (media.Orientation) also hashes its orientation: entries
    of such videos cached before jmt applied it (squeezed frames) are rebuilt, and an upright
    video's hash is what it always was (as is an entry's with no other inputs)."""
    what = {"stage": stage_config, "entry": inputs_fingerprint(entry, labels=with_labels)}
    if more:
        what["inputs"] = more
    turn = _orientation(entry.video)
    if turn is not None and not turn.identity:
        what["orientation"] = [turn.transpose, turn.hflip, turn.vflip]
    return cache.config_hash(what)


def _orientation(video: Path | None) -> Orientation | None:
    """The video's orientation (None when it cannot be probed: the stage reports that)."""
    if video is None or not Path(video).is_file():
        return None
    st = Path(video).stat()
    return _probed_orientation(str(Path(video).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _probed_orientation(path: str, size: int, mtime_ns: int) -> Orientation | None:
    try:
        return probe(Path(path)).orientation
    except JmtError:
        return None


Process = Callable[[Path, list[CorpusEntry], dict[str, str], Callable[[int], None]], dict[str, dict]]


def attempt(process: Process, out: Path, marker: str | None, video: Path, need: list[CorpusEntry],
            hashes: dict[str, str], advance: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Runs `process` on one video where it runs (this process or a Ray worker).

    On Ray, entries made current meanwhile (a retried unit whose first try committed some)
    are not redone. An InputError is returned, not raised, so a bad video is never retried; warnings
    are returned for the report. With `marker` (Ray), the cache folder is checked first.
    """
    todo = need  # locally the driver has just checked which entries are current
    if marker is not None:  # on Ray: a retried unit may find entries its first try committed
        check_storage(out, marker)
        todo = [e for e in need if not cache.is_current(out, e.name, hashes[e.name])]
    outcome: dict[str, Any] = {"done": {}, "cached": [e.name for e in need if e not in todo],
                               "warnings": [], "error": None}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if todo:
                outcome["done"] = process(video, todo, hashes, advance or (lambda n: None))
        except InputError as exc:
            outcome["error"] = str(exc)
    outcome["warnings"] = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    return outcome


def video_task(process: Process, out: Path, marker: str, video: Path, need: list[CorpusEntry],
               hashes: dict[str, str]) -> dict[str, Any]:
    """One video as a Ray task (faces, audio)."""
    return attempt(process, out, marker, video, need, hashes)


class VideoActor:
    """A Ray actor that builds its process once (e.g. embed's backbones: weights loaded once)
    with `factory(*args)` and then takes videos one call at a time."""

    def __init__(self, factory: Callable[..., Process], *args: Any) -> None:
        self.process = factory(*args)

    def run(self, out: Path, marker: str, video: Path, need: list[CorpusEntry], hashes: dict[str, str]) -> dict:
        return attempt(self.process, out, marker, video, need, hashes)


def run_stage(stage: str, out: Path, corpus: Corpus, stage_config: dict, on_error: str,
              process: Process | tuple[Callable[..., Process], tuple], frames_of: Callable[[Path], int],
              notes: list[str] = (), run: RunParams | None = None,
              resources: Resources | None = None, with_labels: bool = False,
              more_inputs: Callable[[CorpusEntry], dict] | None = None) -> StageResult:
    """Runs `process(video, entries_to_do, hashes, advance)` for every video needing work.

    `process` writes each entry's file (cache.write_entry), calls `advance(frames)` as it goes
    (frames summed over entries), and returns per-entry stats; it raises InputError for a bad
    input. `frames_of(video)` estimates a video's frames for the progress bar. `notes` are
    stage-wide warnings (e.g. random weights) to keep in the report. `with_labels`: an entry's
    annotation files and splits are among its inputs (the labels stage).

    `run` picks the engine (pipeline.engine): locally every video runs here, in order; on Ray
    each video is a task with `resources` (`process` must then pickle), or, when `process` is
    a (factory, args) pair, a call on long-lived actors that build it once each. Either way the
    driver shows the progress bar and writes the same report.json, and torch uses the
    resources' whole CPUs as threads: the last bits of MTCNN's and the backbones' floats
    depend on the thread count, and the cache must not depend on the engine.
    `more_inputs(entry)`: the entry's inputs besides its video, hashed into its `entry_hash`.
    """
    t0 = time.time()
    run = run or RunParams()
    result = StageResult(stage=stage, out=out)
    result.warnings += [{"entry": "*", "warning": note} for note in notes]
    removed = cache.remove_partial(out)
    if removed:
        console.print(f"{stage}: removed {removed} partial file(s) left by an interrupted run")
    for problem in corpus.problems:
        _problem(result, problem, on_error)
    todo: list[tuple[Path, list[CorpusEntry], dict[str, str]]] = []
    for video, entries in corpus.videos().items():
        hashes = {e.name: entry_hash(stage_config, e, with_labels=with_labels,
                                     more=more_inputs(e) if more_inputs else None) for e in entries}
        need = [e for e in entries if not cache.is_current(out, e.name, hashes[e.name])]
        result.cached += [e.name for e in entries if e not in need]
        if need:
            todo.append((video, need, hashes))
    weights: dict[Path, int] = {}
    for video, need, _ in todo:
        try:
            weights[video] = frames_of(video) * len(need)  # progress counts frames of every entry
        except JmtError:
            weights[video] = 0  # reported when the video is processed
    local = run.engine == "local"
    with progress() as bar:
        task = bar.add_task(stage, total=max(sum(weights.values()), 1))

        videos = {str(v): (v, need) for v, need, _ in todo}

        def record(unit: Unit, outcome: dict) -> None:
            video, need = videos[unit.name]
            if not local:
                bar.advance(task, weights[video])
                bar.update(task, description=f"{stage} {video.stem}")
            _record(result, video, need, outcome, on_error)

        if local:
            build = process if callable(process) else process[0](*process[1])
            units = (Unit(str(v), (build, out, None, v, need, hashes,
                                   _advancer(bar, task, stage, v)), weights[v]) for v, need, hashes in todo)
            with torch_threads(threads_for(resources or Resources())):  # as a Ray unit: the same bytes
                run_units(attempt, units, cfg=run, res=resources or Resources(), on_result=record)
        else:
            out.mkdir(parents=True, exist_ok=True)
            with shared_storage(out) as marker:
                units = (Unit(str(v), (out, marker, v, need, hashes), weights[v]) for v, need, hashes in todo)
                if callable(process):
                    run_units(video_task, (Unit(u.name, (process, *u.args), u.weight) for u in units),
                              cfg=run, res=resources or Resources(), on_result=record)
                else:
                    run_on_actors(VideoActor, (process[0], *process[1]), "run", units, cfg=run,
                                  res=resources or ActorResources(), on_result=record)
            cache.remove_partial(out)  # left by workers killed mid-video (their units were redone)
    result.cached.sort()
    result.skipped.sort(key=lambda p: p["entry"])
    result.seconds = time.time() - t0
    cache.write_report(out, result.as_report())
    _summary(result)
    return result


def _advancer(bar, task, stage: str, video: Path) -> Callable[[int], None]:
    bar.update(task, description=f"{stage} {video.stem}")  # noqa: the local engine's current video
    return lambda n: bar.advance(task, n)


def _record(result: StageResult, video: Path, need: list[CorpusEntry], outcome: dict, on_error: str) -> None:
    """Adds one video's outcome to the stage result (and prints its warnings)."""
    result.done.update(outcome["done"])
    result.cached += outcome["cached"]
    for message in outcome["warnings"]:
        result.warnings.append({"entry": ",".join(e.name for e in need), "warning": message})
        console.print(f"[yellow]warning[/] {video.name}: {message}", highlight=False)
    if outcome["error"] is not None:
        for e in need:
            _problem(result, {"entry": e.name, "file": str(video), "error": outcome["error"]}, on_error)


def _problem(result: StageResult, problem: dict, on_error: str) -> None:
    if on_error == "fail":
        raise InputError(f"{problem['entry']}: {problem['error']}")
    result.skipped.append(problem)
    console.print(f"[yellow]skipped[/] {problem['entry']}: {problem['error']}", highlight=False,
                  soft_wrap=True)


def _summary(result: StageResult) -> None:
    frames = sum(int(s.get("frames", 0)) for s in result.done.values())
    rate = f", {frames / result.seconds:.1f} frames/s" if frames and result.seconds else ""
    console.print(
        f"[green]{result.stage}[/] -> {result.out}: {len(result.done)} written, "
        f"{len(result.cached)} already cached, {len(result.skipped)} skipped "
        f"({result.seconds:.1f} s{rate})", highlight=False, soft_wrap=True)
    if result.skipped:
        console.print(f"  see {result.out / cache.REPORT} for the skipped entries")


def prefetch(items: Iterator, depth: int = 2) -> Iterator:
    """Runs an iterator in a background thread (e.g. ffmpeg decoding while torch computes).

    If the consumer stops early (an error), the producer is told to stop and the source
    iterator is closed, so no decoder process is left behind.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    done, cancel = object(), threading.Event()
    error: list[BaseException] = []

    def worker() -> None:
        try:
            for item in items:
                while not cancel.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if cancel.is_set():
                    break
        except BaseException as exc:  # re-raised in the consumer
            error.append(exc)
        finally:
            if hasattr(items, "close"):
                items.close()
            q.put(done)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not done:
            yield item
    finally:
        cancel.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get(timeout=0.1)
            except queue.Empty:
                pass
        thread.join()
    if error:
        raise error[0]
