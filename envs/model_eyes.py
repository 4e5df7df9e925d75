"""The real world seen through a world model's eyes: does a policy act on model frames as on real ones?

An agent trained in a dream learns on the model's frames and acts on the world's. Whether that
visual gap costs it anything is a question of the policy alone: run it in the real world (real
dynamics, rewards and ends) but show it, at every step after the first, the frame the model predicts
from the last real frames and the action just taken (one step, teacher-forced). Equal returns with
both eyes: the gap is not in what the policy sees; a higher return with the model's eyes: the
policy relies on something only the model draws.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np
import torch


class ModelEyes(gym.Wrapper):
    """Every observation after ``reset`` is the model's one-step prediction of the world's new frame.

    The model sees the last ``model.context`` *real* frames and the actions between them, so its
    errors never compound: this measures how the policy reads a model frame, not how long the dream
    stays right. Rewards, terminations and ``info`` are the world's; ``info["real_frame"]`` holds
    the frame the world drew.

    Args:
        env: a pixel world whose frames and actions the model was trained on.
        model: a :class:`simworld.world_model.WorldModel` or a model directory.
        seed: seeds the model's sampling noise (reset again with each ``reset(seed=...)``).
    """

    def __init__(self, env: gym.Env, model: Any, seed: int = 0) -> None:
        super().__init__(env)
        if not hasattr(model, "cfg"):
            from simworld.world_model import WorldModel

            model = WorldModel.from_pretrained(model)
        shape = (*model.cfg.frame_size, 3)
        if env.observation_space.shape != shape:
            raise ValueError(
                f"the world's frames are {env.observation_space.shape}, the model's {shape}: "
                "the model cannot draw what this world shows"
            )
        if env.action_space != model.action_space:
            raise ValueError(f"the world's actions are {env.action_space}, the model's {model.action_space}")
        world_id = env.spec.id if env.spec else None
        if world_id and model.cfg.world_id and world_id != model.cfg.world_id:
            raise ValueError(f"the model was trained on {model.cfg.world_id}, not {world_id}")
        self.model = model
        self._generator = torch.Generator(device=model.device).manual_seed(seed)
        self._frames: deque[np.ndarray] = deque(maxlen=model.context)
        self._actions: deque[Any] = deque(maxlen=model.context - 1)  # those between the frames

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        if seed is not None:
            self._generator.manual_seed(seed)
        self._frames.clear()
        self._actions.clear()
        self._frames.append(obs)  # the first frame has nothing before it to predict it from
        return obs, info

    def step(self, action: Any):
        if not self._frames:
            raise gym.error.ResetNeeded("call reset() before step()")
        obs, reward, terminated, truncated, info = self.env.step(action)
        ctx = np.stack(self._frames)[None]  # (1, t, H, W, 3): the real frames so far (at most context)
        between = list(self._actions)
        shape = self.model.action_space.shape
        acts = np.asarray(between, dtype=np.asarray(action).dtype).reshape(1, len(between), *shape)
        state = self.model.reset(ctx, acts, generator=self._generator)
        pred, _, _, _ = self.model.step(state, np.asarray(action).reshape(1, *shape))
        self._frames.append(obs)
        self._actions.append(action)
        info = {**info, "real_frame": obs}
        return pred[0], reward, terminated, truncated, info
