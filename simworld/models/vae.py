"""A per-frame convolutional VAE: the video compression network (tokenizer) of the world model.

Each frame is encoded on its own (temporal compression 1), so the tokenizer is causal in time and a
single image is a one-frame video. ``encode`` returns the posterior mean, normalised so diffusion sees
roughly unit-variance latents; ``decode`` undoes the normalisation.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from simworld.checkpoint import (
    CheckpointError,
    atomic_save_tensors,
    atomic_write_text,
    load_state_strict,
    load_tensors,
    read_json,
)
from simworld.metrics import foreground_mask, psnr
from simworld.models.tokenizer import IdentityTokenizer, IdentityTokenizerConfig, frames_to_tensor

TOKENIZER_WEIGHTS = "tokenizer.safetensors"
TOKENIZER_CONFIG = "tokenizer.json"


@dataclass
class VAEConfig:
    """Architecture and loss of :class:`VAE`.

    Attributes:
        kind: Always ``"vae"`` (what :func:`load_tokenizer` dispatches on).
        frame_size: ``(H, W)``; both divisible by ``downsample``.
        downsample: Spatial compression, a power of two (4: 64x64 frames -> 16x16 latents).
        latent_channels: Channels ``C`` of a latent frame.
        channels: Width of each resolution level, full resolution first; ``log2(downsample) + 1``
            entries.
        blocks: Residual blocks per level (encoder and decoder alike), one entry per level.
        norm_groups: GroupNorm groups (must divide every width).
        kl_weight: Weight of the KL term (per latent element) against the reconstruction loss (per pixel).
        foreground_weight: Extra loss weight of foreground pixels (those differing from their frame's
            most common colour, grown by one pixel). Small objects on a flat background are a few
            percent of the pixels; without it they are learnt last and stay blurry for long.
        logvar_init: Initial posterior log-variance (bias of the encoder's log-variance output). The
            default posterior (variance 1) drowns the untrained latents in noise; starting small lets the
            decoder learn from the start.
        latent_scale: ``encode`` returns ``(mu - latent_shift) / latent_scale``; set by
            :meth:`VAE.fit_latent_normalisation`.
        latent_shift: See ``latent_scale``.
    """

    kind: str = "vae"
    frame_size: tuple[int, int] = (64, 64)
    downsample: int = 4
    latent_channels: int = 8
    channels: tuple[int, ...] = (16, 32, 64)
    blocks: tuple[int, ...] = (0, 1, 1)
    norm_groups: int = 8
    kl_weight: float = 1e-6
    foreground_weight: float = 20.0
    logvar_init: float = -8.0
    latent_scale: float = 1.0
    latent_shift: float = 0.0

    def __post_init__(self) -> None:
        # JSON gives lists back; keep tuples so configs compare equal after a round trip.
        self.frame_size = (int(self.frame_size[0]), int(self.frame_size[1]))
        self.channels = tuple(int(c) for c in self.channels)
        self.blocks = tuple(int(n) for n in self.blocks)
        if self.kind != "vae":
            raise ValueError(f"VAEConfig.kind must be 'vae', got {self.kind!r}")
        d = self.downsample
        if d < 1 or d & (d - 1):
            raise ValueError(f"downsample must be a power of two, got {d}")
        levels = int(math.log2(d)) + 1
        if len(self.channels) != levels or len(self.blocks) != levels:
            raise ValueError(
                f"downsample={d} needs {levels} levels: got channels={self.channels} and blocks={self.blocks}"
            )
        h, w = self.frame_size
        if h % d or w % d:
            raise ValueError(f"frame size {h}x{w} is not divisible by downsample={d}")
        bad = [c for c in self.channels if c % self.norm_groups]
        if bad:
            raise ValueError(f"channels {bad} are not divisible by norm_groups={self.norm_groups}")
        if not self.latent_scale > 0:
            raise ValueError(f"latent_scale must be positive, got {self.latent_scale}")

    @property
    def latent_size(self) -> tuple[int, int]:
        return (self.frame_size[0] // self.downsample, self.frame_size[1] // self.downsample)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists)."""
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


# Recommended configs, by name. "balls-d4"/"balls-d8": Balls 64x64 at downsample 4 / 8.
VAE_CONFIGS: dict[str, Any] = {
    "tiny": lambda **kw: VAEConfig(channels=(8, 16, 16), blocks=(0, 1, 0), latent_channels=4, **kw),
    "balls-d4": lambda **kw: VAEConfig(downsample=4, latent_channels=8, channels=(16, 32, 64), **kw),
    "balls-d8": lambda **kw: VAEConfig(
        downsample=8, latent_channels=16, channels=(16, 32, 64, 64), blocks=(0, 1, 1, 1), **kw
    ),
}


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (n, cout, h, w)
        h = self.conv2(F.silu(self.norm2(h)))  # (n, cout, h, w)
        return self.skip(x) + h


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 conv (no checkerboard artefacts, unlike transposed convs)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # (n, cout, 2h, 2w)


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        ch, g = cfg.channels, cfg.norm_groups
        self.conv_in = nn.Conv2d(3, ch[0], 3, padding=1)
        layers: list[nn.Module] = []
        for i, c in enumerate(ch):
            layers += [ResBlock(c, c, g) for _ in range(cfg.blocks[i])]
            if i + 1 < len(ch):
                layers.append(nn.Conv2d(c, ch[i + 1], 3, stride=2, padding=1))
        self.body = nn.Sequential(*layers)
        self.norm_out = nn.GroupNorm(g, ch[-1])
        self.conv_out = nn.Conv2d(ch[-1], 2 * cfg.latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(self.conv_in(x))  # (n, ch[-1], h, w)
        return self.conv_out(F.silu(self.norm_out(x)))  # (n, 2C, h, w)


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        ch, g = cfg.channels, cfg.norm_groups
        self.conv_in = nn.Conv2d(cfg.latent_channels, ch[-1], 3, padding=1)
        layers: list[nn.Module] = []
        for i in reversed(range(len(ch))):
            layers += [ResBlock(ch[i], ch[i], g) for _ in range(cfg.blocks[i])]
            if i > 0:
                layers.append(Upsample(ch[i], ch[i - 1]))
        self.body = nn.Sequential(*layers)
        self.norm_out = nn.GroupNorm(g, ch[0])
        self.conv_out = nn.Conv2d(ch[0], 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.body(self.conv_in(z))  # (n, ch[0], H, W)
        return self.conv_out(F.silu(self.norm_out(x)))  # (n, 3, H, W)


class VAE(nn.Module):
    """Per-frame convolutional VAE behind the tokenizer interface.

    Loss: ``L1 + MSE`` per pixel between input and reconstruction (both in ``[-1, 1]``), averaged with
    weight ``1 + foreground_weight`` on foreground pixels and 1 elsewhere, plus ``kl_weight * KL`` (mean
    over latent elements). MSE is what PSNR scores; L1 keeps pushing on the few pixels still wrong once
    most are right (where MSE gradients vanish), which sharpens object edges. The foreground weight
    makes small objects on a flat background count from the first steps (see :class:`VAEConfig`).

    Args:
        cfg: Architecture, loss weights and latent normalisation.
    """

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        # Residual branches start as the identity, so the untrained net is a plain conv stack.
        for m in self.modules():
            if isinstance(m, ResBlock):
                nn.init.zeros_(m.conv2.weight)
                nn.init.zeros_(m.conv2.bias)
        with torch.no_grad():
            self.encoder.conv_out.bias[self.cfg.latent_channels :] = self.cfg.logvar_init

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def posterior(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw (unnormalised) posterior of each frame.

        Args:
            frames: ``float (B, T, 3, H, W)`` in ``[-1, 1]``.

        Returns:
            ``(mean, logvar)``, each ``(B, T, C, h, w)``.
        """
        b, t = frames.shape[:2]
        if tuple(frames.shape[-2:]) != self.cfg.frame_size:
            raise ValueError(f"frames are {tuple(frames.shape[-2:])}, this VAE encodes {self.cfg.frame_size}")
        moments = self.encoder(frames.flatten(0, 1))  # (b*t, 2C, h, w)
        mean, logvar = moments.float().unflatten(0, (b, t)).chunk(2, dim=2)  # (b, t, C, h, w) each
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames ``float (B, T, 3, H, W)`` in ``[-1, 1]`` -> normalised latents ``(B, T, C, h, w)``."""
        mean, _ = self.posterior(frames)
        return (mean - self.cfg.latent_shift) / self.cfg.latent_scale  # (b, t, C, h, w)

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """Unnormalised latents ``(B, T, C, h, w)`` -> unclamped frames ``float (B, T, 3, H, W)``."""
        b, t = z.shape[:2]
        return self.decoder(z.flatten(0, 1)).float().unflatten(0, (b, t))  # (b, t, 3, H, W)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents ``(B, T, C, h, w)`` -> frames ``float (B, T, 3, H, W)`` in ``[-1, 1]``."""
        z = latents * self.cfg.latent_scale + self.cfg.latent_shift  # (b, t, C, h, w)
        return self.decode_raw(z).clamp(-1.0, 1.0)

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss on a batch of clips.

        Args:
            batch: ``{"frames": uint8 (B, T, H, W, 3)}`` (torch tensor or numpy array).

        Returns:
            ``(loss, logs)`` with ``train/loss``, ``train/recon``, ``train/kl`` and ``train/psnr`` (dB
            of the clamped reconstruction).
        """
        x = frames_to_tensor(batch["frames"], device=self.device)  # (b, t, 3, H, W)
        mean, logvar = self.posterior(x)  # (b, t, C, h, w) each
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()  # reparameterised sample
        x_hat = self.decode_raw(z)  # (b, t, 3, H, W)
        err = x_hat - x  # (b, t, 3, H, W)
        per_pixel = err.abs() + err.square()  # L1 + MSE
        if self.cfg.foreground_weight:
            fg = foreground_mask(torch.as_tensor(batch["frames"], device=self.device))  # (b, t, H, W)
            w = 1.0 + self.cfg.foreground_weight * fg.unsqueeze(2).float()  # (b, t, 1, H, W)
            recon = (per_pixel * w).mean() / w.mean()
        else:
            recon = per_pixel.mean()
        kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).mean()
        loss = recon + self.cfg.kl_weight * kl
        with torch.no_grad():
            p = psnr(x_hat.clamp(-1, 1), x, data_range=2.0).mean()
        logs = {
            "train/loss": loss.item(),
            "train/recon": recon.item(),
            "train/kl": kl.item(),
            "train/psnr": p.item(),
        }
        return loss, logs

    @torch.no_grad()
    def fit_latent_normalisation(self, latents: torch.Tensor) -> tuple[float, float]:
        """Set ``latent_shift`` / ``latent_scale`` to the mean / std of a sample of raw posterior means.

        Args:
            latents: Raw posterior means (``posterior(frames)[0]``), any shape.

        Returns:
            ``(shift, scale)`` now in ``self.cfg``.
        """
        latents = latents.double()
        shift = float(latents.mean())
        scale = float(latents.std()) if latents.numel() > 1 else 1.0
        self.cfg.latent_shift = shift
        self.cfg.latent_scale = scale if scale > 1e-8 else 1.0
        return self.cfg.latent_shift, self.cfg.latent_scale


def save_tokenizer(model: nn.Module, out_dir: str | Path) -> None:
    """Write ``tokenizer.safetensors`` (weights) and ``tokenizer.json`` (config) into ``out_dir``.

    Each file is replaced atomically (temp file + rename), weights first.

    Args:
        model: A :class:`VAE` or an ``IdentityTokenizer`` (anything with a dataclass ``cfg`` that has
            a ``kind``).
        out_dir: Directory to write into (created if needed).
    """
    out_dir = Path(out_dir)
    cfg = model.cfg
    d = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}
    atomic_save_tensors(out_dir / TOKENIZER_WEIGHTS, model.state_dict(), metadata={"kind": d["kind"]})
    atomic_write_text(out_dir / TOKENIZER_CONFIG, json.dumps(d, indent=2, sort_keys=True) + "\n")


def load_tokenizer(path_dir: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a tokenizer saved by :func:`save_tokenizer` (a :class:`VAE` or an ``IdentityTokenizer``).

    Args:
        path_dir: Directory holding ``tokenizer.json`` (and ``tokenizer.safetensors`` for a VAE).
        device: Where to put the weights.

    Returns:
        The tokenizer in eval mode.

    Raises:
        CheckpointError: If a file is missing or corrupt, the config is invalid or of an unknown kind,
            or the weights do not match the architecture the config describes.
    """
    path_dir = Path(path_dir)
    if not path_dir.is_dir():
        raise CheckpointError(f"no tokenizer at {path_dir}: directory does not exist")
    d = read_json(path_dir / TOKENIZER_CONFIG)
    if not isinstance(d, dict):
        raise CheckpointError(f"{path_dir / TOKENIZER_CONFIG}: expected a JSON object")
    kind = d.get("kind")
    builders = {"vae": (VAEConfig, VAE), "identity": (IdentityTokenizerConfig, IdentityTokenizer)}
    if kind not in builders:
        raise CheckpointError(
            f"{path_dir / TOKENIZER_CONFIG}: unknown tokenizer kind {kind!r}; known {list(builders)}"
        )
    cfg_cls, model_cls = builders[kind]
    try:
        cfg = cfg_cls(**d)
        if kind == "identity":
            cfg.frame_size = tuple(cfg.frame_size)
        model = model_cls(cfg)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path_dir / TOKENIZER_CONFIG}: invalid {kind} config ({e})") from e
    state = model.state_dict()
    if state or (path_dir / TOKENIZER_WEIGHTS).exists():
        weights = load_tensors(path_dir / TOKENIZER_WEIGHTS)
        load_state_strict(model, weights, str(path_dir / TOKENIZER_WEIGHTS))
    return model.to(device).eval()
