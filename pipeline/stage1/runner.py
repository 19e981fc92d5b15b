"""What every stage-1 command shares: loop over videos, skip what is cached, record problems.

A stage processes the corpus video by video (a two-person video holds two entries). Entries
whose file exists with the same config hash are skipped (resume); a problem with one video
(unreadable, no video stream, bad annotation...) is recorded in the stage's report.json and
the stage goes on (`on_error: skip`), or stops (`on_error: fail`). Nothing already written
is ever removed by a failure.
"""

from __future__ import annotations

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
from pipeline.corpus.entries import Corpus, Entry, fingerprint
from pipeline.errors import InputError, JmtError


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


def entry_hash(stage_config: dict, entry: Entry) -> str:
    """Config hash of one entry: the stage's content-relevant params and the entry's inputs."""
    return cache.config_hash({"stage": stage_config, "entry": fingerprint(entry)})


def run_stage(stage: str, out: Path, corpus: Corpus, stage_config: dict, on_error: str,
              process: Callable[[Path, list[Entry], dict[str, str], Callable[[int], None]], dict[str, dict]],
              frames_of: Callable[[Path], int], notes: list[str] = ()) -> StageResult:
    """Runs `process(video, entries_to_do, hashes, advance)` for every video needing work.

    `process` writes each entry's file (cache.write_entry), calls `advance(frames)` as it goes
    (frames summed over entries), and returns per-entry stats; it raises InputError for a bad
    input. `frames_of(video)` estimates a video's frames for the progress bar. `notes` are
    stage-wide warnings (e.g. random weights) to keep in the report.
    """
    t0 = time.time()
    result = StageResult(stage=stage, out=out)
    result.warnings += [{"entry": "*", "warning": note} for note in notes]
    removed = cache.remove_partial(out)
    if removed:
        console.print(f"{stage}: removed {removed} partial file(s) left by an interrupted run")
    for problem in corpus.problems:
        _problem(result, problem, on_error)
    todo: list[tuple[Path, list[Entry], dict[str, str]]] = []
    for video, entries in corpus.videos().items():
        hashes = {e.name: entry_hash(stage_config, e) for e in entries}
        need = [e for e in entries if not cache.is_current(out, e.name, hashes[e.name])]
        result.cached += [e.name for e in entries if e not in need]
        if need:
            todo.append((video, need, hashes))
    total = 0
    for video, need, _ in todo:
        try:
            total += frames_of(video) * len(need)  # progress counts frames of every entry
        except JmtError:
            pass  # reported when the video is processed
    with progress() as bar:
        task = bar.add_task(stage, total=max(total, 1))
        for video, need, hashes in todo:
            bar.update(task, description=f"{stage} {video.stem}")
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    result.done.update(process(video, need, hashes, lambda n: bar.advance(task, n)))
                for w in (w for w in caught if issubclass(w.category, UserWarning)):
                    result.warnings.append({"entry": ",".join(e.name for e in need),
                                            "warning": str(w.message)})
                    console.print(f"[yellow]warning[/] {video.name}: {w.message}", highlight=False)
            except InputError as exc:
                for e in need:
                    _problem(result, {"entry": e.name, "file": str(video), "error": str(exc)}, on_error)
    result.seconds = time.time() - t0
    cache.write_report(out, result.as_report())
    _summary(result)
    return result


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
