"""The waveform backbones on CUDA, as `jmt embed` runs them there (autocast float16): agreement
with float32 on the CPU, and frames/s at 15 fps video. Needs a CUDA machine; random weights.

    python bench/audio_extractors_gpu.py --out docs/bench/audio_extractors_gpu.json
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))      # bench/: common.py
from common import REPO, write_json  # noqa: E402

SR, FPS = 16000, 15.0
NAMES = ["prosody", "wav2vec2_base", "hubert_base", "wavlm_base", "wavlm_large"]


def signal(seconds: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The demo voice at swinging arousal, and every 15 fps frame's 1 s window in samples."""
    from pipeline.demo import voice

    n = int(seconds * FPS)
    aro = np.sin(2 * np.pi * np.arange(n) / FPS / 20.0)
    wave = voice.synthesize(np.zeros(n), aro, np.full(n, 150.0), FPS, SR, np.random.default_rng(0))
    end = np.round((np.arange(n) / FPS + 1 / FPS) * SR).astype(np.int64)   # = audio.sample_windows
    return torch.as_tensor(wave), torch.as_tensor(np.stack([end - SR, end], 1))


def main() -> None:
    from pipeline.config import BackboneParams
    from pipeline.stage1.backbones import build_backbone

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=REPO / "docs/bench/audio_extractors_gpu.json")
    ap.add_argument("--check-seconds", type=float, default=20.0)
    ap.add_argument("--speed-seconds", type=float, default=600.0)
    ap.add_argument("--names", nargs="+", default=NAMES)
    args = ap.parse_args()
    cuda = torch.device("cuda")
    res = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "video_fps": FPS}
    short, long_ = signal(args.check_seconds), signal(args.speed_seconds)
    for name in args.names:
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = build_backbone(BackboneParams(name=name, allow_random=name != "prosody"), REPO)
        with torch.no_grad():
            ref = net(*short).float()
            net.to(cuda)
            f32 = net(short[0].to(cuda), short[1]).float().cpu()
            with torch.autocast("cuda", dtype=torch.float16):
                f16 = net(short[0].to(cuda), short[1]).float().cpu()
                net(long_[0][: SR * 30].to(cuda), long_[1][:450])              # warm-up
                torch.cuda.synchronize()
                t = time.perf_counter()
                out = net(long_[0].to(cuda), long_[1])
                torch.cuda.synchronize()
                wall = time.perf_counter() - t
        scale = ref.abs().max().item()
        res[name] = {"max_abs_diff_cuda_fp32_vs_cpu": float((f32 - ref).abs().max()),
                     "max_abs_diff_cuda_autocast_vs_cpu": float((f16 - ref).abs().max()),
                     "max_abs_cpu_value": scale, "finite": bool(torch.isfinite(out).all()),
                     "audio_s": args.speed_seconds, "frames": len(long_[1]), "wall_s": round(wall, 3),
                     "frames_per_s": round(len(long_[1]) / wall, 1),
                     "peak_gpu_mem_mb": round(torch.cuda.max_memory_allocated() / 2**20)}
        print(name, res[name], flush=True)
        del net
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    write_json(args.out, res)


if __name__ == "__main__":
    main()
