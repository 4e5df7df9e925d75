"""Probes that compare a video with ground truth from the same start: tracks, motion masks, pixels.

``a`` is the video under test (a dream), ``b`` the ground truth; both ``uint8 (T, H, W, 3)`` of the same
world, frame ``t`` of one matching frame ``t`` of the other.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from simworld.metrics import psnr_uint8, ssim
from simworld.probes.contacts import quiet_nans
from simworld.probes.tracker import Tracks, track
from simworld.probes.world import WorldSpec

MOTION_THRESHOLD = 20  # uint8 levels: a pixel moves when a channel changes by more than this


def velocities(tracks: Tracks) -> np.ndarray:
    """``(T, K, 2)`` velocities in units/s by central differences (one-sided at the ends)."""
    if len(tracks) < 2:
        return np.full_like(tracks.pos, np.nan)
    return np.gradient(tracks.pos, 1.0 / tracks.fps, axis=0)


def velocity_error(a: Tracks, b: Tracks) -> tuple[float, np.ndarray]:
    """Velocity error against ground truth, as PhyWorld measures it, units/s.

    ``mean_{t,k} |v_a(t, k) - v_b(t, k)|`` with velocities from central differences of the tracked
    centroids, over the frames and objects tracked in both videos.

    Returns:
        ``(mean error, per-frame error (T,))``.
    """
    err = np.linalg.norm(velocities(a) - velocities(b), axis=-1)  # (t, k)
    with quiet_nans():
        per_t = np.nanmean(err, axis=1)
        return float(np.nanmean(err)) if np.isfinite(err).any() else math.nan, per_t


def trajectory_error(a: Tracks, b: Tracks) -> dict[str, float | np.ndarray]:
    """Average and final displacement errors against ground truth, world units.

    ``ADE = mean_{t,k} |p_a - p_b|`` over frames where object ``k`` is visible in both videos;
    ``FDE = mean_k |p_a(t_k) - p_b(t_k)|`` at each object's last such frame ``t_k``. ``miss`` is the
    fraction of (frame, object) pairs visible in one video but not the other.

    Returns:
        ``{"ade", "fde", "miss", "per_step" (T,)}``.
    """
    err = np.linalg.norm(a.pos - b.pos, axis=-1)  # (t, k), nan where either is missing
    both = np.isfinite(err)
    finals = [err[np.flatnonzero(both[:, k])[-1], k] for k in range(err.shape[1]) if both[:, k].any()]
    with quiet_nans():
        per_step = np.nanmean(err, axis=1)
    either = a.visible | b.visible
    return {
        "ade": float(err[both].mean()) if both.any() else math.nan,
        "fde": float(np.mean(finals)) if finals else math.nan,
        "miss": float((a.visible != b.visible)[either].mean()) if either.any() else 0.0,
        "per_step": per_step,
    }


def motion_masks(frames: np.ndarray, threshold: int = MOTION_THRESHOLD) -> np.ndarray:
    """``bool (T-1, H, W)``: pixels where any channel changes by more than ``threshold`` between frames."""
    f = frames.astype(np.int16)
    return (np.abs(np.diff(f, axis=0)) > threshold).any(-1)


def _iou(x: np.ndarray, y: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    inter = (x & y).sum(axes)
    union = (x | y).sum(axes)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)  # nothing moved in either: a match


def motion_scores(a: np.ndarray, b: np.ndarray, threshold: int = MOTION_THRESHOLD) -> dict[str, float]:
    """Physics-IQ's motion-mask scores of a video against ground truth.

    With ``M(t)`` the motion mask of frame ``t`` (see :func:`motion_masks`):

    - ``spatial_iou``: IoU of where anything moved at all, ``OR_t M(t)`` (1 is best);
    - ``spatiotemporal_iou``: ``mean_t IoU(M_a(t), M_b(t))`` (1 is best);
    - ``weighted_spatial_iou``: ``sum min(S_a, S_b) / sum max(S_a, S_b)`` with ``S = sum_t M(t)`` how
      often each pixel moved (1 is best);
    - ``mse``: mean squared error of the frames scaled to ``[0, 1]`` (0 is best).
    """
    ma, mb = motion_masks(a, threshold), motion_masks(b, threshold)
    sa, sb = ma.sum(0), mb.sum(0)
    den = np.maximum(sa, sb).sum()
    diff = (a.astype(np.float32) - b.astype(np.float32)) / 255.0
    return {
        "spatial_iou": float(_iou(ma.any(0), mb.any(0), (0, 1))),
        "spatiotemporal_iou": float(_iou(ma, mb, (1, 2)).mean()) if len(ma) else 1.0,
        "weighted_spatial_iou": float(np.minimum(sa, sb).sum() / den) if den > 0 else 1.0,
        "mse": float((diff**2).mean()),
    }


def normalise_by_variance(model: dict[str, float], variance: dict[str, float]) -> dict[str, float]:
    """Physics-IQ normalisation: each score relative to two ground-truth runs with a tiny initial jitter.

    IoUs: ``model / variance``; MSE: ``variance / model``. 1 means as close to the truth as physics
    itself allows from an imperceptibly different start; smaller is worse.
    """
    out = {}
    for key, v in model.items():
        ref = variance.get(key, math.nan)
        if key == "mse":
            out[key] = 1.0 if v == 0 else ref / v
        else:
            out[key] = v / ref if ref > 0 else math.nan
    return out


def fidelity(a: np.ndarray, b: np.ndarray) -> dict[str, float | np.ndarray]:
    """Frame fidelity, a control rather than physics: PSNR (dB, capped at 100) and SSIM per frame and mean."""
    p = np.minimum(psnr_uint8(a, b), 100.0)
    # float32 SSIM: ssim_uint8 works in float64, ten times slower, and 1e-7 precision is plenty here
    to = lambda x: torch.from_numpy(np.ascontiguousarray(x)).float().movedim(-1, -3)  # noqa: E731
    s = ssim(to(a), to(b), 255.0).numpy().astype(np.float64)
    return {"psnr": float(p.mean()), "ssim": float(s.mean()), "psnr_per_step": p, "ssim_per_step": s}


def action_responsiveness(
    branches: list[np.ndarray], actions: list[np.ndarray], spec: WorldSpec
) -> dict[str, float]:
    """Do different actions from the same start move the agent as commanded?

    Each branch is a video ``(T+1, H, W, 3)`` generated from one start with the action script
    ``actions (T, ...)``. With ``D`` the agent's tracked displacement over the branch and ``U = sum_t
    u(a_t)`` the summed commanded direction (:meth:`WorldSpec.commanded_direction`):

    - ``responsiveness = mean over branches with U != 0 of cos(D, U)``: 1 when the agent always goes
      where it is told, 0 when it ignores the actions, -1 when it goes the other way;
    - ``still_drift = mean |D|`` over branches whose command is to stay (units);
    - ``speed_ratio = mean |D| / (v_a dt sum_t |u(a_t)|)`` with ``v_a = spec.action_speed``, when the
      world commands a speed (1 when it moves as fast as commanded; walls can stop it earlier).

    Raises:
        ValueError: if the world has no agent or the branches and action scripts do not pair up.
    """
    k = spec.agent
    if k is None:
        raise ValueError("this world has no agent object to test action responsiveness on")
    if len(branches) != len(actions):
        raise ValueError(f"got {len(branches)} branches but {len(actions)} action scripts")
    cos, drift, ratio = [], [], []
    for frames, acts in zip(branches, actions, strict=True):
        if len(frames) != len(acts) + 1:
            raise ValueError(
                f"a branch of {len(frames)} frames needs {len(frames) - 1} actions, got {len(acts)}"
            )
        tr = track(frames, spec)
        ok = np.flatnonzero(tr.visible[:, k])
        if len(ok) < 2:
            continue
        d = tr.pos[ok[-1], k] - tr.pos[ok[0], k]
        u = np.stack([spec.commanded_direction(a) for a in acts])  # (T, 2)
        total = u.sum(0)
        if np.linalg.norm(total) < 1e-9:
            drift.append(float(np.linalg.norm(d)))
            continue
        cos.append(float(d @ total / (np.linalg.norm(d) * np.linalg.norm(total) + 1e-12)))
        if spec.action_speed:
            ratio.append(
                float(np.linalg.norm(d) / (spec.action_speed * spec.dt * np.linalg.norm(u, axis=1).sum()))
            )
    return {
        "responsiveness": float(np.mean(cos)) if cos else math.nan,
        "still_drift": float(np.mean(drift)) if drift else math.nan,
        "speed_ratio": float(np.mean(ratio)) if ratio else math.nan,
    }
