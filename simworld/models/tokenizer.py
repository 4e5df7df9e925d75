"""Tokenizers: frames <-> latents behind one interface.

``encode`` takes frames ``float (B, T, 3, H, W)`` in ``[-1, 1]`` and returns latents
``(B, T, C, h, w)`` scaled for diffusion (roughly unit variance); ``decode`` inverts it. With a
temporal compression of 1 (the default here) each latent frame depends on its own frame only, so
tokenizers are causal in time and a single image is a one-frame video.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class IdentityTokenizerConfig:
    """Pixel space (as DIAMOND): optional pixel-unshuffle trades resolution for channels."""

    kind: str = "identity"
    unshuffle: int = 4
    frame_size: tuple[int, int] = (64, 64)

    @property
    def latent_channels(self) -> int:
        return 3 * self.unshuffle**2

    @property
    def latent_size(self) -> tuple[int, int]:
        return (self.frame_size[0] // self.unshuffle, self.frame_size[1] // self.unshuffle)


class IdentityTokenizer(nn.Module):
    value_range = (-1.0, 1.0)  # latents are pixels: what a frame can hold (decode clips to it)

    def __init__(self, cfg: IdentityTokenizerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        h, w = cfg.frame_size
        if h % cfg.unshuffle or w % cfg.unshuffle:
            raise ValueError(f"frame size {h}x{w} is not divisible by unshuffle={cfg.unshuffle}")

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        b, t = frames.shape[:2]
        return F.pixel_unshuffle(frames.flatten(0, 1), self.cfg.unshuffle).unflatten(
            0, (b, t)
        )  # (b, t, c, h, w)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        b, t = latents.shape[:2]
        x = F.pixel_shuffle(latents.flatten(0, 1), self.cfg.unshuffle).unflatten(0, (b, t))  # (b, t, 3, H, W)
        return x.clamp(-1, 1)


def frames_to_tensor(frames, device=None) -> torch.Tensor:
    """``uint8 (..., H, W, 3)`` numpy/tensor -> ``float (..., 3, H, W)`` in ``[-1, 1]``."""
    x = torch.as_tensor(frames, device=device)
    return x.movedim(-1, -3).float().div(127.5).sub(1.0)


def tensor_to_frames(x: torch.Tensor):
    """``float (..., 3, H, W)`` in ``[-1, 1]`` -> ``uint8 (..., H, W, 3)`` numpy."""
    return x.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8).movedim(-3, -1).cpu().numpy()
