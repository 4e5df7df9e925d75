"""Building ground-truth worlds from configs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

from simworld.registration import register_envs


@dataclass
class WorldConfig:
    """One ground-truth world: a Gymnasium id and the arguments it is made with."""

    name: str = "balls"
    id: str = "simworld/Balls-v0"
    max_episode_steps: int | None = None  # None: the id's registered limit
    kwargs: dict[str, Any] = field(default_factory=dict)


def make_world(cfg: WorldConfig | dict, **overrides: Any) -> gym.Env:
    """Make the world a config describes (``render_mode="rgb_array"`` is implied by our worlds).

    Raises:
        ValueError: unknown world id, with the registered ``simworld/`` ids listed.
    """
    if isinstance(cfg, dict):
        cfg = WorldConfig(**cfg)
    register_envs()  # also needed in fresh worker processes
    if cfg.id not in gym.registry:
        known = sorted(k for k in gym.registry if k.startswith("simworld/"))
        raise ValueError(
            f"unknown world {cfg.id!r}; simworld worlds: {known} (or any Gymnasium id via Pixel-v0)"
        )
    kwargs = {**dict(cfg.kwargs), **overrides}
    if cfg.max_episode_steps is not None:
        kwargs["max_episode_steps"] = int(cfg.max_episode_steps)
    return gym.make(cfg.id, **kwargs)
