"""Synthetic episodes that look like our worlds: flat coloured disks moving on a flat background."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from simworld.data import Episode, EpisodeStore, StoreMeta

H = W = 16
DISCRETE = gym.spaces.Discrete(4)
BOX = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


def disk_frames(n: int, h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    """``uint8 (n, h, w, 3)``: three flat-coloured disks moving in straight lines."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    frames = np.empty((n, h, w, 3), np.uint8)
    frames[:] = (30, 30, 40)
    pos = rng.uniform(0.2, 0.8, (3, 2)) * (h, w)
    vel = rng.uniform(-1.0, 1.0, (3, 2)) * max(h, w) / 32
    colours = [(220, 40, 40), (40, 200, 60), (50, 80, 230)]
    radius = max(2.0, min(h, w) / 8)
    for t in range(n):
        for (cy, cx), (vy, vx), c in zip(pos, vel, colours, strict=True):
            frames[t][(yy - (cy + vy * t)) ** 2 + (xx - (cx + vx * t)) ** 2 <= radius**2] = c
    return frames


def make_episode(
    T: int,
    space: gym.Space = DISCRETE,
    seed: int = 0,
    size: tuple[int, int] = (H, W),
    state_keys: tuple[str, ...] = ("pos",),
    terminated: bool = False,
) -> Episode:
    rng = np.random.default_rng(seed)
    if isinstance(space, gym.spaces.Discrete):
        actions = rng.integers(0, space.n, T).astype(np.int64)
    else:
        actions = rng.uniform(-1, 1, (T, *space.shape)).astype(np.float32)
    term = np.zeros(T, bool)
    trunc = np.zeros(T, bool)
    if T:
        (term if terminated else trunc)[-1] = True
    return Episode(
        frames=disk_frames(T + 1, *size, seed=seed),
        actions=actions,
        rewards=rng.normal(size=T).astype(np.float32),
        terminated=term,
        truncated=trunc,
        states={k: rng.normal(size=(T + 1, 3, 2)) for k in state_keys},
        info={"seed": seed, "policy": "random"},
    )


def make_meta(space: gym.Space = DISCRETE, **overrides) -> StoreMeta:
    kwargs = dict(
        world_id="simworld/Balls-v0",
        world_params={"n_balls": 3},
        action_space=space,
        frame_size=(H, W),
        fps=15.0,
        state_keys=["pos"],
    )
    kwargs.update(overrides)
    return StoreMeta(**kwargs)


@pytest.fixture
def store(tmp_path) -> EpisodeStore:
    """A Discrete-action store holding episodes of 5, 1, 9 and 0 steps."""
    s = EpisodeStore.create(tmp_path / "store", make_meta())
    for i, T in enumerate((5, 1, 9, 0)):
        s.append(make_episode(T, seed=i))
    return s
