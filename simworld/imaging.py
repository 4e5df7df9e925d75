"""Frame resizing shared by the pixel-world adapter and video import."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def resize_frames(frames: np.ndarray, size: tuple[int, int], chunk: int = 256) -> np.ndarray:
    """Resize uint8 frames with antialiasing (area-weighted bilinear).

    Args:
        frames: ``uint8 (H, W, 3)`` or ``(T, H, W, 3)``.
        size: target ``(height, width)``.

    Returns:
        ``uint8`` frames of the target size, same rank as the input.
    """
    if frames.ndim not in (3, 4) or frames.shape[-1] != 3:
        raise ValueError(f"expected frames of shape (H, W, 3) or (T, H, W, 3), got {frames.shape}")
    single = frames.ndim == 3
    batch = frames[None] if single else frames
    if tuple(batch.shape[1:3]) == tuple(size):
        return frames.copy()
    out = []
    for i in range(0, len(batch), chunk):  # chunks bound the float copy of a long video
        x = (
            torch.from_numpy(np.ascontiguousarray(batch[i : i + chunk])).permute(0, 3, 1, 2).float()
        )  # (t, 3, h, w)
        y = F.interpolate(x, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
        out.append(y.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())  # (t, H, W, 3)
    out = np.concatenate(out)
    return out[0] if single else out
