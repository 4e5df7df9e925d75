"""stable-baselines3 on Gymnasium vector envs (the batched dream, or real worlds)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env import VecEnv, VecFrameStack
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn


class SB3VecEnv(VecEnv):
    """A Gymnasium ``VectorEnv`` in same-step autoreset mode, seen as an SB3 ``VecEnv``.

    SB3 expects finished sub-environments to be reset within the same ``step`` with the last
    observation in ``infos[i]["terminal_observation"]`` and time-limit endings flagged by
    ``infos[i]["TimeLimit.truncated"]`` (so value bootstrapping stays right); this adapter
    translates Gymnasium's ``final_obs`` into exactly that.

    Example:
        >>> venv = DreamVectorEnv(8, "runs/balls/model", autoreset_mode=AutoresetMode.SAME_STEP)
        >>> model = stable_baselines3.PPO("CnnPolicy", SB3VecEnv(venv))
    """

    def __init__(self, venv: gym.vector.VectorEnv) -> None:
        mode = venv.metadata.get("autoreset_mode")
        if mode != AutoresetMode.SAME_STEP:
            raise ValueError(
                f"SB3VecEnv needs a vector env with autoreset_mode=AutoresetMode.SAME_STEP, got {mode}"
            )
        self.venv = venv
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self._actions: np.ndarray | None = None
        self._seed: int | None = None

    def reset(self) -> VecEnvObs:
        obs, info = self.venv.reset(seed=self._seed)
        self._seed = None
        self.reset_infos = [{} for _ in range(self.num_envs)]
        for i in _where(info, "context_frames"):
            self.reset_infos[i]["context_frames"] = info["context_frames"][i]
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, terminated, truncated, info = self.venv.step(self._actions)
        dones = terminated | truncated
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for i in np.flatnonzero(dones):
            infos[i]["terminal_observation"] = info["final_obs"][i]
            infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        for i in _where(info, "context_frames"):
            infos[i]["context_frames"] = info["context_frames"][i]
        return obs, rewards.astype(np.float32), dones, infos

    def seed(self, seed: int | None = None) -> Sequence[None | int]:
        self._seed = seed
        return [None if seed is None else seed + i for i in range(self.num_envs)]

    def close(self) -> None:
        self.venv.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        frames = self.venv.render()
        return [None] * self.num_envs if frames is None else list(frames)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self.venv, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(
        self, method_name: str, *args: Any, indices: VecEnvIndices = None, **kwargs: Any
    ) -> list[Any]:
        result = getattr(self.venv, method_name)(*args, **kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]


def _where(info: dict[str, Any], key: str) -> np.ndarray:
    """Sub-environments whose vector-env ``info`` carries ``key`` (Gymnasium's ``_key`` mask)."""
    if key not in info:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(info.get(f"_{key}", np.ones(len(info[key]), dtype=bool)))


class ContextFrameStack(VecFrameStack):
    """``VecFrameStack`` (channels last) that starts an episode's stack from its context frames.

    A dream episode starts mid-scene from real frames (the model's start bank): stacked the plain way
    the policy would see one frame and zeros, with none of the motion a real mid-episode stack shows.
    Sub-environments whose reset info carries ``context_frames`` ``(t0, H, W, C)`` (``SB3VecEnv`` over
    ``DreamVectorEnv`` does) get their last ``min(n_stack, t0)`` frames; the others stack as usual.
    """

    def __init__(self, venv: VecEnv, n_stack: int) -> None:
        super().__init__(venv, n_stack, channels_order="last")

    def reset(self) -> VecEnvObs:
        super().reset()
        self._fill(range(self.num_envs), self.unwrapped.reset_infos)
        return self.stacked_obs.stacked_obs

    def step_wait(self) -> VecEnvStepReturn:
        _, rewards, dones, infos = super().step_wait()
        self._fill(np.flatnonzero(dones), infos)
        return self.stacked_obs.stacked_obs, rewards, dones, infos

    def _fill(self, idx: Sequence[int], infos: list[dict[str, Any]]) -> None:
        stack = self.stacked_obs.stacked_obs  # (n, H, W, n_stack * C), newest frame last
        for i in idx:
            ctx = infos[i].get("context_frames")
            if ctx is None:
                continue
            k = min(self.stacked_obs.n_stack, len(ctx))
            stack[i, ..., -k * ctx.shape[-1] :] = np.concatenate(list(ctx[-k:]), axis=-1)
