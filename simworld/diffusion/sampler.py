"""Few-step samplers for the next latent frame (Euler or Heun on the EDM probability-flow ODE)."""

from __future__ import annotations

from collections.abc import Callable

import torch

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x, sigma (b,)) -> denoised x


def sample(
    denoise: Denoise,
    shape: tuple[int, ...],
    sigmas: torch.Tensor,
    sampler: str = "euler",
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    init: torch.Tensor | None = None,
) -> torch.Tensor:
    """Integrate from pure noise at ``sigmas[0]`` down to ``sigmas[-1] == 0``.

    Euler costs one network evaluation per step; Heun adds a correction at every step but the
    last (``2 * steps - 1`` evaluations).
    """
    if sampler not in ("euler", "heun"):
        raise ValueError(f"unknown sampler {sampler!r}; choose 'euler' or 'heun'")
    b = shape[0]
    x = torch.randn(shape, generator=generator, device=device) * sigmas[0]
    if init is not None:
        x = x + init
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised = denoise(x, s.expand(b))
        d = (x - denoised) / s
        x_next = x + (s_next - s) * d
        if sampler == "heun" and s_next > 0:
            d2 = (x_next - denoise(x_next, s_next.expand(b))) / s_next
            x_next = x + (s_next - s) * (d + d2) / 2
        x = x_next
    return x
