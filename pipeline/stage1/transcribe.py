"""`jmt transcribe`: every entry's words with their times -> `<transcribe.out>/<entry>.h5`.

The words come from a transcript file (`source: files`: WebVTT, SRT or Whisper JSON beside the
video, or at `path`), or from a recogniser run on the audio cache's track (`source:
pocketsphinx`: offline, the English model inside its wheel; `source: whisper`: faster-whisper
with word timestamps, a local model folder or, online, a model name). The transcript is a cache
of its own, so changing the text features (`jmt embed`'s text streams) never reruns recognition.
A two-person video has one track and one transcript: both its entries hear every word said in
it, as both hear its audio. Layout: docs/cache.md, *transcripts*; the rules for reading files and
for recognising: `pipeline.stage1.transcripts`.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Annotated, Callable

import h5py
import numpy as np
import typer

from pipeline import cache
from pipeline.config import DEFAULT_PARAMS, Params, load_params
from pipeline.corpus.entries import CorpusEntry, load_corpus
from pipeline.errors import InputError
from pipeline.stage1 import audio as audio_stage
from pipeline.stage1 import feature_files, transcripts
from pipeline.stage1.runner import StageResult, run_stage

ALGORITHM = 1  # bump when a code change alters what this stage writes (see faces.ALGORITHM)
STAGE = "transcribe"


def stage_config(params: Params) -> dict:
    """What the transcripts depend on besides the entry's inputs: the source and its settings
    (a recogniser's version, and the audio stage's config whose track it hears)."""
    cfg = params.transcribe
    out = {"algorithm": ALGORITHM, "source": cfg.source}
    if cfg.source == "files":
        out["path"] = cfg.path
    else:
        out["recogniser"] = transcripts.recogniser_version(cfg.source)
        out["audio_stage"] = audio_stage.stage_config(params)
        if cfg.source == "whisper":
            out.update(model=cfg.model, compute_type=cfg.compute_type)
    return out


def transcript_file(params: Params, entry: CorpusEntry) -> Path | None:
    """The entry's transcript file (`source: files`): `path` filled in, or the one beside its video;
    None when there is none beside it."""
    pattern = params.transcribe.path
    if pattern is None:
        return transcripts.transcript_beside(Path(entry.video))
    feature_files.check_pattern(pattern, "transcribe.path")
    return params.path(feature_files.fill(pattern, entry))


def more_inputs(params: Params) -> Callable[[CorpusEntry], dict]:
    """The entry's transcript file by its sha256 (`source: files`), hashed into the entry's cache
    hash: an edited transcript is read again. A recogniser hears the video (already hashed)."""
    if params.transcribe.source != "files":
        return lambda entry: {}

    def of(entry: CorpusEntry) -> dict:
        path = transcript_file(params, entry)
        return {"transcript": _sha256(path) if path is not None and path.is_file() else "missing"}
    return of


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _recognise(params: Params, entry: CorpusEntry) -> transcripts.Words:
    """The recogniser on the track the audio stage cached for the entry."""
    path = cache.entry_path(params.path(params.audio.out), entry.name)
    if not path.is_file():
        raise InputError(f"{path}: missing; run `jmt audio` first (the recogniser hears its track)")
    with cache.open_entry(path) as af:
        cache.check_schema(af, "audio")
        wave, sr = audio_stage.read_waveform(af), int(af.attrs["sample_rate"])
    cfg = params.transcribe
    if cfg.source == "pocketsphinx":
        return transcripts.recognise_pocketsphinx(wave, sr)
    return transcripts.recognise_whisper(wave, sr, cfg.model or "", device=cfg.device, compute_type=cfg.compute_type)


def write_words(f: h5py.File, words: transcripts.Words) -> None:
    """The transcript's datasets (docs/cache.md, *transcripts*)."""
    f.create_dataset("words", data=np.array(words.text, dtype=object), dtype=h5py.string_dtype("utf-8"))
    f.create_dataset("start", data=np.asarray(words.start, np.float64))
    f.create_dataset("end", data=np.asarray(words.end, np.float64))
    f.create_dataset("confidence", data=np.asarray(words.confidence, np.float32))


def read_words(f: h5py.File) -> transcripts.Words:
    """An entry's transcript from its transcripts-cache file."""
    cache.check_schema(f, STAGE)
    text = tuple(w.decode() if isinstance(w, bytes) else str(w) for w in f["words"][...])
    return transcripts.Words(text, f["start"][...], f["end"][...], f["confidence"][...])


def process_entries(video: Path, entries: list[CorpusEntry], hashes: dict[str, str], params: Params,
                    advance: Callable[[int], None]) -> dict[str, dict]:
    """Transcribes one video (once) and writes its transcript for each of its entries."""
    cfg, out = params.transcribe, params.path(params.transcribe.out)
    t0 = time.time()
    stats: dict[str, dict] = {}
    heard: dict[Path | None, tuple[transcripts.Words, dict]] = {}
    for e in entries:
        if cfg.source == "files":
            path = transcript_file(params, e)
            if path is None or not path.is_file():
                where = path if path is not None else f"{Path(e.video).with_suffix('')}" \
                                                      f"{{{','.join(transcripts.SUFFIXES)}}}"
                raise InputError(f"{where}: no transcript for {e.name} (transcribe.source: files)")
            if path not in heard:
                try:
                    shown = path.resolve().relative_to(params.root.resolve()).as_posix()
                except ValueError:
                    shown = str(path)
                heard[path] = (transcripts.read_transcript(path),
                               {"recogniser": "file", "source": shown, "source_sha256": _sha256(path)})
            words, about = heard[path]
        else:
            if None not in heard:   # one track per video: recognised once
                heard[None] = (_recognise(params, e), {"recogniser": cfg.source,
                                                       **transcripts.recogniser_version(cfg.source)})
            words, about = heard[None]
        with cache.write_entry(out, e.name, stage=STAGE, config=stage_config(params), hash_=hashes[e.name],
                               attrs={"video": e.source, "side": e.side, "n_words": len(words), **about}) as f:
            write_words(f, words)
        stats[e.name] = {"words": len(words), "seconds": round(time.time() - t0, 2)}
        advance(1)
    return stats


class TranscribeProcess:
    """One video's transcripts, in whichever process runs it (this one, or a Ray worker)."""

    def __init__(self, params: Params) -> None:
        self.params = params

    def __call__(self, video: Path, entries: list[CorpusEntry], hashes: dict[str, str],
                 advance: Callable[[int], None]) -> dict[str, dict]:
        return process_entries(video, entries, hashes, self.params, advance)


def run_transcribe(params: Params) -> StageResult:
    """Runs the transcribe stage over the corpus (engine: params.run); returns what it did (also
    in report.json)."""
    return run_stage(STAGE, params.path(params.transcribe.out), load_corpus(params), stage_config(params),
                     params.transcribe.on_error, TranscribeProcess(params), lambda video: 1,
                     run=params.run, resources=params.run.transcribe, more_inputs=more_inputs(params))


def command(params: Annotated[Path, typer.Option(help="Params file.")] = DEFAULT_PARAMS) -> None:
    """Cache every entry's words with their times, from transcript files or a recogniser (stage 1)."""
    run_transcribe(load_params(params))
