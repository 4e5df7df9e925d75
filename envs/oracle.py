"""The oracle dream: the dream's protocol run on the real world, i.e. a perfect world model.

An agent trained in the dream of a world model meets two handicaps at once: the model's errors, and
the protocol of imagination itself (episodes start from a bank of real context windows, last at most
``max_episode_steps`` steps, and the value function bootstraps the rest). The oracle keeps the
protocol and removes the model: each episode restarts the *real* world from the true state of a
start-bank window (``set_state``), shows the window's frames as context, and is truncated at the same
horizon. Whatever an agent cannot learn here, no better world model will teach it under that protocol;
what it learns here and not in the dream is the price of the model's errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from simworld.train.world_model import bank_state


def load_bank(
    path: str | Path, size: int = 1024, frames: int = 3, episode_starts: float = 0.5, seed: int = 0
) -> dict[str, np.ndarray]:
    """A start bank: a world model's (``start_bank.safetensors`` in a model directory) or one drawn
    from an episode store (``size`` windows of ``frames`` frames, a share ``episode_starts`` of them at
    an episode's first frame, as :func:`simworld.train.world_model.start_bank` draws a model's).

    Raises:
        FileNotFoundError: ``path`` is neither a model directory with a bank nor an episode store.
    """
    from simworld.world_model import BANK_FILE

    path = Path(path)
    if (path / BANK_FILE).exists():
        from simworld.checkpoint import load_tensors

        bank = {k: v.numpy() for k, v in load_tensors(path / BANK_FILE).items()}
    elif (path / "meta.json").exists():
        from simworld.data.store import EpisodeStore
        from simworld.train.world_model import start_bank

        store = EpisodeStore(path)
        bank = start_bank(store, list(store.episode_ids), size, frames, seed, episode_starts)
    else:
        raise FileNotFoundError(
            f"{path} is neither a world-model directory with a start bank ({BANK_FILE}) nor an episode "
            "store (meta.json)"
        )
    return bank


class BankStart(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Every ``reset`` restarts the world from the true state of a random start-bank window.

    The observation is the world's own frame at that state; ``info["context_frames"]`` ``(t0, H, W, 3)``
    holds the window's real frames (its last is that state's), as the dream gives them, so
    ``agents.sb3.ContextFrameStack`` starts the frame stack the same way in both.

    Args:
        env: a world with ``set_state`` (every simworld world; pixel worlds whose wrapped env has a
            settable ``state``).
        bank: a start bank (:func:`load_bank`) with ``frames`` ``(N, t0, H, W, 3)`` and ``state/<key>``.
    """

    def __init__(self, env: gym.Env, bank: dict[str, np.ndarray]) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, bank=bank)  # so env.spec can rebuild it
        gym.Wrapper.__init__(self, env)
        if not hasattr(env.unwrapped, "set_state"):
            raise ValueError(f"{env.spec.id if env.spec else env}: the oracle needs a world with set_state")
        if not bank_state(bank, 0):
            raise ValueError("the start bank holds no true states: the real world cannot start from it")
        frames = np.asarray(bank["frames"])
        if frames.shape[2:] != env.observation_space.shape:
            raise ValueError(
                f"the start bank's frames are {frames.shape[2:]}, the world's {env.observation_space.shape}"
            )
        self.bank = bank

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)  # restarts the world's own wrappers (time limit, order checks)
        i = int(self.np_random.integers(len(self.bank["frames"])))
        obs = self.env.unwrapped.set_state(bank_state(self.bank, i))
        info = {
            "state": self.env.unwrapped.get_state(),
            "context_frames": self.bank["frames"][i].copy(),  # the caller may keep or change it
            "bank_index": i,
        }
        return obs, info


def oracle_vector_env(
    world: dict[str, Any],
    bank: dict[str, np.ndarray],
    num_envs: int,
    max_episode_steps: int,
    autoreset_mode: gym.vector.AutoresetMode = gym.vector.AutoresetMode.SAME_STEP,
) -> gym.vector.SyncVectorEnv:
    """``num_envs`` oracle dreams (:class:`BankStart` under a ``max_episode_steps`` time limit) as one
    Gymnasium vector env, the same interface :class:`envs.dream.DreamVectorEnv` offers."""
    from simworld.worlds import make_world

    def make() -> gym.Env:
        return gym.wrappers.TimeLimit(BankStart(make_world(world), bank), max_episode_steps)

    return gym.vector.SyncVectorEnv([make for _ in range(num_envs)], autoreset_mode=autoreset_mode)
