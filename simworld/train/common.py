"""Pieces every training loop here shares: schedule, EMA, deterministic batches, devices, DDP."""

from __future__ import annotations

import contextlib
import math
import os

import numpy as np
import torch
import torch.distributed as dist

from simworld.data.windows import WindowDataset, collate_windows


def warmup_cosine(step: int, total: int, warmup: int, floor: float = 0.1) -> float:
    """LR multiplier: linear warmup, then cosine decay to ``floor``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p.detach(), 1 - decay)


def terminal_windows(ds: WindowDataset) -> np.ndarray:
    """Indices of the windows of ``ds`` whose last transition ends its episode by termination."""
    store, length = ds.store, ds.length
    out = []
    for eid in np.unique(ds.episodes):
        steps = store.num_steps(int(eid))
        if steps and bool(store._slice(int(eid), "terminated", steps - 1, steps)[0]):
            hit = np.flatnonzero((ds.episodes == eid) & (ds.starts + length - 1 == steps))
            out.extend(hit.tolist())
    return np.asarray(out, dtype=np.int64)


def reward_windows(ds: WindowDataset) -> np.ndarray:
    """Indices of the windows of ``ds`` whose last transition pays a nonzero reward."""
    out = []
    for eid in np.unique(ds.episodes):
        paid = np.flatnonzero(ds.store.read_array(int(eid), "rewards") != 0)  # transition t: frame t -> t+1
        mine = np.flatnonzero(ds.episodes == eid)
        last = ds.starts[mine] + ds.length - 2
        out.extend(mine[np.isin(last, paid)].tolist())
    return np.asarray(out, dtype=np.int64)


def batch_for_step(
    ds: WindowDataset,
    batch_size: int,
    seed: int,
    step: int,
    rank: int = 0,
    terminal: np.ndarray | None = None,
    terminal_fraction: float = 0.0,
    rewarded: np.ndarray | None = None,
    reward_fraction: float = 0.0,
) -> dict:
    """The batch of a given step, a pure function of (seed, step, rank): resuming replays the same data.

    ``terminal_fraction`` of the windows (rounded stochastically) are drawn from ``terminal``
    (see :func:`terminal_windows`): terminations are rare, and a head that sees a handful learns
    to never fire. ``reward_fraction`` does the same for ``rewarded`` (:func:`reward_windows`):
    sparse rewards (a bounce in 50 steps) leave a regression head predicting their mean everywhere.
    """
    rng = np.random.default_rng([seed, step, rank])
    idx = rng.integers(0, len(ds), size=batch_size)
    if terminal is not None and len(terminal) and terminal_fraction > 0:
        k = int(rng.binomial(batch_size, terminal_fraction))
        idx[:k] = terminal[rng.integers(0, len(terminal), size=k)]
    if rewarded is not None and len(rewarded) and reward_fraction > 0:
        k2 = int(rng.binomial(batch_size, reward_fraction))
        idx[batch_size - k2 :] = rewarded[rng.integers(0, len(rewarded), size=k2)]
    return {
        k: torch.as_tensor(np.asarray(v)) if not isinstance(v, dict) else v
        for k, v in collate_windows([ds[int(i)] for i in idx]).items()
    }


def check_mirror_actions(mirror_actions: list[int] | None, action_space: dict) -> list[int] | None:
    """``mirror_actions`` (the action each action becomes when the frames are flipped left to right)
    for a store's ``action_space`` spec: a permutation of a discrete space's actions, else an error."""
    if mirror_actions is None:
        return None
    if action_space.get("type") != "Discrete":
        raise ValueError(
            f"mirror_actions needs a discrete action space, this store's is {action_space.get('type')}"
        )
    n, start = int(action_space["n"]), int(action_space.get("start", 0))
    perm = [int(a) for a in mirror_actions]
    if sorted(perm) != list(range(start, start + n)):
        raise ValueError(
            f"mirror_actions {list(mirror_actions)} is not a permutation of the actions "
            f"{list(range(start, start + n))} (e.g. [1, 0] for CartPole: left <-> right)"
        )
    return perm


def mirror_batch(batch: dict, mirror_actions: list[int], rng: np.random.Generator, start: int = 0) -> dict:
    """Flip a random half of the batch's windows left to right and map their actions through
    ``mirror_actions`` (checked by :func:`check_mirror_actions`). In a world whose physics and
    rendering are mirror-symmetric (CartPole, Balls) the flipped window is as real as the original,
    so the model sees twice the data and cannot learn a bias to one side. ``states`` are not mirrored
    (training does not read them)."""
    flip = torch.from_numpy(rng.random(batch["frames"].shape[0]) < 0.5)
    if not flip.any():
        return batch
    table = torch.as_tensor(mirror_actions, dtype=batch["actions"].dtype)
    frames, actions = batch["frames"].clone(), batch["actions"].clone()
    frames[flip] = frames[flip].flip(-2)  # (B, T, H, W, 3): W is the left-right axis
    actions[flip] = table[actions[flip] - start]
    return {**batch, "frames": frames, "actions": actions}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device} requested but CUDA is not available on this machine")
    return torch.device(device)


def autocast(device: torch.device, precision: str):
    """bf16 autocast where asked for (CUDA, and CPUs that support it); a no-op for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def distributed() -> tuple[int, int]:
    """(rank, world size), starting the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return (dist.get_rank() if world > 1 else 0), world
