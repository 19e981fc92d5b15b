"""`jmt demo`: writes the demo corpus, synthetic videos in the Aff-Wild2 layout.

Layout under the output folder (the same as Aff-Wild2's, plus labels for a test split)::

    videos/batch1/demo_00.mp4 ...            train + validation videos (H.264 + AAC)
    videos/batch2/demo_22.mp4 ...            held-out test videos (numbered after the others)
    annotations/VA_Estimation_Challenge/
        Train_Set/demo_00_left.txt ...       `valence,arousal` header, one line per frame
        Validation_Set/...
        Test_Set/...                         demo only: Aff-Wild2 does not release these
        Test_Set_names.txt                   the test list, as the challenge ships it
    corpus.json                              how every video was made (see docs/demo-corpus.md)

Everything is deterministic from the seed. The corpus is written to a staging folder and
moved into place at the end, so a crash never leaves a half-written corpus.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from pipeline import __version__
from pipeline.config import DEFAULT_PARAMS, DemoParams, DemoSize, load_params
from pipeline.console import console, progress
from pipeline.tasks import TASKS
from pipeline.demo import face, voice
from pipeline.demo.trajectory import pick_stretch, smooth_trajectory, speaker_turns
from pipeline.errors import InputError
from pipeline.media import VideoWriter, require_ffmpeg, write_wav

ANNOTATIONS = "annotations/VA_Estimation_Challenge"
VA = TASKS.get("va")()   # the annotation format (pipeline/tasks/va.py)
SPLITS = ("Train_Set", "Validation_Set", "Test_Set")
MANIFEST = "corpus.json"
OCCLUSION_MODES = ("occluder", "out_of_frame")
AUDIO_GAP_MODES = ("silent", "noise")
# Speakers' base pitch, Hz: a narrow spread, so that pitch level carries arousal more than who
# speaks (120-220 Hz cost 0.01-0.09 CCC in docs/demo-corpus.md's measurements).
BASE_F0_HZ = (135.0, 185.0)
# The voice expresses the labels this far ahead: stage 1 hears the 1 s ending at each frame,
# centred 0.5 s before it, so a frame's label describes the speech centred on its window.
VOICE_LEAD_S = 0.5


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

    def annotation_names(self) -> list[str]:
        """Aff-Wild2 annotation names: `<video>` or `<video>_left` / `<video>_right`."""
        return [self.name if s is None else f"{self.name}_{s}" for s in self.sides]


@dataclass
class DemoResult:
    """What `generate_demo` wrote."""

    out: Path
    size: str
    seed: int
    videos: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n_frames(self) -> int:
        return sum(v["n_frames"] for v in self.videos)


def plan_videos(demo: DemoParams, size: DemoSize) -> list[VideoPlan]:
    """The videos of a corpus size: the first train video shows two people (left/right)
    and the first validation video runs at `odd_fps` when that is set."""
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
    return plans


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
    base_f0: np.ndarray                # (people,) Hz
    speaker: np.ndarray                # (n,) index of the person speaking
    audio: np.ndarray                  # float32 (n_samples,), gap applied
    occ_mode: str
    occ_who: int
    occ: tuple[int, int] | None        # face stretch, [start, stop) frames
    gap_mode: str
    gap: tuple[int, int] | None        # audio stretch
    invalid_who: int
    invalid: tuple[int, int] | None    # -5 label stretch
    background: np.ndarray             # float32 (H, W, 3)
    occluder_colour: np.ndarray        # float32 (3,)


def video_content(plan: VideoPlan, demo: DemoParams, size: DemoSize, seed: int) -> VideoContent:
    """Draws one video's content from `(seed, plan.index)`: the audio track is complete here, so
    the voice can be studied without rendering frames (see docs/demo-corpus.md)."""
    rng = np.random.default_rng([seed, plan.index])
    n, fps, w, h = plan.n_frames, plan.fps, demo.width, demo.height
    people = len(plan.sides)
    if people == 1:
        centers, scale = [(w / 2, h / 2)], 0.9 * h / 240
    else:
        centers, scale = [(w / 4, h / 2), (3 * w / 4, h / 2)], 0.62 * h / 240
    looks = [face.Appearance.sample(rng, c, scale) for c in centers]
    labels = [np.stack([smooth_trajectory(rng, n, fps), smooth_trajectory(rng, n, fps)], 1)
              for _ in range(people)]  # each (n, 2): valence, arousal
    base_f0 = rng.uniform(*BASE_F0_HZ, size=people)
    speaker = speaker_turns(rng, n, fps, people)  # (n,) index of the person speaking

    # Unreliable stretches: one for the face (of one person), one for the audio, kept apart.
    occ_mode = OCCLUSION_MODES[plan.index % 2]
    occ_who = int(rng.integers(people))
    occ = pick_stretch(rng, n, int(round(size.occlusion_seconds * fps)))
    gap_mode = AUDIO_GAP_MODES[plan.index % 2]
    gap = pick_stretch(rng, n, int(round(size.audio_gap_seconds * fps)), avoid=[occ] if occ else [])
    invalid, invalid_who = None, 0
    if plan.index % 2 == 0:
        invalid_who = int(rng.integers(people))
        invalid = pick_stretch(rng, n, int(round(size.invalid_label_seconds * fps)))

    # Audio: the active speaker's labels drive the voice.
    frames = np.arange(n)
    ahead = np.minimum(frames + int(round(VOICE_LEAD_S * fps)), n - 1)
    val = np.array([labels[p][j, 0] for j, p in zip(ahead, speaker)])
    aro = np.array([labels[p][j, 1] for j, p in zip(ahead, speaker)])
    audio = voice.synthesize(val, aro, base_f0[speaker], fps, demo.sample_rate, rng)
    audio += voice.noise_floor(len(audio), rng)
    if gap:
        s0, s1 = (int(round(f * demo.sample_rate / fps)) for f in gap)
        voice.degrade(audio, s0, s1, gap_mode, rng)
    bg = face.background(rng, h, w)
    occluder_colour = rng.uniform(0.2, 0.8, 3).astype(np.float32)
    return VideoContent(looks, labels, base_f0, speaker, audio, occ_mode, occ_who, occ, gap_mode, gap,
                        invalid_who, invalid, bg, occluder_colour)


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
                    v, a = c.labels[p][i]
                    face.draw_face(frame, look, float(v), float(a), i / fps, shift)
                    if occ and p == occ_who and c.occ_mode == "occluder" and occ[0] <= i < occ[1]:
                        face.draw_occluder(frame, face.face_box(look, face.head_offset(look, i / fps, float(a))),
                                           c.occluder_colour)
                writer.write((frame * 255 + 0.5).astype(np.uint8))
                if on_frame:
                    on_frame()

    persons = []
    for p, (side, name) in enumerate(zip(plan.sides, plan.annotation_names())):
        lab = c.labels[p].copy()
        if c.invalid and p == c.invalid_who:
            lab[c.invalid[0]:c.invalid[1]] = VA.invalid
        ann_rel = Path(ANNOTATIONS) / plan.split / f"{name}.txt"
        VA.write_annotation(root / ann_rel, lab)
        persons.append({
            "side": side, "annotation": ann_rel.as_posix(), "base_f0_hz": round(float(c.base_f0[p]), 2),
            "face_hidden": [list(occ)] if occ and p == occ_who else [],
            "invalid_labels": [list(c.invalid)] if c.invalid and p == c.invalid_who else [],
            "speaking": _runs(c.speaker == p),
        })
    return {
        "name": plan.name, "split": plan.split, "video": video_rel.as_posix(),
        "fps": fps, "n_frames": n, "width": w, "height": demo.height,
        "sample_rate": demo.sample_rate, "n_samples": int(len(c.audio)),
        "face_hidden_mode": c.occ_mode, "audio_gap_mode": c.gap_mode,
        "audio_gap": [list(c.gap)] if c.gap else [],
        "persons": persons,
    }


def _runs(mask: np.ndarray) -> list[list[int]]:
    """[start, stop) frame intervals where a boolean mask is true."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return [[int(a), int(b)] for a, b in zip(edges[::2], edges[1::2])]


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
    size_name = "tiny" if tiny else "full"
    size = demo.tiny if tiny else demo.full
    seed = demo.seed if seed is None else seed
    out = Path(out)
    old_files = _check_out(out)
    plans = plan_videos(demo, size)
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
        names = [n for p in plans if p.split == "Test_Set" for n in p.annotation_names()]
        (staging / ANNOTATIONS / "Test_Set_names.txt").write_text("\n".join(names) + "\n")
        files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
        manifest = {
            "generator": "jmt demo", "jmt_version": __version__, "layout": "affwild2",
            "size": size_name, "seed": seed, "params": demo.model_dump(),
            "voice_lead_s": VOICE_LEAD_S, "base_f0_range_hz": list(BASE_F0_HZ),
            "videos": result.videos, "files": files,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        _install(staging, out, old_files)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


def command(
    tiny: Annotated[bool, typer.Option("--tiny", help="Tiny corpus for tests (params demo.tiny).")] = False,
    out: Annotated[Path | None, typer.Option(help="Output folder [default: params demo.out].")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed [default: params demo.seed].")] = None,
    params: Annotated[Path, typer.Option(help="Params file.")] = DEFAULT_PARAMS,
) -> None:
    """Generate the demo corpus (synthetic videos in the Aff-Wild2 layout)."""
    cfg = load_params(params)
    result = generate_demo(cfg.demo, out if out is not None else cfg.path(cfg.demo.out),
                           tiny=tiny, seed=seed)
    splits = {s: sum(v["split"] == s for v in result.videos) for s in SPLITS}
    console.print(f"[green]demo corpus[/] ({result.size}, seed {result.seed}) -> {result.out}: "
                  f"{len(result.videos)} videos, {result.n_frames} frames "
                  f"({', '.join(f'{k} {v}' for k, v in splits.items())})", soft_wrap=True)
