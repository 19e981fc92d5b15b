"""The one params loader: params.yaml -> typed, frozen, validated objects.

params.yaml has one section per stage. Unknown keys, wrong types and bad values fail
before any work starts, with a message naming the file and the key
(e.g. ``params.yaml: demo.fps: Input should be greater than 0``).
Paths inside params (the fields typed `PathStr`) are relative to the folder of the params file
that sets them, so one checkout can serve several corpora, each with its own params file, and a
variant in another folder may start from a `base:` file whose paths stay its own.
A field's default is params.yaml's value for it (tests/test_config.py holds the two equal), so a
params file that leaves a key out gets what params.yaml says.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, StringConstraints, ValidationError, create_model,
                      field_validator, model_validator)

from pipeline.errors import ParamsError
from pipeline.tasks import TASKS

DEFAULT_PARAMS = Path("params.yaml")

PosInt = Annotated[int, Field(ge=1)]
PosFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]


class _Path:
    """The mark of a params field that holds a path (`PathStr`): relative to the folder of the
    params file that sets it (`load_params` rewrites a `base:` file's from its folder)."""

    def __repr__(self) -> str:
        return "PATH"


PATH = _Path()
PathStr = Annotated[str, PATH]
# A stream's name: a key of embed.streams, a dataset name in the cache, a module key in the heads
# and part of condition names (`no_<stream>`): lower case, digits and underscores.
StreamName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]


class Section(BaseModel):
    """Base for every params section: frozen, strict types, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DemoSize(Section):
    """How many videos of each split the demo corpus has, and how long they are."""

    train: PosInt
    validation: PosInt
    test: PosInt
    seconds: PosFloat
    occlusion_seconds: NonNegFloat = Field(description="face occluded or out of frame")
    audio_gap_seconds: NonNegFloat = Field(description="audio silent or drowned in noise")
    invalid_label_seconds: NonNegFloat = Field(description="frames labelled -5,-5")

    @model_validator(mode="after")
    def _stretches_fit(self) -> DemoSize:
        longest = max(self.occlusion_seconds, self.audio_gap_seconds, self.invalid_label_seconds)
        if longest * 2 > self.seconds:
            raise ValueError(
                f"the unreliable stretches ({longest} s) must be at most half a video "
                f"({self.seconds} s)"
            )
        return self


class DemoParams(Section):
    """`jmt demo`: the synthetic Aff-Wild2-layout corpus."""

    out: PathStr = "data/demo"
    seed: int = 0
    fps: PosFloat = 15.0
    odd_fps: PosFloat | None = Field(
        default=24.0, description="frame rate of one validation video (None: all at fps)"
    )
    width: Annotated[int, Field(ge=96, le=1920, multiple_of=2)] = 320
    height: Annotated[int, Field(ge=96, le=1080, multiple_of=2)] = 240
    sample_rate: Annotated[int, Field(ge=8000, le=48000)] = 16000
    crf: Annotated[int, Field(ge=0, le=51)] = 20
    speech: Literal["voice", "words"] = Field(
        default="voice", description="voice: the synthetic vowel voice (bit-reproducible); words: espeak-ng says "
                                     "words whose sentiment follows valence, with a WebVTT transcript beside each video")
    full: DemoSize
    tiny: DemoSize


class CorpusParams(Section):
    """Which corpus stage 1 reads, and how."""

    root: PathStr = "data/demo"
    layout: Literal["affwild2", "manifest"] = "affwild2"
    manifest: PathStr | None = Field(default=None, description="CSV (layout: manifest)")
    label_tolerance: Annotated[int, Field(ge=0)] = 5   # jmt labels: rows may differ from frames by this many

    @model_validator(mode="after")
    def _manifest_given(self) -> CorpusParams:
        if self.layout == "manifest" and not self.manifest:
            raise ValueError("layout 'manifest' needs corpus.manifest (a CSV path)")
        return self


OnError = Literal["skip", "fail"]


class FacesParams(Section):
    """`jmt faces`: detection, tracking and alignment of the annotated person's face."""

    out: PathStr = "data/cache/faces"
    source: Literal["mtcnn", "cropped_aligned"] = "mtcnn"
    cropped_aligned: PathStr | None = Field(default=None, description="<dir>/<entry>/%05d.jpg")
    crop_size: Annotated[int, Field(ge=32, le=512)] = 112
    jpeg_quality: Annotated[int, Field(ge=50, le=100)] = 92
    min_prob: Annotated[float, Field(gt=0, lt=1)] = 0.9
    detect_every: PosInt = 2
    detect_max_side: Annotated[int, Field(ge=64)] | None = 480
    min_face_size: Annotated[int, Field(ge=8)] = 20
    batch_size: PosInt = 32
    prefetch: bool = True
    device: str = "auto"
    on_error: OnError = "skip"

    @model_validator(mode="after")
    def _crops_dir_given(self) -> FacesParams:
        if self.source == "cropped_aligned" and not self.cropped_aligned:
            raise ValueError("source 'cropped_aligned' needs faces.cropped_aligned (a folder)")
        return self


class AudioParams(Section):
    """`jmt audio`: log-mel spectrograms and each video frame's audio window."""

    out: PathStr = "data/cache/audio"
    sample_rate: Annotated[int, Field(ge=8000, le=48000)] = 16000
    n_mels: Annotated[int, Field(ge=8, le=256)] = 64
    win_ms: PosFloat = 20.0
    hop_ms: PosFloat = 10.0
    f_min: NonNegFloat = 60.0
    f_max: PosFloat = 7800.0
    window_s: PosFloat = 1.0
    # The per-frame audio mask stage 2 sees (docs/cache.md): voice present inside the track.
    mask: Literal["energy", "vad"] = "vad"
    energy_db: Annotated[float, Field(ge=-120, le=0)] = -45.0   # energy: voiced above this RMS, dBFS
    vad_threshold: Annotated[float, Field(gt=0, lt=1)] = 0.5    # vad: voiced above this score
    vad_voicing: bool = Field(default=True, description="vad: periodic sound louder than energy_db "
                                                        "counts as voice too (synthetic voices)")
    fill_gaps_s: NonNegFloat = 1.0   # both: unvoiced gaps shorter than this between voiced frames count as voice
    on_error: OnError = "skip"


class FilesParams(Section):
    """A `files` stream (`name: files`): per-frame features another tool wrote, one file per entry
    (pipeline/stage1/backbones/files.py; docs/pipeline.md, "Streams from other tools"). A key
    left unset takes the preset's value, or the generic default named here."""

    path: PathStr = Field(description="the entry's file: {video} (the video's stem), {entry} (the entry's "
                                      "name) and {folder} (the video's folder under the corpus root) filled in")
    preset: Literal["openface", "pyfeat", "wavlm"] | None = Field(
        default=None, description="the layout of a tool's files: openface (OpenFace 2.2 CSV), pyfeat "
                                  "(py-feat's CSV), wavlm (the JMT authors' WavLM CSVs)")
    format: Literal["csv", "npy", "h5"] | None = Field(default=None, description="default: from the suffix")
    numeric_header: bool | None = Field(
        default=None, description="CSV: the header row holds numbers (pandas' default names 0, 1, ...), not data")
    columns: list[str] | None = Field(default=None, description="CSV: the columns to take, by header name")
    regex: str | None = Field(default=None, description="CSV: take every column whose whole name matches")
    dataset: str | None = Field(default=None, description="HDF5: the dataset holding (n, D) features")
    align: Literal["index", "timestamp"] | None = Field(
        default=None, description="index (default): row -> frame by frame_column (or row order); "
                                  "timestamp: each frame takes the row nearest in time within tolerance_s")
    frame_column: str | None = Field(default=None, description="CSV: the frame number (default: row order)")
    first_frame: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="the frame number of the video's first frame in frame_column (default 0)")
    time_column: str | None = Field(default=None, description="CSV: the row's time in seconds (align: timestamp)")
    tolerance_s: PosFloat | None = Field(
        default=None, description="align: timestamp: the furthest a row may be from a frame (default: half a frame)")
    confidence_column: str | None = Field(default=None, description="CSV: a row below min_confidence is masked")
    min_confidence: Annotated[float, Field(ge=0, le=1)] | None = Field(default=None, description="default 0.5")
    success_column: str | None = Field(default=None, description="CSV: a row where it is 0 is masked")
    count_tolerance: Annotated[int, Field(ge=0)] = Field(
        default=5, description="frames the file may have more or fewer than the video (as corpus.label_tolerance)")


class BackboneParams(Section):
    """A frozen backbone by registry name, with where its weights come from."""

    name: str
    pretrained: bool = Field(default=False, description="download from the hub (online only)")
    checkpoint: PathStr | None = Field(default=None, description="local weights file")
    allow_random: bool = Field(default=False, description="random weights (loud warning)")
    layer: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="which transformer layer's output to pool (SSL audio backbones; "
                                  "default: the last)")
    # Options only some backbones take (each backbone lists its own in `options`; the others
    # reject them). None = the backbone's default; an unset option is left out of the stage's
    # config hash, so caches made before an option existed stay current.
    reduction: Literal["max", "avg", "flatten"] | None = Field(
        default=None, description="r2plus1d_18: how the 512x1x7x7 map becomes 512-d (default max)")
    clip: PosInt | None = Field(default=None, description="clip backbones: crops per clip (default 8)")
    clip_stride: PosInt | None = Field(
        default=None, description="clip backbones: frames between a clip's crops (default 4: 8 of the last 32)")
    append_outputs: bool | None = Field(
        default=None, description="hsemotion: append the model's own expression/VA outputs to the features")
    files: FilesParams | None = Field(default=None, description="files: where the features are and how to read them")
    window_s: PosFloat | None = Field(
        default=None, description="text backbones: seconds of speech before each frame's end (default 4)")

    OPTIONS: typing.ClassVar[tuple[str, ...]] = ("layer", "reduction", "clip", "clip_stride", "append_outputs",
                                                 "files", "window_s")

    def identity(self) -> dict:
        """What the backbone's output depends on in its params: every field, less options left unset
        (None), except `layer`, which caches made before the other options recorded."""
        return {k: v for k, v in self.model_dump().items()
                if k == "layer" or k not in self.OPTIONS or v is not None}


class TranscribeParams(Section):
    """`jmt transcribe`: every entry's words with their times, from a transcript file or a
    recogniser, cached apart from the text features (changing those does not rerun recognition)."""

    out: PathStr = "data/cache/transcripts"
    source: Literal["files", "pocketsphinx", "whisper"] = Field(
        default="files", description="files: a WebVTT, SRT or Whisper-JSON transcript per video; pocketsphinx: "
                                     "recognised offline (English model in its wheel); whisper: faster-whisper")
    path: PathStr | None = Field(
        default=None, description="files: the transcript, with {video}, {entry} and {folder} filled in; "
                                  "null: <video stem>.json, .vtt or .srt beside the video")
    model: str | None = Field(default=None, description="whisper: a local faster-whisper model folder, "
                                                        "or a model name (downloaded when online)")
    device: str = "cpu"            # whisper: cpu | cuda
    compute_type: str = "int8"     # whisper: CTranslate2's compute type
    on_error: OnError = "skip"


class LabelsParams(Section):
    """`jmt labels`: every entry's annotations, per task, aligned to its frames."""

    out: PathStr = "data/cache/labels"
    on_error: OnError = "skip"


class EmbedParams(Section):
    """`jmt embed`: one frozen backbone per stream over the cached faces and audio. The streams'
    order is kept: stage 2 takes it from the cache (JMT's authors' order: visual, audio)."""

    out: PathStr = "data/cache/embeddings"
    streams: dict[StreamName, BackboneParams] = Field(min_length=1)
    batch_size: PosInt = 128
    device: str = "auto"
    on_error: OnError = "skip"


class ModelParams(Section):
    """The fusion head and its temporal encoders (stage 2)."""

    fusion: str = "jmt"
    d_model: PosInt = 128
    temporal: str = "tcn"
    heads: PosInt = 1
    layers: PosInt = 1
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1
    temporal_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1
    aggregation: Literal["self_attention", "fc"] = "self_attention"  # jmt only
    iterations: PosInt = 2                                           # rjca only
    standardize: bool = True        # inputs standardised per feature (training split's mean/std) before the L2 norm


TaskName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$")]


class TrainParams(Section):
    """`jmt train`: optimisation on the cached embeddings."""

    out: PathStr = "models/model.pt"
    live_dir: PathStr = "dvclive/train"
    tasks: list[TaskName] = Field(default_factory=lambda: ["va"], min_length=1)   # pipeline/tasks
    task_weights: dict[TaskName, PosFloat] = Field(default_factory=dict)          # loss weights (default 1)
    seed: int = 0
    epochs: PosInt = 100            # the most epochs a run may take (early stopping ends most runs first)
    batch_size: PosInt = 16
    window: Annotated[int, Field(ge=4)] = 64
    hop: PosInt = 32
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: PosFloat = 1e-3
    weight_decay: NonNegFloat = 1e-4
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    schedule: Literal["warmup_plateau", "warmup_cosine", "plateau", "none"] = "warmup_plateau"
    warmup_epochs: Annotated[int, Field(ge=0)] = 2
    lr_patience: PosInt = 3         # plateau schedules: halve the lr after this many epochs without gain
    grad_clip: NonNegFloat = 1.0
    patience: PosInt = 10
    min_delta: NonNegFloat = 0.001  # a validation gain must exceed this to count as one (early stopping)
    modality_dropout: Annotated[float, Field(ge=0, le=1)] = 0.0
    preload_max_mb: NonNegFloat = 2000.0
    device: str = "auto"
    amp: bool = True

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, tasks: list[str]) -> list[str]:
        unknown = [name for name in tasks if name not in TASKS]
        if unknown:  # a ValueError, so that the message names the file and the key
            raise ValueError(f"unknown task {unknown[0]!r}; known: {', '.join(TASKS.names())}")
        return tasks

    @model_validator(mode="after")
    def _consistent_tasks(self) -> TrainParams:
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks has duplicates: {self.tasks}")
        extra = sorted(set(self.task_weights) - set(self.tasks))
        if extra:
            raise ValueError(f"task_weights names {', '.join(extra)}, not among tasks {self.tasks}")
        return self


class EvaluateParams(Section):
    """`jmt evaluate`: the official protocol (each task's post-processing: `tasks`), prediction files."""

    metrics: PathStr = "metrics/eval.json"
    out: PathStr = "reports/eval"
    # offline: overlapping windows, averaged; causal: frame t from the window ending at t
    # (pipeline/stage2/windows.py)
    protocol: Literal["offline", "causal"] = "offline"


# `tasks`: each registered task's options (pipeline/tasks/<name>.py, its `Options`), e.g. va's
# clipping and smoothing, expr's class weights: a new task's options need no edit here.
def _options_section(options: type) -> type[Section]:
    """A params section (strict, unknown keys rejected) with the fields of a task's options
    dataclass; its values are then checked by the dataclass itself (ranges: `__post_init__`)."""
    hints = typing.get_type_hints(options)

    def check(self) -> Section:
        options(**self.model_dump())  # ValueError -> reported with the key
        return self

    return create_model(f"{options.__name__}Section", __base__=Section, __doc__=options.__doc__,
                        __validators__={"_check": model_validator(mode="after")(check)},
                        **{f.name: (hints[f.name], f.default) for f in dataclasses.fields(options)})


TasksParams = create_model(
    "TasksParams", __base__=Section, __doc__="Each task's options (`tasks.<name>`; pipeline/tasks).",
    **{name: (_options_section(TASKS.get(name).Options), Field(default_factory=_options_section(TASKS.get(name).Options)))
       for name in TASKS.names()})


class CompareParams(Section):
    """`jmt compare`: heads x seeds on one cache, with paired intervals, cost and robustness."""

    # `only:<stream>`: the unimodal reference on one stream; `only:*`: one per stream of the cache
    heads: list[str] = Field(default_factory=lambda: ["jmt", "mt", "jca", "rjca", "concat", "late", "only:*"],
                             min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    reference: str = "jmt"          # every other head is compared with this one, paired by seed
    runs: PathStr = "runs/compare"      # one folder per (head, seed): checkpoint, predictions, run.json
    metrics: PathStr = "metrics/compare.json"
    table: PathStr = "reports/compare.md"
    confidence: Annotated[float, Field(gt=0, lt=1)] = 0.95
    bootstrap: Annotated[int, Field(ge=100)] = 2000   # resamples of the videos
    # below this many videos the bootstrap is shown as indicative, never used in verdicts
    min_videos_bootstrap: Annotated[int, Field(ge=2)] = 8
    # a verdict is stated only when its interval clears 0 by this many sds of the change a rerun
    # of every seed makes to the mean difference (pipeline/stage2/verdicts.py); 0: the plain rule
    rerun_margin: Annotated[float, Field(ge=0)] = 2.0
    min_subset_frames: PosInt = 50  # availability subsets with fewer valid frames are not scored
    latency_repeats: PosInt = 5
    # how every run's validation and test predictions are made: offline | causal (as evaluate's)
    protocol: Literal["offline", "causal"] = "offline"
    # default: every head with the model/train params above; tuned: each head with its best
    # configuration from `tuned` (jmt tune's output), and beside it the default comparison
    configs: Literal["default", "tuned"] = "default"
    tuned: PathStr = "metrics/tune.json"
    # 0: the official splits; k >= 2: training + validation entries merged and split into k folds
    # by video, each (head, seed, fold) a run validated on its fold (pipeline/stage2/folds.py)
    folds: Annotated[int, Field(ge=0)] = 0

    @model_validator(mode="after")
    def _consistent(self) -> CompareParams:
        for key, values in (("heads", self.heads), ("seeds", self.seeds)):
            if len(set(values)) != len(values):
                raise ValueError(f"{key} has duplicates: {values}")
        if self.reference not in self.heads:
            raise ValueError(f"reference {self.reference!r} is not among heads {self.heads}")
        _check_folds(self.folds)
        return self


def _check_folds(k: int) -> None:
    if k == 1:
        raise ValueError("folds: 0 (the official splits) or k >= 2, not 1")


# A search space: a dotted params key -> [choices] | {low, high, log} (ints when both bounds are) |
# a single value (fixed, not searched); pipeline/stage2/tune/space.py
SearchSpace = dict[str, Any]


class TuneParams(Section):
    """`jmt tune`: every head of compare.heads searched over its space with the same budget and
    the same algorithm, on validation only (docs/compare.md, "Tuning")."""

    trials: PosInt = 20                       # per head; with a budget below, the most trials a head may take
    epochs_budget: PosInt | None = None       # training epochs per head, all its trials together
    seconds_budget: PosFloat | None = None    # CPU- (or GPU-) seconds per head: the units' resources x wall time
    sampler: Literal["tpe", "random"] = "tpe"
    startup_trials: Annotated[int, Field(ge=0)] = 5   # tpe: random configurations before the model takes over
    scheduler: Literal["asha", "none"] = "asha"
    grace_epochs: PosInt = 4                  # asha: the first rung (epochs every trial gets)
    reduction: Annotated[int, Field(ge=2)] = 3   # asha: 1/reduction of the trials go on at each rung
    seed: int = 0                             # the sampler's seed
    folds: Annotated[int, Field(ge=0)] = 0    # 0: the official validation split; k >= 2: mean over k folds
    space: SearchSpace = Field(default_factory=dict)   # overrides of the shared and the heads' spaces
    out: PathStr = "runs/tune"                # the study database and every trial's record
    storage: str | None = None                # SQLAlchemy URL; null: sqlite:///<out>/study.db
    metrics: PathStr = "metrics/tune.json"
    table: PathStr = "reports/tune.md"

    @model_validator(mode="after")
    def _one_budget(self) -> TuneParams:
        if self.epochs_budget is not None and self.seconds_budget is not None:
            raise ValueError("set epochs_budget or seconds_budget, not both (the comparison states one budget)")
        _check_folds(self.folds)
        return self

    @property
    def budget(self) -> str:
        """The budget the search spends equally per head: trials, epochs or seconds."""
        return "epochs" if self.epochs_budget else "seconds" if self.seconds_budget else "trials"


class EnsembleParams(Section):
    """`jmt ensemble`: each head's runs (seeds x folds) averaged, and the best heads together."""

    top_k: PosInt = 3                         # the ensemble of the k heads best on validation
    out: PathStr = "reports/ensemble"         # submission files, per head and for the top k
    metrics: PathStr = "metrics/ensemble.json"
    table: PathStr = "reports/ensemble.md"


class ReportParams(Section):
    """`jmt report`: figures and reports/index.md from the comparison."""

    out: PathStr = "reports"            # index.md here, PNGs in <out>/figures/
    videos: PosInt = 3              # validation videos drawn as curves
    dpi: Annotated[int, Field(ge=50, le=600)] = 110


class Resources(Section):
    """What one unit of work asks the Ray cluster for. Its whole CPUs are also torch's threads
    for the unit in BOTH engines: the last bits of CPU results depend on the thread count, and
    a cache or run must not depend on the engine that made it."""

    cpus: Annotated[float, Field(gt=0)] = 1.0
    gpus: NonNegFloat = 0.0          # a fraction (e.g. 0.25) shares one GPU between units


class ActorResources(Resources):
    """`jmt embed` on Ray: per backbone actor (each loads the weights once)."""

    actors: PosInt | None = None     # None: as many as the cluster's CPUs (and GPUs) fit


class RunParams(Section):
    """Where the heavy commands (faces, audio, embed, compare) run: this process or Ray."""

    engine: Literal["local", "ray"] = "local"
    # ray: None = start Ray on this machine for the command; "auto" = the running cluster
    # (RAY_ADDRESS or the one `ray start` made here); "host:port" or "ray://host:port" = that one
    address: str | None = None
    cpus: PosInt | None = None       # address None: CPUs of the local Ray instance (None: all)
    node_ip_address: str | None = None   # the driver's address in the cluster (None: Ray's choice;
                                         # 127.0.0.1 when the cluster's address is loopback)
    max_retries: Annotated[int, Field(ge=0)] = 3   # a unit whose worker or node dies runs again
    faces: Resources = Field(default_factory=Resources)       # per video
    audio: Resources = Field(default_factory=Resources)       # per video
    transcribe: Resources = Field(default_factory=Resources)  # per video
    embed: ActorResources = Field(default_factory=ActorResources)
    compare: Resources = Field(default_factory=Resources)     # per (head, seed) run


class Params(Section):
    """All of params.yaml. Use `path()` to resolve a path relative to the params file."""

    demo: DemoParams
    corpus: CorpusParams
    faces: FacesParams
    audio: AudioParams
    labels: LabelsParams = Field(default_factory=LabelsParams)
    transcribe: TranscribeParams = Field(default_factory=TranscribeParams)
    embed: EmbedParams
    model: ModelParams
    train: TrainParams
    evaluate: EvaluateParams
    tasks: TasksParams = Field(default_factory=TasksParams)
    compare: CompareParams = Field(default_factory=CompareParams)
    tune: TuneParams = Field(default_factory=TuneParams)
    ensemble: EnsembleParams = Field(default_factory=EnsembleParams)
    report: ReportParams = Field(default_factory=ReportParams)
    run: RunParams = Field(default_factory=RunParams)
    _root: Path = PrivateAttr(default=Path("."))

    @property
    def root(self) -> Path:
        """The folder of the params file; relative paths in params are taken from here."""
        return self._root

    def path(self, relative: str | Path) -> Path:
        """Resolves a params path (relative to the params file's folder), `..` taken out: a path a
        `base:` file in another folder set (`../jmt/data/cache`) names its folder as the base does."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else Path(os.path.normpath(self._root / p))

    def updated(self, **sections: dict[str, Any]) -> Params:
        """A copy with some keys of some sections replaced, validated as a params file is, with
        the same root: `params.updated(model={"fusion": "mt"}, train={"seed": 1})`. A nested key
        is given with dots: `updated(run={"compare.cpus": 2})`."""
        data = self.model_dump()
        for section, values in sections.items():
            if section not in data:
                raise ParamsError(f"updated: unknown section {section!r}")
            for key, value in values.items():
                node = data[section]
                *parents, last = key.split(".")
                for part in parents:
                    node = node[part]
                node[last] = value
        return parse_params(data, source="params (updated)", root=self._root)


def _key(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def parse_params(data: Any, *, source: str = "params", root: Path | None = None) -> Params:
    """Validates an already-parsed mapping; errors name `source` and every bad key."""
    if not isinstance(data, dict):
        raise ParamsError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    try:
        params = Params.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            if err["type"] not in ("missing", "extra_forbidden"):
                msg += f" (got {err['input']!r})"
            lines.append(f"{source}: {_key(err['loc'])}: {msg}")
        raise ParamsError("\n".join(lines)) from None
    params._root = (root or Path(".")).resolve()
    return params


def _read_yaml(path: Path, named_by: Path | None = None) -> Any:
    if not path.is_file():
        where = (f"named by `base:` in {named_by}" if named_by is not None else
                 "run jmt in the folder that holds it, or pass --params PATH")
        raise ParamsError(f"{path}: params file not found (looked for {path.absolute()}; {where})")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None


def _path_keys(tp: Any, at: tuple[str, ...] = (), marks: tuple = ()) -> list[tuple[str, ...]]:
    """Where the schema `tp` holds paths: the key of every field typed `PathStr`, `*` standing
    for any key of a mapping (`embed.streams.*.checkpoint`)."""
    if any(m is PATH for m in marks):
        return [at]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        return _path_keys(args[0], at, args[1:])
    if origin in (typing.Union, types.UnionType):
        return [key for arg in args for key in _path_keys(arg, at)]
    if origin is dict:
        return _path_keys(args[1], (*at, "*"))
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [key for name, field in tp.model_fields.items()
                for key in _path_keys(field.annotation, (*at, name), tuple(field.metadata))]
    return []


PATH_KEYS = _path_keys(Params)  # ("corpus", "root"), ("embed", "streams", "*", "checkpoint"), ...


def _rebased(data: dict, folder: Path, root: Path) -> dict:
    """A params file's mapping with its relative paths (PATH_KEYS) rewritten from its own folder
    to `root`'s, so they name the same files when `root`'s file takes it as its `base:`; absolute
    paths and `~` stay as written, and a file in `root` itself is returned as it is."""
    folder, root = folder.resolve(), root.resolve()
    if folder == root:
        return data
    data = copy.deepcopy(data)
    for key in PATH_KEYS:
        nodes = [data]
        for part in key[:-1]:
            nodes = [child for node in nodes if isinstance(node, dict)
                     for child in (node.values() if part == "*" else [node.get(part)])]
        for node in nodes:
            value = node.get(key[-1]) if isinstance(node, dict) else None
            if isinstance(value, str) and not Path(value).expanduser().is_absolute():
                node[key[-1]] = os.path.relpath(folder / value, root)
    return data


# (section, key) mappings a variant replaces whole instead of merging key by key: the file that gives
# them gives all of them
REPLACED_WHOLE = {("embed", "streams"), ("train", "task_weights")}


def _merge(base: dict, over: dict, at: tuple = ()) -> dict:
    """`over` laid onto `base`: mappings merged key by key, anything else replaced; the mappings
    in REPLACED_WHOLE replace the base's, so a variant lists exactly its streams."""
    out = dict(base)
    for key, value in over.items():
        here = (*at, key)
        merge = isinstance(value, dict) and isinstance(out.get(key), dict) and here not in REPLACED_WHOLE
        out[key] = _merge(out[key], value, here) if merge else value
    return out


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    """Reads and validates a params file; raises ParamsError naming the file and key.

    A file may start from another: `base: params.yaml` (relative to this file's folder) takes
    that file's sections and lays this file's keys over them, so a variant (other tasks, a third
    stream) states only what differs; the base may have a base of its own. Every relative path
    (a `PathStr` field) is taken from the folder of the file that writes it: a base in another
    folder (`base: ../jmt/params.yaml`) has its paths rewritten relative to this file's folder
    (`data/cache/embeddings` -> `../jmt/data/cache/embeddings`), while the keys this file sets
    are relative to its own, as are the defaults of keys no file sets. A base in the same folder
    changes no path."""
    path = Path(path)
    data, current, seen = _read_yaml(path), path, [path.resolve()]
    while isinstance(data, dict) and "base" in data:
        base = current.parent / str(data["base"])  # relative to the file that names it
        if base.resolve() in seen:
            raise ParamsError(f"{current}: base: {data['base']} makes a loop ({' -> '.join(map(str, seen))})")
        seen.append(base.resolve())
        parent = _read_yaml(base, named_by=current)
        if not isinstance(parent, dict):
            raise ParamsError(f"{base}: expected a mapping of sections (the base of {current})")
        parent = _rebased(parent, base.parent, path.parent)
        data = _merge(parent, {k: v for k, v in data.items() if k != "base"})
        current = base
    return parse_params(data, source=str(path), root=path.parent)
