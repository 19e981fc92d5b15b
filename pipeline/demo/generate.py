"""`jmt demo`: writes the demo corpus, synthetic videos in the Aff-Wild2 layout.

Layout under the output folder (the same as Aff-Wild2's, plus labels for a test split)::

    videos/batch1/demo_00.mp4 ...            train + validation videos (H.264 + AAC)
    videos/batch2/demo_22.mp4 ...            held-out test videos (numbered after the others)
    annotations/VA_Estimation_Challenge/     `valence,arousal`, one line per frame (-5: no label)
        Train_Set/demo_00_left.txt ...
        Validation_Set/...
        Test_Set/...                         demo only: Aff-Wild2 does not release these
        Test_Set_names.txt                   the test list, as the challenge ships it
    annotations/EXPR_Recognition_Challenge/  `Neutral,...,Other`, a class index a frame (-1: none)
    annotations/AU_Detection_Challenge/      `AU1,...,AU26`, 12 0/1 values a frame (-1: none)
        (each with Train_Set/, Validation_Set/, Test_Set/ and Test_Set_names.txt)
    corpus.json                              how every video was made (see docs/demo-corpus.md)

Every person shows a run of expression episodes (`expression.py`): they set the valence and
arousal the voice speaks, the action units the face renders, and the labels of all three
tasks. The VA task has every video in the splits of `demo.full`/`demo.tiny`; the EXPR and AU
tasks move a few videos to another split or leave them out (`assign_tasks`), as Aff-Wild2 does.

Everything is deterministic from the seed. The corpus is written to a staging folder and
moved into place at the end, so a crash never leaves a half-written corpus.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from pipeline import __version__
from pipeline.config import DEFAULT_PARAMS, DemoParams, DemoSize, load_params
from pipeline.console import console, progress
from pipeline.demo import expression, face, speech, voice
from pipeline.demo.trajectory import pick_stretch, speaker_turns
from pipeline.errors import InputError
from pipeline.media import VideoWriter, require_ffmpeg, write_wav
from pipeline.tasks import TASKS

TASK_NAMES = ("va", "expr", "au")
FORMATS = {t: TASKS.get(t)() for t in TASK_NAMES}   # the annotation formats (pipeline/tasks/)
FOLDERS = {t: f"annotations/{FORMATS[t].folders[0]}" for t in TASK_NAMES}
ANNOTATIONS = FOLDERS["va"]
VA = FORMATS["va"]
SPLITS = ("Train_Set", "Validation_Set", "Test_Set")
TEST_NAMES = "Test_Set_names.txt"
MANIFEST = "corpus.json"
OCCLUSION_MODES = ("occluder", "out_of_frame")
AUDIO_GAP_MODES = ("silent", "noise")
# Speakers' base pitch, Hz: a narrow spread, so that pitch level carries arousal more than who
# speaks (120-220 Hz cost 0.01-0.09 CCC in docs/demo-corpus.md's measurements).
BASE_F0_HZ = (135.0, 185.0)
# The voice expresses the labels this far ahead: stage 1 hears the 1 s ending at each frame,
# centred 0.5 s before it, so a frame's label describes the speech centred on its window.
VOICE_LEAD_S = 0.5
# The random stream of the expression classes (videos draw from [seed, video index]).
DECK_STREAM = 1_000_003


@dataclass(frozen=True)
class VideoPlan:
    """One video to generate: its name, split, rate, length and the people in it."""

    index: int
    name: str
    split: str
    batch: str
    fps: float
    n_frames: int
    sides: tuple[str | None, ...]  # (None,) for one person, ("left", "right") for two
    # per person: task -> split folder (a task absent: not labelled for it); () = every task in `split`
    labels: tuple[dict[str, str], ...] = ()
    # per person: the classes of its expression episodes, in order; () = dealt from the video's seed
    expressions: tuple[tuple[int, ...], ...] = ()

    def annotation_names(self) -> list[str]:
        """Aff-Wild2 annotation names: `<video>` or `<video>_left` / `<video>_right`."""
        return [self.name if s is None else f"{self.name}_{s}" for s in self.sides]

    def tasks_of(self, person: int) -> dict[str, str]:
        """task -> split folder of one person (only the tasks that label it)."""
        return dict(self.labels[person]) if self.labels else {t: self.split for t in TASK_NAMES}


@dataclass
class DemoResult:
    """What `generate_demo` wrote."""

    out: Path
    size: str
    seed: int
    videos: list[dict[str, Any]] = field(default_factory=list)
    entries: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # task -> split -> names

    @property
    def n_frames(self) -> int:
        return sum(v["n_frames"] for v in self.videos)


def plan_videos(demo: DemoParams, size: DemoSize, seed: int | None = None) -> list[VideoPlan]:
    """The videos of a corpus size: the first train video shows two people (left/right), the
    first validation video runs at `odd_fps` when that is set; each person's task splits
    (`assign_tasks`) and expression classes (dealt in order from decks of all 8, seeded by
    `seed`, default demo.seed; a VA split with at least 8 episodes starts a fresh deck, so in
    the full corpus every two consecutive people of a split show the 8 classes between them)."""
    plans = []
    counts = zip(SPLITS, (size.train, size.validation, size.test))
    splits = [split for split, count in counts for _ in range(count)]
    for i, split in enumerate(splits):
        first_of_split = i == 0 or splits[i - 1] != split
        fps = demo.odd_fps if (split == "Validation_Set" and first_of_split and demo.odd_fps) else demo.fps
        two = split == "Train_Set" and i == 0
        plans.append(VideoPlan(
            index=i, name=f"demo_{i:02d}", split=split,
            batch="batch2" if split == "Test_Set" else "batch1",
            fps=float(fps), n_frames=int(round(size.seconds * fps)),
            sides=("left", "right") if two else (None,),
        ))
    labels = assign_tasks(plans)
    per_person = expression.episodes_per_person(size.seconds)
    rng = np.random.default_rng([demo.seed if seed is None else seed, DECK_STREAM])
    # a split with a deck's worth of episodes or more starts a fresh deck (so its decks are its own)
    people = [p.split for p in plans for _ in p.sides]
    fresh = tuple(k for k, s in enumerate(people)
                  if k > 0 and s != people[k - 1] and people.count(s) * per_person >= len(expression.CLASSES))
    dealt = iter(expression.deal_classes(rng, [per_person] * len(people), fresh))
    return [replace(p, labels=tuple(labels[k]), expressions=tuple(next(dealt) for _ in p.sides))
            for k, p in enumerate(plans)]


def assign_tasks(plans: list[VideoPlan]) -> list[list[dict[str, str]]]:
    """Per video, per person: task -> split folder. VA labels every person in its video's split.
    EXPR and AU follow it, except (as Aff-Wild2's tasks have their own video sets and splits):

    - the two-person video's right person: EXPR validation (VA train), not labelled for AU;
    - with 4+ train and 4+ validation videos: the last train video is EXPR validation and the
      second validation video EXPR train; the third-to-last train video is AU validation and
      the third validation video AU train; the second-to-last train video has VA labels only;
      the last validation video has no EXPR labels, the second-to-last and (with 2+ test
      videos) the last test video no AU labels.
    """
    out = [[{t: p.split for t in TASK_NAMES} for _ in p.sides] for p in plans]
    by_split = {s: [k for k, p in enumerate(plans) if p.split == s] for s in SPLITS}
    train, val, test = (by_split[s] for s in SPLITS)

    def put(k: int, task: str, split: str | None) -> None:
        for person in out[k]:
            if split is None:
                person.pop(task, None)
            else:
                person[task] = split

    for k, p in enumerate(plans):
        if len(p.sides) == 2:
            out[k][1]["expr"] = "Validation_Set"
            out[k][1].pop("au")
            break
    if len(train) >= 4 and len(val) >= 4:
        put(train[-1], "expr", "Validation_Set")
        put(val[1], "expr", "Train_Set")
        put(train[-3], "au", "Validation_Set")
        put(val[2], "au", "Train_Set")
        put(train[-2], "expr", None)
        put(train[-2], "au", None)
        put(val[-1], "expr", None)
        put(val[-2], "au", None)
        if len(test) >= 2:
            put(test[-1], "au", None)
    return out


def _out_of_frame_shift(i: int, stretch: tuple[int, int], distance: float, ramp: int) -> float:
    """Horizontal offset that slides a face out of frame and back over a stretch."""
    start, stop = stretch
    if not start <= i < stop:
        return 0.0
    into = min(i - start + 1, stop - i)  # frames from the nearer end of the stretch
    return distance * min(1.0, into / max(1, ramp))


@dataclass
class VideoContent:
    """Everything of one video but its pixels: people, labels, voice, unreliable stretches."""

    looks: list[face.Appearance]
    labels: list[np.ndarray]           # per person, (n, 2) valence, arousal (before -5 marks)
    episodes: list[list[expression.Episode]]  # per person, its expression episodes
    expr: list[np.ndarray]             # per person, (n,) class index (before -1 marks)
    aus: list[np.ndarray]              # per person, (n, 12) AU intensities 0..1 the face shows
    au_labels: list[np.ndarray]        # per person, (n, 12) 0/1 (before -1 marks)
    base_f0: np.ndarray                # (people,) Hz
    speaker: np.ndarray                # (n,) index of the person speaking
    audio: np.ndarray                  # float32 (n_samples,), gap applied
    occ_mode: str
    occ_who: int
    occ: tuple[int, int] | None        # face stretch, [start, stop) frames
    gap_mode: str
    gap: tuple[int, int] | None        # audio stretch
    invalid_who: int
    invalid: tuple[int, int] | None    # -5 label stretch (VA)
    background: np.ndarray             # float32 (H, W, 3)
    occluder_colour: np.ndarray        # float32 (3,)
    # per task: (person, [start, stop)) of its stretch of invalid labels, or None
    invalid_of: dict[str, tuple[int, tuple[int, int]] | None] = field(default_factory=dict)
    words: list[speech.Word] = field(default_factory=list)  # demo.speech 'words': what is said


# Which videos (by index) have a stretch of invalid labels, per task (VA: every other one).
INVALID_EVERY = {"va": (2, 0), "expr": (3, 1), "au": (3, 2)}   # task -> (every, remainder)


def _per_frame(samples: np.ndarray, n: int, fps: float, sample_rate: int) -> np.ndarray:
    """The mean of a per-sample signal over each video frame's samples."""
    edges = np.round(np.arange(n + 1) * sample_rate / fps).astype(np.int64)
    sums = np.concatenate([[0.0], np.cumsum(samples, dtype=np.float64)])
    edges = np.minimum(edges, len(samples))
    return (sums[edges[1:]] - sums[edges[:-1]]) / np.maximum(edges[1:] - edges[:-1], 1)


def video_content(plan: VideoPlan, demo: DemoParams, size: DemoSize, seed: int) -> VideoContent:
    """Draws one video's content from `(seed, plan.index)` and its plan: the audio track is
    complete here, so the voice can be studied without rendering frames (see docs/demo-corpus.md)."""
    rng = np.random.default_rng([seed, plan.index])
    n, fps, w, h = plan.n_frames, plan.fps, demo.width, demo.height
    people = len(plan.sides)
    if people == 1:
        centers, scale = [(w / 2, h / 2)], 0.9 * h / 240
    else:
        centers, scale = [(w / 4, h / 2), (3 * w / 4, h / 2)], 0.62 * h / 240
    looks = [face.Appearance.sample(rng, c, scale) for c in centers]
    classes = plan.expressions or tuple(expression.deal_classes(
        rng, [expression.episodes_per_person(n / fps)] * people))
    lines = [expression.timeline(rng, n, fps, classes[p]) for p in range(people)]
    labels = [t.va for t in lines]  # each (n, 2): valence, arousal
    base_f0 = rng.uniform(*BASE_F0_HZ, size=people)
    speaker = speaker_turns(rng, n, fps, people)  # (n,) index of the person speaking

    # Unreliable stretches: one for the face (of one person), one for the audio, kept apart.
    occ_mode = OCCLUSION_MODES[plan.index % 2]
    occ_who = int(rng.integers(people))
    occ = pick_stretch(rng, n, int(round(size.occlusion_seconds * fps)))
    gap_mode = AUDIO_GAP_MODES[plan.index % 2]
    gap = pick_stretch(rng, n, int(round(size.audio_gap_seconds * fps)), avoid=[occ] if occ else [])
    invalid_of: dict[str, tuple[int, tuple[int, int]] | None] = {}
    for task, (every, rest) in INVALID_EVERY.items():
        invalid_of[task] = None
        if plan.index % every == rest:
            who = int(rng.integers(people))
            stretch = pick_stretch(rng, n, int(round(size.invalid_label_seconds * fps)))
            invalid_of[task] = (who, stretch) if stretch else None
    invalid_who, invalid = invalid_of["va"] if invalid_of["va"] else (0, None)

    # Audio: the active speaker's labels drive the voice; its syllables move that person's mouth.
    frames = np.arange(n)
    ahead = np.minimum(frames + int(round(VOICE_LEAD_S * fps)), n - 1)
    val = np.array([labels[p][j, 0] for j, p in zip(ahead, speaker)])
    aro = np.array([labels[p][j, 1] for j, p in zip(ahead, speaker)])
    words: list[speech.Word] = []
    if demo.speech == "words":
        audio, env, openness, words = speech.speak(val, aro, speaker, base_f0, fps, demo.sample_rate, rng,
                                                   gap=(gap[0] / fps, gap[1] / fps) if gap else None)
    else:
        audio, env, openness = voice.synthesize(val, aro, base_f0[speaker], fps, demo.sample_rate, rng,
                                                articulation=True)
    lips = _per_frame(env, n, fps, demo.sample_rate)
    jaw = _per_frame(env * openness, n, fps, demo.sample_rate)
    aus = [expression.add_speech(lines[p].aus, np.where(speaker == p, lips, 0.0), np.where(speaker == p, jaw, 0.0))
           for p in range(people)]
    audio += voice.noise_floor(len(audio), rng)
    if gap:
        s0, s1 = (int(round(f * demo.sample_rate / fps)) for f in gap)
        voice.degrade(audio, s0, s1, gap_mode, rng)
    bg = face.background(rng, h, w)
    occluder_colour = rng.uniform(0.2, 0.8, 3).astype(np.float32)
    return VideoContent(looks, labels, [t.episodes for t in lines], [t.expr for t in lines], aus,
                        [expression.au_labels(a) for a in aus], base_f0, speaker, audio, occ_mode, occ_who,
                        occ, gap_mode, gap, invalid_who, invalid, bg, occluder_colour, invalid_of, words)


def task_labels(c: VideoContent, task: str, person: int) -> np.ndarray:
    """One person's labels for a task as its annotation file holds them (invalid stretch marked)."""
    lab = {"va": c.labels[person], "expr": c.expr[person][:, None], "au": c.au_labels[person]}[task]
    lab = np.asarray(lab, np.float64).copy()
    marked = c.invalid_of.get(task)
    if marked and marked[0] == person:
        lab[marked[1][0]:marked[1][1]] = FORMATS[task].invalid
    return lab


def render_video(plan: VideoPlan, demo: DemoParams, size: DemoSize, seed: int,
                 root: Path, on_frame: Any = None) -> dict[str, Any]:
    """Generates one video with its annotation files under `root`; returns its manifest entry."""
    c = video_content(plan, demo, size, seed)
    n, fps, w = plan.n_frames, plan.fps, demo.width
    occ, occ_who = c.occ, c.occ_who
    video_rel = Path("videos") / plan.batch / f"{plan.name}.mp4"
    (root / video_rel).parent.mkdir(parents=True, exist_ok=True)
    ramp = max(1, int(0.3 * fps))
    away = -1.0 if c.looks[occ_who].center[0] < w / 2 else 1.0  # leave by the nearer side
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "audio.wav"
        write_wav(wav, c.audio, demo.sample_rate)
        with VideoWriter(root / video_rel, w, demo.height, fps, audio_wav=wav, crf=demo.crf) as writer:
            for i in range(n):
                frame = c.background.copy()
                for p, look in enumerate(c.looks):
                    shift = (0.0, 0.0)
                    if occ and p == occ_who and c.occ_mode == "out_of_frame":
                        shift = (away * _out_of_frame_shift(i, occ, w * 0.75, ramp), 0.0)
                    a = float(c.labels[p][i, 1])
                    face.draw_expression(frame, look, face.expression_patch(c.aus[p][i]), a, i / fps, shift)
                    if occ and p == occ_who and c.occ_mode == "occluder" and occ[0] <= i < occ[1]:
                        face.draw_occluder(frame, face.face_box(look, face.head_offset(look, i / fps, a)),
                                           c.occluder_colour)
                writer.write((frame * 255 + 0.5).astype(np.uint8))
                if on_frame:
                    on_frame()
    words = {}
    if demo.speech == "words":
        speech.write_vtt(root / video_rel.with_suffix(".vtt"), c.words, plan.sides)
        words = {"transcript": video_rel.with_suffix(".vtt").as_posix(),
                 "words": [w.to_dict(plan.sides) for w in c.words]}

    persons = []
    for p, (side, name) in enumerate(zip(plan.sides, plan.annotation_names())):
        tasks = {}
        for task, split in plan.tasks_of(p).items():
            rel = Path(FOLDERS[task]) / split / f"{name}.txt"
            FORMATS[task].write_annotation(root / rel, task_labels(c, task, p))
            marked = c.invalid_of.get(task)
            tasks[task] = {"split": split, "annotation": rel.as_posix(),
                           "invalid": [list(marked[1])] if marked and marked[0] == p else []}
        va = tasks.get("va")
        persons.append({
            "side": side, "annotation": va["annotation"] if va else None,
            "base_f0_hz": round(float(c.base_f0[p]), 2), "look": asdict(c.looks[p]),
            "face_hidden": [list(occ)] if occ and p == occ_who else [],
            "invalid_labels": va["invalid"] if va else [],
            "speaking": _runs(c.speaker == p),
            "labels": tasks,
            "expressions": [e.to_dict() for e in c.episodes[p]],
            "action_units": {a: _runs(c.au_labels[p][:, k] > 0) for k, a in enumerate(expression.AUS)},
        })
    return {
        "name": plan.name, "split": plan.split, "video": video_rel.as_posix(),
        "fps": fps, "n_frames": n, "width": w, "height": demo.height,
        "sample_rate": demo.sample_rate, "n_samples": int(len(c.audio)),
        "face_hidden_mode": c.occ_mode, "audio_gap_mode": c.gap_mode,
        "audio_gap": [list(c.gap)] if c.gap else [],
        "persons": persons, **words,
    }


_runs = expression.runs


def _check_out(out: Path) -> list[str]:
    """Returns the files of an earlier demo corpus in `out` (to be replaced), or raises
    if `out` holds anything else, so a user's folder is never overwritten."""
    if not out.exists():
        return []
    if not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return []
    manifest = out / MANIFEST
    if not manifest.is_file():
        shown = ", ".join(entries[:5]) + (" ..." if len(entries) > 5 else "")
        raise InputError(f"{out}: folder is not empty and holds no demo corpus ({shown}); "
                         "choose another --out or empty it")
    try:
        return list(json.loads(manifest.read_text())["files"])
    except (ValueError, KeyError) as exc:
        raise InputError(f"{manifest}: unreadable demo manifest ({exc}); remove the folder "
                         "or choose another --out") from None


def _install(staging: Path, out: Path, old_files: list[str]) -> None:
    """Replaces an earlier corpus's own files (only those) with the staged ones."""
    if not out.exists() or not any(out.iterdir()):
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
        return
    for rel in old_files + [MANIFEST]:
        (out / rel).unlink(missing_ok=True)
    for src in sorted(staging.rglob("*")):
        if src.is_file() and src.name != MANIFEST:
            dst = out / src.relative_to(staging)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
    os.replace(staging / MANIFEST, out / MANIFEST)  # last: marks the corpus complete
    shutil.rmtree(staging)


def generate_demo(demo: DemoParams, out: Path, *, tiny: bool = False,
                  seed: int | None = None) -> DemoResult:
    """Generates the demo corpus into `out` and returns what was written."""
    require_ffmpeg()
    if demo.speech == "words":
        speech.require_espeak()
    size_name = "tiny" if tiny else "full"
    size = demo.tiny if tiny else demo.full
    seed = demo.seed if seed is None else seed
    out = Path(out)
    old_files = _check_out(out)
    plans = plan_videos(demo, size, seed)
    result = DemoResult(out=out, size=size_name, seed=seed)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        with progress() as bar:
            task = bar.add_task("demo corpus", total=sum(p.n_frames for p in plans))
            for plan in plans:
                bar.update(task, description=f"demo {plan.name}")
                result.videos.append(render_video(plan, demo, size, seed, staging,
                                                  on_frame=lambda: bar.advance(task)))
        entries = task_entries(plans)
        for t in TASK_NAMES:
            (staging / FOLDERS[t]).mkdir(parents=True, exist_ok=True)
            (staging / FOLDERS[t] / TEST_NAMES).write_text("".join(f"{n}\n" for n in entries[t]["Test_Set"]))
        result.entries = entries
        files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
        manifest = {
            "generator": "jmt demo", "jmt_version": __version__, "layout": "affwild2",
            "size": size_name, "seed": seed, "params": demo.model_dump(),
            "voice_lead_s": VOICE_LEAD_S, "base_f0_range_hz": list(BASE_F0_HZ),
            **({"speech": speech.manifest()} if demo.speech == "words" else {}),
            "tasks": {t: {"folder": FOLDERS[t], "columns": list(FORMATS[t].columns),
                          "invalid": FORMATS[t].invalid, "entries": entries[t]} for t in TASK_NAMES},
            "expression": {
                "classes": list(expression.CLASSES), "action_units": list(expression.AUS),
                "au_threshold": expression.AU_THRESHOLD,
                "circumplex": {k: list(v) for k, v in expression.CIRCUMPLEX.items()},
                "profiles": expression.PROFILES,
            },
            "videos": result.videos, "files": files,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        _install(staging, out, old_files)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


def task_entries(plans: list[VideoPlan]) -> dict[str, dict[str, list[str]]]:
    """task -> split folder -> the annotation names it labels, in plan order."""
    out = {t: {s: [] for s in SPLITS} for t in TASK_NAMES}
    for plan in plans:
        for p, name in enumerate(plan.annotation_names()):
            for task, split in plan.tasks_of(p).items():
                out[task][split].append(name)
    return out


def command(
    tiny: Annotated[bool, typer.Option("--tiny", help="Tiny corpus for tests (params demo.tiny).")] = False,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: params demo.out).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default: params demo.seed).")] = None,
    params: Annotated[Path, typer.Option(help="Params file.")] = DEFAULT_PARAMS,
) -> None:
    """Generate the demo corpus (synthetic videos in the Aff-Wild2 layout)."""
    cfg = load_params(params)
    result = generate_demo(cfg.demo, out if out is not None else cfg.path(cfg.demo.out),
                           tiny=tiny, seed=seed)
    splits = {s: sum(v["split"] == s for v in result.videos) for s in SPLITS}
    per_task = "; ".join(f"{t} " + "/".join(str(len(result.entries[t][s])) for s in SPLITS) for t in TASK_NAMES)
    console.print(f"[green]demo corpus[/] ({result.size}, seed {result.seed}) -> {result.out}: "
                  f"{len(result.videos)} videos, {result.n_frames} frames "
                  f"({', '.join(f'{k} {v}' for k, v in splits.items())}); "
                  f"entries train/validation/test: {per_task}", soft_wrap=True)
