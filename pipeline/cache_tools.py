"""`jmt cache info PATH` and `jmt cache verify PATH`: look into and check a stage's cache.

PATH is a stage folder (e.g. data/cache/embeddings) or one entry file (`<entry>.h5`).
`verify` checks every file against the layouts in pipeline/cache.py: schema, datasets (each
stream's features and mask in an embeddings file, each task's labels in a labels file),
dtypes, per-frame lengths, NaNs, masks, label values (the task's own rule), timestamps, the
content hash recorded when the file was written (a file edited afterwards no longer matches
it), and completeness (no partial files; with --params, every corpus entry present unless its
stage report skipped it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import h5py
import numpy as np
import typer
from rich.table import Table

from pipeline import cache
from pipeline.config import load_params
from pipeline.console import console
from pipeline.errors import InputError

def _files(path: Path) -> list[Path]:
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.glob("*.h5") if not p.name.startswith(".tmp-"))
    raise InputError(f"{path}: no such cache file or folder")


def info(path: Path) -> dict:
    """Summary of a cache: entries, frames, dims, provenance, sizes."""
    files = _files(path)
    rows, provenance, total_bytes, frames = [], {}, 0, 0
    for p in files:
        with cache.open_entry(p) as f:
            a = cache.attrs_of(f)
            n = int(a.get("n_frames", 0))
            dims = {k: tuple(f[k].shape[1:]) for k in ("logmel",) if k in f}
            dims.update({s["name"]: (s["dim"],) for s in a.get("streams", []) if isinstance(s, dict)})
            dims.update({t["task"]: tuple(f[cache.label_key(t["task"])].shape[1:]) for t in a.get("tasks", [])
                         if cache.label_key(t["task"]) in f})
            split = ", ".join(f"{t['task']} {t['split']}" for t in a.get("tasks", [])) or None
            rows.append({"entry": a.get("entry", p.stem), "split": split, "frames": n,
                         "bytes": p.stat().st_size, "dims": dims, "hashed": cache.CONTENT_HASH in a,
                         "found_rate": round(float(f["found"][...].mean()), 3) if "found" in f and n else None})
            if "streams" in a:  # per stream: its backbone, what it reads, its weights
                a["stream backbones"] = [{k: s.get(k) for k in ("name", "backbone", "input", "dim", "weights",
                                                                 "weights_sha256")} for s in a["streams"]]
            for key in ("schema", "stage", "config", "detector", "stream backbones", "sample_rate", "crop_size",
                        "versions"):
                if key in a:
                    provenance.setdefault(key, set()).add(json.dumps(a[key], sort_keys=True))
            total_bytes += p.stat().st_size
            frames += n
    report = None
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    if (folder / cache.REPORT).is_file():
        report = json.loads((folder / cache.REPORT).read_text())
    return {
        "path": str(path), "entries": len(rows), "frames": frames, "bytes": total_bytes,
        "bytes_per_1000_frames": round(total_bytes / frames * 1000) if frames else None,
        "hashed": sum(r["hashed"] for r in rows),  # entries with a recorded content hash
        "provenance": {k: [json.loads(v) for v in sorted(vals)] for k, vals in provenance.items()},
        "skipped": report.get("skipped", []) if report else [],
        "rows": rows,
    }


def _check_file(p: Path) -> list[str]:
    faults: list[str] = []
    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        return [f"{p}: cannot open ({exc})"]
    with f:
        a = cache.attrs_of(f)
        stage = a.get("stage")
        if stage not in cache.SCHEMAS or a.get("schema") != cache.schema(stage):
            return [f"{p}: unknown schema {a.get('schema')!r} (this jmt writes {cache.schema(stage) if stage in cache.SCHEMAS else 'no such stage'}; "
                    f"re-run `jmt {stage}`)"]
        if stage == "transcribe":   # per word, not per frame
            return _check_transcript(p, f, a)
        for key in ("entry", "config", "config_hash", "versions", "n_frames", "video", "fps"):
            if key not in a:
                faults.append(f"{p}: attribute {key!r} missing")
        n = int(a.get("n_frames", -1))
        for name, (dtype, shape) in cache.LAYOUTS[stage].items():
            if name not in f:
                faults.append(f"{p}: dataset {name!r} missing")
                continue
            ds = f[name]
            if name != "logmel" and ds.shape[0] != n:
                faults.append(f"{p}: {name} has {ds.shape[0]} rows, n_frames is {n}")
            if shape is not None and tuple(ds.shape[1:]) != tuple(shape):
                faults.append(f"{p}: {name} has shape {ds.shape}, expected (n, {', '.join(map(str, shape))})")
            if dtype is not cache.JPEG and ds.dtype != np.dtype(dtype):
                faults.append(f"{p}: {name} has dtype {ds.dtype}, expected {np.dtype(dtype)}")
        faults += _per_stream_and_task(p, f, a, stage, n)
        for name, (dtype, _) in cache.TRACKS.get(stage, {}).items():  # per-track data: samples, not frames
            if name not in f:
                faults.append(f"{p}: dataset {name!r} missing")
            elif f[name].dtype != np.dtype(dtype):
                faults.append(f"{p}: {name} has dtype {f[name].dtype}, expected {np.dtype(dtype)}")
        if faults:
            return faults
        ts = f["timestamps"][...] if "timestamps" in f else np.arange(n, dtype=np.float64)
        if n > 1 and not (np.diff(ts) > 0).all():
            faults.append(f"{p}: timestamps are not increasing (frame {int(np.argmin(np.diff(ts) > 0)) + 1})")
        faults += _check_stage(p, f, stage, n)
        recorded = cache.recorded_hash(f)
        if recorded is not None and cache.content_hash(f) != recorded:
            faults.append(f"{p}: content differs from its recorded {cache.CONTENT_HASH} (edited after it was "
                          "written?); re-run the stage for this entry")
    return faults


def _check_transcript(p: Path, f: h5py.File, a: dict) -> list[str]:
    """A transcripts-cache file (docs/cache.md, *transcripts*): its attributes, its four per-word
    datasets of one length, times sorted and ordered, confidences in [0, 1], its content hash."""
    faults = [f"{p}: attribute {key!r} missing" for key in ("entry", "config", "config_hash", "versions",
                                                            "recogniser", "n_words") if key not in a]
    words = ("words", "start", "end", "confidence")
    faults += [f"{p}: dataset {name!r} missing" for name in words if name not in f]
    if faults:
        return faults
    lengths = {name: f[name].shape for name in words}
    if len(set(lengths.values())) != 1 or len(lengths["words"]) != 1 or lengths["words"][0] != int(a["n_words"]):
        return [f"{p}: the per-word datasets have shapes {lengths}, n_words is {a['n_words']}"]
    start, end, conf = f["start"][...], f["end"][...], f["confidence"][...]
    if not (np.isfinite(start).all() and np.isfinite(end).all()):
        faults.append(f"{p}: NaN/inf word time")
    elif (np.diff(start) < 0).any():
        faults.append(f"{p}: words not sorted by start (word {_first(np.diff(start) < 0) + 1})")
    elif (end < start).any():
        faults.append(f"{p}: a word ends before it starts (word {_first(end < start)})")
    if not ((conf >= 0) & (conf <= 1)).all():
        faults.append(f"{p}: confidence outside [0, 1] (word {_first(~((conf >= 0) & (conf <= 1)))})")
    recorded = cache.recorded_hash(f)
    if recorded is not None and cache.content_hash(f) != recorded:
        faults.append(f"{p}: content differs from its recorded {cache.CONTENT_HASH} (edited after it was "
                      "written?); re-run the stage for this entry")
    return faults


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _per_stream_and_task(p: Path, f: h5py.File, a: dict, stage: str, n: int) -> list[str]:
    """The datasets an embeddings file has per stream and a labels file per task."""
    faults = []
    if stage == "embed":
        streams = a.get("streams")
        if not isinstance(streams, list) or not streams:
            return [f"{p}: attribute 'streams' missing or empty"]
        for s in streams:
            for what, (dtype, shape) in cache.STREAM.items():
                key = cache.stream_key(s["name"], what)
                if key not in f:
                    faults.append(f"{p}: dataset {key!r} missing")
                    continue
                want = (n, s["dim"]) if shape is None else (n, *shape)
                if f[key].shape != want:
                    faults.append(f"{p}: {key} has shape {f[key].shape}, expected {want}")
                if f[key].dtype != np.dtype(dtype):
                    faults.append(f"{p}: {key} has dtype {f[key].dtype}, expected {np.dtype(dtype)}")
    if stage == "labels":
        from pipeline.tasks import TASKS

        tasks = a.get("tasks")
        if not isinstance(tasks, list):
            return [f"{p}: attribute 'tasks' missing"]
        for t in tasks:
            key = cache.label_key(t["task"])
            if t["task"] not in TASKS:
                faults.append(f"{p}: unknown task {t['task']!r}")
            elif key not in f:
                faults.append(f"{p}: dataset {key!r} missing")
            elif f[key].shape != (n, TASKS.get(t["task"]).values) or f[key].dtype != np.dtype(cache.LABEL[0]):
                faults.append(f"{p}: {key} has shape {f[key].shape} {f[key].dtype}, expected "
                              f"({n}, {TASKS.get(t['task']).values}) {np.dtype(cache.LABEL[0])}")
    return faults


def _check_stage(p: Path, f: h5py.File, stage: str, n: int) -> list[str]:
    faults = []
    if stage == "labels":
        from pipeline.tasks import TASKS

        for t in cache.attrs_of(f)["tasks"]:
            bad = ~TASKS.get(t["task"])().well_formed(f[cache.label_key(t["task"])][...])
            if bad.any():
                faults.append(f"{p}: {t['task']} label out of range at frame {_first(bad)}")
    if stage == "faces":
        found = f["found"][...]
        empty = np.array([len(c) == 0 for c in f["crops_jpeg"][...]], bool)
        if (found == empty).any():
            faults.append(f"{p}: crop presence disagrees with `found` at frame {_first(found == empty)}")
        boxes = f["boxes"][...]
        if np.isnan(boxes[found]).any():
            faults.append(f"{p}: NaN box on a frame marked found")
    if stage == "audio":
        end = f["frame_end"][...]
        if len(end) and (end.min() < 0 or end.max() > f["logmel"].shape[0]):
            faults.append(f"{p}: frame_end outside the spectrogram (0..{f['logmel'].shape[0]})")
        if not np.isfinite(f["logmel"][...]).all():
            faults.append(f"{p}: NaN/inf in logmel")
        outside = f["voice"][...] & ~f["audio_valid"][...]
        if outside.any():
            faults.append(f"{p}: voice outside the audio track at frame {_first(outside)}")
        prob = f["vad_prob"][...]
        bad = ~((prob >= 0) & (prob <= 1))
        if bad.any():
            faults.append(f"{p}: vad_prob outside [0, 1] at frame {_first(bad)}")
    if stage == "embed":
        for s in cache.attrs_of(f)["streams"]:
            arr = f[cache.stream_key(s["name"], "features")][...]
            finite = np.isfinite(arr).all(1)
            if not finite.all():
                faults.append(f"{p}: NaN/inf in the {s['name']} stream at frame {_first(~finite)}")
    return faults


def _check_timing(p: Path, video: Path) -> list[str]:
    """The cached frame count and times against the video's own (media.frame_times), and a faces
    file's frame orientation against the video's (media.Orientation)."""
    from pipeline.media import frame_times, probe

    with cache.open_entry(p) as f:
        n, cached = int(f.attrs["n_frames"]), f["timestamps"][...]
        attrs = dict(f.attrs)
    try:
        times = frame_times(video).times
        turn = probe(video).orientation
    except InputError as exc:
        return [f"{p}: {exc}"]
    if "rotation" in attrs:
        if (int(attrs["rotation"]), bool(attrs["mirrored"])) != (turn.rotation, turn.mirrored):
            return [f"{p}: frames cached {attrs.get('orientation', 'turned')} but {video} is shown "
                    f"{turn.describe()}; re-run jmt faces"]
    elif "width" in attrs and not turn.identity:   # a faces file from before jmt applied rotations
        return [f"{p}: frames cached as stored, but {video} is shown {turn.describe()} (squeezed "
                "faces); delete the file and re-run jmt faces"]
    if len(times) != n:
        return [f"{p}: {n} frames cached but {video} decodes to {len(times)}"]
    off = np.abs(cached - times) > 1e-3
    if off.any():
        i = _first(off)
        return [f"{p}: frame {i} cached at {cached[i]:.3f} s but {video} shows it at {times[i]:.3f} s"]
    return []


def verify(path: Path, params_path: Path | None = None, media: bool = False) -> list[str]:
    """All faults found in a cache folder or file (empty list: the cache is sound).

    With `params_path`, a folder must hold every corpus entry; with `media` too, every
    entry's frame count and times are checked against its video (decodes every video).
    """
    path = Path(path)
    faults = []
    folder = path if path.is_dir() else path.parent
    partial = list(folder.glob(".tmp-*.h5"))
    if partial:
        faults.append(f"{folder}: {len(partial)} partial file(s) from an interrupted run, e.g. {partial[0].name}")
    files = _files(path)
    if not files:
        faults.append(f"{path}: no cache files")
    sound = set()
    for p in files:
        found = _check_file(p)
        faults += found
        if not found:
            sound.add(p.stem)
    if params_path is not None and path.is_dir():
        from pipeline.corpus.entries import load_corpus

        corpus = load_corpus(load_params(params_path))
        report = folder / cache.REPORT
        skipped = {s["entry"] for s in json.loads(report.read_text()).get("skipped", [])} if report.is_file() else set()
        have = {p.stem for p in files}
        for e in corpus.entries:
            if e.name not in have and e.name not in skipped:
                faults.append(f"{folder}: entry {e.name!r} of the corpus is missing")
            elif media and e.name in sound:
                faults += _check_timing(cache.entry_path(folder, e.name), e.video)
    elif media:
        raise InputError("--media needs --params (to find each entry's video) and a cache folder")
    return faults


def info_command(path: Annotated[Path, typer.Argument(help="Stage folder or entry file.")],
                 as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Show entries, frames, dims, provenance and sizes of a cache."""
    data = info(path)
    if as_json:
        typer.echo(json.dumps(data, indent=1))
        return
    table = Table(title=f"{data['path']}: {data['entries']} entries, {data['frames']} frames, "
                        f"{data['bytes'] / 1e6:.1f} MB ({data['bytes_per_1000_frames'] or 0:,} B / 1000 frames)")
    for col in ("entry", "split", "frames", "dims", "found", "KB"):
        table.add_column(col)
    for r in data["rows"]:
        table.add_row(r["entry"], str(r["split"]), str(r["frames"]),
                      " ".join(f"{k}{list(v)}" for k, v in r["dims"].items()),
                      "" if r["found_rate"] is None else f"{r['found_rate']:.3f}", f"{r['bytes'] / 1e3:.0f}")
    console.print(table)
    for key, values in data["provenance"].items():
        shown = values[0] if len(values) == 1 else f"{len(values)} DIFFERENT values: {values}"
        console.print(f"[bold]{key}[/]: {shown}", highlight=False, soft_wrap=True)
    if data["hashed"] < data["entries"]:
        console.print(f"[yellow]{data['entries'] - data['hashed']} entries have no recorded content hash[/] "
                      "(written before hashes were recorded): fingerprints hash their data instead",
                      highlight=False)
    if data["skipped"]:
        console.print(f"[yellow]{len(data['skipped'])} entries skipped by the stage (report.json)[/]")


def verify_command(path: Annotated[Path, typer.Argument(help="Stage folder or entry file.")],
                   params: Annotated[Path | None, typer.Option(help="Also check completeness against this "
                                                                    "params file's corpus.")] = None,
                   media: Annotated[bool, typer.Option("--media", help="With --params: also re-read every "
                                                        "video's frame times and compare (decodes them).")] = False,
                   ) -> None:
    """Check schema, shapes, NaNs, masks and completeness; exit 1 on any fault."""
    faults = verify(path, params, media)
    for fault in faults:
        console.print(f"[red]fault[/] {fault}", highlight=False, soft_wrap=True)
    if faults:
        raise typer.Exit(1)
    console.print(f"[green]ok[/] {path}: {len(_files(path))} file(s) verified")
