"""Rotary position embeddings over (t, h, w) for spacetime patch tokens.

Each attention head's channels are split into three groups rotated by the token's frame index,
row and column. Positions are relative by construction, so the frame size and the context length
can change without retraining an embedding table.
"""

from __future__ import annotations

import torch


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """Channels per axis (t, h, w), each even, summing to ``head_dim``."""
    if head_dim % 2 or head_dim < 6:
        raise ValueError(f"head_dim must be even and >= 6 for 3-axis RoPE, got {head_dim}")
    dt = 2 * max(1, head_dim // 8)  # a quarter of the channels for time
    dh = 2 * ((head_dim - dt) // 4)
    return dt, dh, head_dim - dt - dh


def _axis_angles(pos: torch.Tensor, dims: int, theta: float) -> torch.Tensor:
    freqs = theta ** (-torch.arange(0, dims, 2, dtype=torch.float64, device=pos.device) / dims)
    return pos.to(torch.float64)[..., None] * freqs  # (..., dims/2)


def rope_tables(
    t: torch.Tensor, y: torch.Tensor, x: torch.Tensor, head_dim: int, theta: float = 10_000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables for tokens at frame ``t``, row ``y``, column ``x`` (broadcastable, shape ``(..., n)``).

    Returns:
        ``(cos, sin)``, each ``(..., n, head_dim // 2)`` float32.
    """
    dt, dh, dw = rope_split(head_dim)
    t, y, x = torch.broadcast_tensors(t, y, x)
    angles = torch.cat(
        [_axis_angles(t, dt, theta), _axis_angles(y, dh, theta), _axis_angles(x, dw, theta)], dim=-1
    )  # float64, so far-apart positions stay exact
    return angles.cos().float(), angles.sin().float()


def grid_positions(
    frames: int, height: int, width: int, t0: int = 0, device=None
) -> tuple[torch.Tensor, ...]:
    """Frame, row and column of each token of ``frames x height x width`` tokens, frame-major order."""
    t, y, x = torch.meshgrid(
        torch.arange(t0, t0 + frames, device=device),
        torch.arange(height, device=device),
        torch.arange(width, device=device),
        indexing="ij",
    )
    return t.flatten(), y.flatten(), x.flatten()


def rope_angles(
    frames: int, height: int, width: int, head_dim: int, t0: int = 0, device=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables ``(frames * height * width, head_dim // 2)`` for a block of frames from ``t0``."""
    return rope_tables(*grid_positions(frames, height, width, t0, device), head_dim)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs of ``x`` ``(..., n, head_dim)`` by the angles of its ``n`` tokens."""
    x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)  # (..., n, head_dim/2) each
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)
    return out.type_as(x)
