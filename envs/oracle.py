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


class StateNoise(gym.Wrapper):
    """A perfect model with random errors of a chosen size: before every step the world's true
    physics state (``get_state()["sim"]``) gets a Gaussian kick, ``std[i]`` on dimension ``i``.

    The frames, rewards and ends stay the world's own for the kicked state, so this isolates one
    property of a learnt model, that its next state is off by a random amount, from the rest (how it
    draws, whether it overrates). CartPole's ``sim`` is ``(x, x_dot, theta, theta_dot)``.
    """

    def __init__(self, env: gym.Env, std: dict[int, float]) -> None:
        super().__init__(env)
        if not hasattr(env.unwrapped, "set_state"):
            raise ValueError(f"{env.spec.id if env.spec else env}: state noise needs a world with set_state")
        if not std or any(not v >= 0 for v in std.values()):
            raise ValueError(f"state noise needs {{dimension: std >= 0}}, got {std}")
        self.std = {int(k): float(v) for k, v in std.items()}

    def step(self, action: Any):
        state = self.env.unwrapped.get_state()
        if "sim" not in state:
            raise ValueError("state noise needs a world whose state has a settable 'sim' part")
        sim = np.array(state["sim"], dtype=np.float64)
        if max(self.std) >= len(sim):
            raise ValueError(f"state noise on dimension {max(self.std)}, but the state has {len(sim)}")
        for i, s in self.std.items():
            sim[i] += s * self.np_random.standard_normal()
        self.env.unwrapped.set_state({**state, "sim": sim})
        return self.env.step(action)


def oracle_vector_env(
    world: dict[str, Any],
    bank: dict[str, np.ndarray],
    num_envs: int,
    max_episode_steps: int,
    autoreset_mode: gym.vector.AutoresetMode = gym.vector.AutoresetMode.SAME_STEP,
    state_noise: dict[int, float] | None = None,
) -> gym.vector.SyncVectorEnv:
    """``num_envs`` oracle dreams (:class:`BankStart` under a ``max_episode_steps`` time limit) as one
    Gymnasium vector env, the same interface :class:`envs.dream.DreamVectorEnv` offers; with
    ``state_noise`` each step first kicks the true state (:class:`StateNoise`)."""
    from simworld.worlds import make_world

    def make() -> gym.Env:
        env = BankStart(make_world(world), bank)
        if state_noise:
            env = StateNoise(env, state_noise)
        return gym.wrappers.TimeLimit(env, max_episode_steps)

    return gym.vector.SyncVectorEnv([make for _ in range(num_envs)], autoreset_mode=autoreset_mode)
