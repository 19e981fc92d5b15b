"""Face alignment: a similarity transform from MTCNN's 5 landmarks to a fixed template."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from skimage.transform import SimilarityTransform

# The widely used 5-point template for 112x112 face crops (left eye, right eye, nose tip,
# left mouth corner, right mouth corner), in crop pixels.
TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                         [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)


def template(size: int) -> np.ndarray:
    """The 5-point template scaled to a size x size crop."""
    return TEMPLATE_112 * (size / 112.0)


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray | None:
    """Least-squares similarity transform (rotation, uniform scale, shift) mapping src -> dst.

    src, dst: (N, 2) points. Returns the 2x3 matrix A with dst ~ A @ [x, y, 1], or None when
    the points are degenerate (e.g. all landmarks on one spot).
    """
    tform = SimilarityTransform.from_estimate(np.asarray(src, np.float64), np.asarray(dst, np.float64))
    return tform.params[:2].copy() if tform else None


def warp_crops(frames: torch.Tensor, matrices: np.ndarray, size: int) -> torch.Tensor:
    """Cuts aligned crops out of frames in one batched resampling.

    frames: uint8 (B, H, W, 3); matrices: (B, 2, 3) frame px -> crop px.
    Returns uint8 (B, size, size, 3) (bilinear; outside the frame is black).
    """
    b, h, w, _ = frames.shape
    inv = np.linalg.inv(np.concatenate([matrices, np.tile([[[0, 0, 1]]], (b, 1, 1))], 1))[:, :2]
    ys, xs = np.meshgrid(np.arange(size) + 0.0, np.arange(size) + 0.0, indexing="ij")
    ones = np.ones_like(xs)
    crop_px = np.stack([xs, ys, ones], 0).reshape(3, -1)            # (3, S*S)
    src = inv @ crop_px                                               # (B, 2, S*S) frame px
    grid = np.empty((b, size * size, 2))
    grid[..., 0] = (2 * src[:, 0] + 1) / w - 1                        # align_corners=False
    grid[..., 1] = (2 * src[:, 1] + 1) / h - 1
    grid_t = torch.as_tensor(grid.reshape(b, size, size, 2), dtype=torch.float32, device=frames.device)
    img = frames.permute(0, 3, 1, 2).float()                          # (B, 3, H, W)
    out = F.grid_sample(img, grid_t, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)  # (B, S, S, 3)
