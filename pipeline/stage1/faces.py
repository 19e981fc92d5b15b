"""`jmt faces`: each video -> the annotated person's aligned face crops, per frame.

Decodes each video with ffmpeg as a stream (never the whole video in memory), keeps every
frame's presentation time, detects faces with facenet-pytorch's MTCNN in batches, follows
the annotated person (left/right in two-person videos), aligns the 5 landmarks to a fixed
template with a similarity transform and stores the crops with box, landmarks, score and a
`found` mask in `<faces.out>/<entry>.h5` (layout: docs/cache.md). Alternatively reads
Aff-Wild2's own `cropped_aligned/<entry>/%05d.jpg` crops (gaps = not found).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from pathlib import Path
from typing import Annotated, Callable

import h5py
import numpy as np
import torch
import typer
from PIL import Image

from pipeline.config import DEFAULT_PARAMS, Params, load_params
from pipeline.corpus.entries import CorpusEntry, load_corpus
from pipeline.device import resolve_device
from pipeline.errors import InputError
from pipeline import cache
from pipeline.media import FrameTimes, MediaInfo, estimate_frames, frame_times, iter_frames, probe_video
from pipeline.stage1.align import similarity, template, warp_crops
from pipeline.stage1.detect import Detector, Face, PersonTrack, track
from pipeline.stage1.runner import StageResult, prefetch, run_stage

# Bump when a code change alters what this stage writes: cached entries made by another
# version are then rebuilt (a re-run otherwise reuses every entry whose inputs and params match).
ALGORITHM = 3  # 2: every frame timed by media.frame_times (no index / fps fallback); 3: labels moved to `jmt labels`
# Params that change what is written (batch size, prefetch, device do not).
CONTENT_KEYS = ("source", "crop_size", "jpeg_quality", "min_prob", "detect_every", "detect_max_side", "min_face_size")


def stage_config(params: Params) -> dict:
    """The content-relevant config of the faces stage (hashed into every entry)."""
    cfg = params.faces
    out = {"algorithm": ALGORITHM, **{k: getattr(cfg, k) for k in CONTENT_KEYS}}
    if cfg.source == "cropped_aligned":
        out["cropped_aligned"] = str(params.path(cfg.cropped_aligned))
    return out


def orientation_attrs(info: MediaInfo) -> dict:
    """How the frames were turned from the stored ones (media.Orientation), for the cache."""
    turn = info.orientation
    return {"rotation": turn.rotation, "mirrored": turn.mirrored, "orientation": turn.describe()}


FRAME_DATASETS = ["crops_jpeg", "found", "detected", "scores", "boxes", "landmarks"]


def _finish(f: h5py.File, entry: CorpusEntry, n: int, timing: FrameTimes) -> dict:
    """Writes the timestamps once the frame count is known; returns stats."""
    if len(timing.times) != n:  # frame_times and the decoder disagree: never guess
        raise InputError(f"{entry.source}: {n} frames decoded but {len(timing.times)} frame times "
                         "read by ffprobe")
    f.attrs["timestamps_source"] = timing.source
    f.create_dataset("timestamps", data=timing.times.astype(np.float64))
    f.attrs["n_frames"] = n
    found = f["found"][...]
    if n and not found.any():
        warnings.warn(f"{entry.name}: no face found in any of its {n} frames (all masked)")
    return {"frames": n, "found_rate": round(float(found.mean()) if n else 0.0, 4)}


def align_faces(frames: torch.Tensor, chosen: list[Face | None], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Each frame's chosen face cut out, its 5 landmarks mapped onto the template by a similarity
    transform: (crops uint8 (n, size, size, 3), found bool (n,)); black and not found where no
    face was chosen or its landmarks give no transform. `frames`: uint8 (n, H, W, 3)."""
    dst = template(size)
    crops = np.zeros((len(chosen), size, size, 3), np.uint8)
    found = np.zeros(len(chosen), bool)
    mats = {i: similarity(c.landmarks, dst) for i, c in enumerate(chosen) if c is not None}
    idx = np.array([i for i, m in mats.items() if m is not None], np.int64)
    found[idx] = True
    if len(idx):   # one batched resampling of the frames with a face
        crops[idx] = warp_crops(frames[idx], np.stack([mats[i] for i in idx]), size).numpy()
    return crops, found


class _JpegRows:
    """What cache.read_crops reads of a faces file (`crop_size`, `crops_jpeg`), in memory."""

    def __init__(self, jpeg: np.ndarray, size: int) -> None:
        self.attrs, self.jpeg = {"crop_size": size}, jpeg

    def __getitem__(self, name: str) -> np.ndarray:
        return {"crops_jpeg": self.jpeg}[name]


def jpeg_roundtrip(crops: np.ndarray, found: np.ndarray, quality: int) -> np.ndarray:
    """Crops as `jmt embed` reads them back from the faces cache: JPEG-encoded as `jmt faces`
    stores them (cache.encode_jpeg), decoded by cache.read_crops; black where not found.
    uint8 (n, S, S, 3) -> uint8 (n, S, S, 3) (writable)."""
    return cache.read_crops(_JpegRows(cache.encode_jpeg(crops, found, quality), crops.shape[1]))


def process_video(video: Path, entries: list[CorpusEntry], hashes: dict[str, str], params: Params,
                  detector: Detector, advance: Callable[[int], None]) -> dict[str, dict]:
    """Detects, tracks and aligns the faces of one video's entries and writes their files."""
    cfg, out = params.faces, params.path(params.faces.out)
    t0 = time.time()
    info = probe_video(video)
    timing = frame_times(video)
    size = cfg.crop_size
    attrs = {"video": entries[0].source, "fps": info.fps, "width": info.width, "height": info.height,
             **orientation_attrs(info),
             "detector": "facenet-pytorch MTCNN", "source": "mtcnn",
             "alignment": "similarity transform of 5 landmarks to the 112-px template, scaled",
             "crop_size": size}
    stats: dict[str, dict] = {}
    with contextlib.ExitStack() as stack:
        files = {e.name: stack.enter_context(cache.write_entry(
            out, e.name, stage="faces", config=stage_config(params), hash_=hashes[e.name],
            attrs={**attrs, "side": e.side})) for e in entries}
        writers = {name: cache.Appender(f, cache.LAYOUTS["faces"], FRAME_DATASETS)
                   for name, f in files.items()}
        tracks = [PersonTrack(e.side, info.width, cfg.min_prob) for e in entries]
        damaged: list[str] = []
        frames = iter_frames(video, info.width, info.height, batch=cfg.batch_size,
                             orientation=info.orientation, on_damaged=damaged.append)
        if cfg.prefetch:
            frames = prefetch(frames)
        for batch, faces in track(frames, detector, tracks, cfg.detect_every):
            frames_t = torch.as_tensor(batch)
            for p, e in enumerate(entries):
                chosen = [fr[p] for fr in faces]
                crops, found = align_faces(frames_t, chosen, size)
                boxes = np.full((len(batch), 4), np.nan, np.float32)
                marks = np.full((len(batch), 5, 2), np.nan, np.float32)
                scores = np.zeros(len(batch), np.float32)
                detected = np.array([c is not None and c.detected for c in chosen])
                for i in np.flatnonzero(found):
                    boxes[i], marks[i], scores[i] = chosen[i].box, chosen[i].landmarks, chosen[i].prob
                writers[e.name].append(crops_jpeg=cache.encode_jpeg(crops, found, cfg.jpeg_quality),
                                       found=found, detected=detected, scores=scores, boxes=boxes,
                                       landmarks=marks)
            advance(len(batch) * len(entries))
        for message in damaged:   # every decoded frame is kept; the cache and the report say so
            warnings.warn(message)
        for e in entries:
            w = writers[e.name]
            if damaged:
                files[e.name].attrs["damaged"] = damaged[0]
            stats[e.name] = _finish(files[e.name], e, w.n, timing)
            if damaged:
                stats[e.name]["damaged"] = damaged[0]
            stats[e.name]["seconds"] = round(time.time() - t0, 2)
    return stats


def process_cropped(video: Path, entries: list[CorpusEntry], hashes: dict[str, str], params: Params,
                    advance: Callable[[int], None]) -> dict[str, dict]:
    """Reads Aff-Wild2's `cropped_aligned/<entry>/%05d.jpg` crops instead of detecting."""
    cfg, out = params.faces, params.path(params.faces.out)
    crops_root = params.path(cfg.cropped_aligned)
    info = probe_video(video)
    timing = frame_times(video)
    n = len(timing.times)  # the decoded frames, as the audio stage counts them
    size, stats = cfg.crop_size, {}
    for e in entries:
        folder = crops_root / e.name
        unreadable = []
        with cache.write_entry(out, e.name, stage="faces", config=stage_config(params),
                               attrs={"video": e.source, "fps": info.fps, "width": info.width,
                                      "height": info.height, **orientation_attrs(info), "source": "cropped_aligned",
                                      "crops_folder": str(folder), "crop_size": size,
                                      "side": e.side},
                               hash_=hashes[e.name]) as f:
            w = cache.Appender(f, cache.LAYOUTS["faces"], FRAME_DATASETS)
            for start in range(0, n, 256):
                idx = range(start, min(n, start + 256))
                crops = np.zeros((len(idx), size, size, 3), np.uint8)
                found = np.zeros(len(idx), bool)
                for k, i in enumerate(idx):
                    path = folder / f"{i + 1:05d}.jpg"  # Aff-Wild2 numbers crops from 00001
                    if not path.is_file():
                        continue
                    try:
                        with Image.open(path) as img:
                            crops[k] = np.asarray(img.convert("RGB").resize((size, size), Image.BILINEAR))
                        found[k] = True
                    except (OSError, ValueError) as exc:
                        unreadable.append(f"{path.name}: {exc}")
                w.append(crops_jpeg=cache.encode_jpeg(crops, found, cfg.jpeg_quality), found=found,
                         detected=np.zeros(len(idx), bool), scores=found.astype(np.float32),
                         boxes=np.full((len(idx), 4), np.nan, np.float32),
                         landmarks=np.full((len(idx), 5, 2), np.nan, np.float32))
                advance(len(idx))
            f.attrs["unreadable_crops"] = len(unreadable)
            stats[e.name] = _finish(f, e, n, timing)
        if unreadable:
            warnings.warn(f"{e.name}: {len(unreadable)} unreadable crop(s) treated as not found, "
                          f"e.g. {folder / unreadable[0]}")
            stats[e.name]["unreadable_crops"] = unreadable
    return stats


_DETECTORS: dict[tuple, Detector] = {}  # one MTCNN per process (a Ray worker keeps its own)


def _detector(cfg) -> Detector:
    key = (cfg.device, cfg.detect_max_side, cfg.min_face_size)
    if key not in _DETECTORS:
        _DETECTORS[key] = Detector(device=resolve_device(cfg.device), max_side=cfg.detect_max_side,
                                   min_face_size=cfg.min_face_size)
    return _DETECTORS[key]


class FacesProcess:
    """One video's faces, in whichever process runs it (this one, or a Ray worker): pickles
    as its params; the detector is built on first use in that process."""

    def __init__(self, params: Params) -> None:
        self.params = params

    def __call__(self, video: Path, entries: list[CorpusEntry], hashes: dict[str, str],
                 advance: Callable[[int], None]) -> dict[str, dict]:
        if self.params.faces.source == "cropped_aligned":
            return process_cropped(video, entries, hashes, self.params, advance)
        return process_video(video, entries, hashes, self.params, _detector(self.params.faces), advance)


def run_faces(params: Params) -> StageResult:
    """Runs the faces stage over the corpus (engine: params.run); returns what it did (also in
    report.json)."""
    cfg = params.faces
    if cfg.source == "mtcnn" and params.run.engine == "local":
        _detector(cfg)  # a bad device fails before any video
    return run_stage("faces", params.path(cfg.out), load_corpus(params), stage_config(params), cfg.on_error,
                     FacesProcess(params), estimate_frames, run=params.run, resources=params.run.faces)


def command(params: Annotated[Path, typer.Option(help="Params file.")] = DEFAULT_PARAMS) -> None:
    """Detect, track and align faces in every video (stage 1)."""
    run_faces(load_params(params))
