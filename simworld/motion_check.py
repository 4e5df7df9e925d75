"""``simworld motion-check``: can a dynamics recipe learn plain motion, and how fast?

One square slides at a constant velocity and bounces off the walls: the next frame is fixed by the
last two, so a recipe that cannot learn it in a few hundred steps will not learn a ball's flight in
a real world either. Trains a world model with the given ``dynamics`` / ``diffusion`` settings on
freshly drawn clips and, every ``eval_every`` steps, imagines one step from held-out context windows
(the rollout path: KV cache, the recipe's sampler) and scores it against the true next frame and
against repeating the last frame. ``reference=true`` also trains a small convolutional regressor on
the same clips for the same steps: the speed this task can be learned at on this machine.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from simworld.data.atomic import atomic_write_bytes
from simworld.models.tokenizer import frames_to_tensor, tensor_to_frames
from simworld.plots import filmstrip
from simworld.train.common import ema_update, warmup_cosine
from simworld.train.world_model import latent_normalisation
from simworld.world_model import WorldModel, WorldModelConfig

FRAME = 64


@dataclass
class MotionCheckConfig:
    dynamics: dict = field(default_factory=dict)  # DynamicsConfig fields
    diffusion: dict = field(default_factory=dict)  # DiffusionConfig fields
    steps: int = 300
    batch_size: int = 16
    window: int = 6
    lr: float = 1.0e-3
    warmup: int = 100
    ema_decay: float = 0.999
    eval_every: int = 100
    eval_clips: int = 32
    square: int = 8  # side in pixels
    speeds: list[int] = field(default_factory=lambda: [2, 3, 4])  # pixels per frame, per axis, either sign
    reference: bool = False
    seed: int = 0
    num_threads: int | None = None
    progress: bool = True
    out: str = "runs/motion_check"


def draw_clips(n: int, t: int, cfg: MotionCheckConfig, rng: np.random.Generator) -> np.ndarray:
    """``n`` clips of ``t`` frames, uint8 ``(n, t, 64, 64, 3)``: a coloured square, constant velocity."""
    s, top = cfg.square, FRAME - cfg.square
    frames = np.zeros((n, t, FRAME, FRAME, 3), np.uint8)
    speeds = np.array([v * sign for v in cfg.speeds for sign in (-1, 1)], dtype=float)
    for i in range(n):
        pos, vel = rng.uniform(0, top, 2), rng.choice(speeds, 2)
        colour = rng.integers(100, 256, 3)
        for j in range(t):
            y, x = np.round(pos).astype(int)
            frames[i, j, y : y + s, x : x + s] = colour
            pos += vel
            for k in range(2):  # elastic bounce off the walls
                if pos[k] < 0:
                    pos[k], vel[k] = -pos[k], -vel[k]
                elif pos[k] > top:
                    pos[k], vel[k] = 2 * top - pos[k], -vel[k]
    return frames


def _batch(frames: np.ndarray) -> dict[str, torch.Tensor]:
    b, t = frames.shape[:2]
    return {
        "frames": torch.from_numpy(frames),
        "actions": torch.zeros(b, t - 1, dtype=torch.long),
        "rewards": torch.zeros(b, t - 1),
        "terminated": torch.zeros(b, t - 1, dtype=torch.bool),
    }


def _square(frame: np.ndarray) -> tuple[np.ndarray, float]:
    """Centroid ``(y, x)`` and mass of what stands out of the background (faint haze does not count)."""
    mass = np.maximum(frame.astype(float).mean(-1) - 20.0, 0.0)
    ys, xs = np.mgrid[: frame.shape[0], : frame.shape[1]]
    total = mass.sum()
    return np.array([(mass * ys).sum(), (mass * xs).sum()]) / max(total, 1e-6), total


def score(pred: np.ndarray, clips: np.ndarray) -> dict[str, float]:
    """``pred`` ``(n, 64, 64, 3)`` against each clip's last frame; the clip's second-to-last frame is
    the copy-the-last-frame baseline. MSE in 0-255 pixel units. ``visible``: share of predictions
    whose square keeps at least a quarter of its true mass; ``centroid_error_px`` over those
    (NaN if none); brightness: predicted over true total intensity (below 1: it fades)."""
    truth, last = clips[:, -1].astype(float), clips[:, -2].astype(float)
    errors = []
    for p, g in zip(pred, clips[:, -1], strict=True):
        (cp, mp), (cg, mg) = _square(p), _square(g)
        if mp >= 0.25 * mg:
            errors.append(float(np.linalg.norm(cp - cg)))
    return {
        "mse": float(((pred - truth) ** 2).mean()),
        "mse_copy_last": float(((last - truth) ** 2).mean()),
        "visible": len(errors) / len(pred),
        "centroid_error_px": float(np.mean(errors)) if errors else float("nan"),
        "brightness": float(pred.astype(float).sum() / truth.sum()),
    }


@torch.no_grad()
def predict(model: WorldModel, clips: np.ndarray, seed: int) -> np.ndarray:
    """One imagined step after each clip's frames but the last: ``(n, 64, 64, 3)`` uint8."""
    n, t = clips.shape[:2]
    state = model.reset(
        clips[:, :-1], np.zeros((n, t - 2), np.int64), generator=torch.Generator().manual_seed(seed)
    )
    frames, *_ = model.step(state, np.zeros(n, np.int64))
    return frames


class ConvReference(nn.Module):
    """The last two frames, stacked as channels -> the change to the next one (plain regression)."""

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(6, channels, 3, padding=1),
            nn.GELU(),
            *(
                m
                for d in (2, 4, 1)
                for m in (nn.Conv2d(channels, channels, 3, padding=d, dilation=d), nn.GELU())
            ),
            nn.Conv2d(channels, 3, 3, padding=1),
        )

    def forward(self, two: torch.Tensor) -> torch.Tensor:  # (b, 2, 3, H, W) in [-1, 1]
        return two[:, 1] + self.net(two.flatten(1, 2))


def run_motion_check(cfg: MotionCheckConfig) -> dict[str, Any]:
    if cfg.window < 3:
        raise ValueError(
            f"window must hold at least 3 frames (two to see motion, one target), got {cfg.window}"
        )
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    held_out = draw_clips(cfg.eval_clips, cfg.window + 1, cfg, np.random.default_rng(cfg.seed + 10_000))
    dynamics = {
        "size": "S",
        "patch_size": 2,
        "context": cfg.window,
        "attention": "factorised",
        **cfg.dynamics,
    }
    model = WorldModel(WorldModelConfig(dynamics=dynamics, diffusion=dict(cfg.diffusion)))
    sample = draw_clips(64, cfg.window, cfg, np.random.default_rng(cfg.seed + 1))
    model.cfg.latent_shift, model.cfg.latent_scale = latent_normalisation(model, sample)  # as simworld train
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, cfg.steps, cfg.warmup))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "config": cfg.__dict__,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    report["world_model"] = []
    bar = tqdm(total=cfg.steps, desc="motion check: world model", disable=not cfg.progress)
    start = time.perf_counter()
    for step in range(1, cfg.steps + 1):
        loss, _ = model(_batch(draw_clips(cfg.batch_size, cfg.window, cfg, rng)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        ema_update(ema, model, min(cfg.ema_decay, step / (9 + step)))
        bar.update(1)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            ema.eval()
            pred = predict(ema, held_out, cfg.seed)
            row = {
                "step": step,
                "seconds": time.perf_counter() - start,
                "loss": loss.item(),
                **score(pred, held_out),
            }
            report["world_model"].append(row)
            bar.write(
                f"step {step}: next-frame MSE {row['mse']:.1f} (copy the last frame: {row['mse_copy_last']:.1f}), "
                f"square visible in {row['visible']:.0%}, centroid error {row['centroid_error_px']:.1f} px, brightness {row['brightness']:.2f}"
            )
    bar.close()
    # top rows the real clips' last three frames, below them the same two context frames and the imagined one
    shown = held_out[:8, -3:]
    filmstrip(out / "filmstrip.png", shown, np.concatenate([shown[:, :2], pred[:8, None]], axis=1), every=1)
    if cfg.reference:
        report["reference"] = _train_reference(cfg, held_out)
    atomic_write_bytes(out / "report.json", json.dumps(report, indent=2).encode())
    print(f"report: {out / 'report.json'}, filmstrip (real above imagined): {out / 'filmstrip.png'}")
    return report


def _train_reference(cfg: MotionCheckConfig, held_out: np.ndarray) -> list[dict[str, float]]:
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    net = ConvReference()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr)
    rows, start = [], time.perf_counter()
    for step in tqdm(range(1, cfg.steps + 1), desc="motion check: conv reference", disable=not cfg.progress):
        x = frames_to_tensor(draw_clips(cfg.batch_size, 3, cfg, rng))
        loss = ((net(x[:, :2]) - x[:, 2]) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            with torch.no_grad():
                pred = tensor_to_frames(net(frames_to_tensor(held_out[:, -3:-1])).clamp(-1, 1))
            row = {"step": step, "seconds": time.perf_counter() - start, **score(pred, held_out)}
            rows.append(row)
            print(f"reference step {step}: next-frame MSE {row['mse']:.1f}")
    return rows
