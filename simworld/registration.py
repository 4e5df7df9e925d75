"""Gymnasium ids for everything simworld ships.

Entry points are strings (``"envs.balls:BallsEnv"``) so that ``simworld`` never imports ``envs``;
gymnasium imports the module on the first ``make``.
"""

from __future__ import annotations

import gymnasium as gym

# id -> (entry point, max_episode_steps, default kwargs)
WORLD_IDS: dict[str, tuple[str, int, dict]] = {
    "simworld/Balls-v0": ("envs.balls:BallsEnv", 1000, {}),
    "simworld/Push-v0": ("envs.push:PushEnv", 300, {}),
    "simworld/Pixel-v0": ("envs.pixel:PixelWorld", 1000, {"env_id": "CartPole-v1"}),
    "simworld/PixelCartPole-v1": ("envs.pixel:PixelWorld", 500, {"env_id": "CartPole-v1"}),
    "simworld/PixelPendulum-v1": ("envs.pixel:PixelWorld", 200, {"env_id": "Pendulum-v1"}),
}


DREAM_ID = "simworld/Dream-v0"


def register_envs() -> None:
    """Register the ``simworld/`` ids with gymnasium (idempotent)."""
    for env_id, (entry_point, max_steps, kwargs) in WORLD_IDS.items():
        if env_id in gym.registry:
            continue
        gym.register(id=env_id, entry_point=entry_point, max_episode_steps=max_steps, kwargs=dict(kwargs))
    if DREAM_ID not in gym.registry:
        gym.register(
            id=DREAM_ID,
            entry_point="envs.dream:DreamEnv",
            vector_entry_point="envs.dream:DreamVectorEnv",
            max_episode_steps=1000,
        )
