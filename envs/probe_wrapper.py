"""Physics probes attached to an environment: per-step scores and an episode summary in ``info``."""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper

from simworld.probes.online import STEP_KEYS, EpisodeScorer, empty_scores
from simworld.probes.tracker import track
from simworld.probes.world import WorldSpec


def infer_spec(env: Any) -> WorldSpec:
    """The world behind ``env``: a dream's training world (from its model's config) or a physics world."""
    u = getattr(env, "unwrapped", env)
    model = getattr(u, "model", None) or getattr(getattr(u, "vec", None), "model", None)
    if model is not None and hasattr(model, "cfg"):
        return WorldSpec.from_world(model.cfg.world_id, model.cfg.world_params)
    return WorldSpec.from_env(env)


def _frames(obs: Any, env: Any, shape: tuple[int, int, int]) -> np.ndarray:
    """The RGB frame(s) of this step: the observation itself, or ``render()`` for latent observations."""
    obs = np.asarray(obs)
    if obs.dtype == np.uint8 and obs.shape[-3:] == shape:
        return obs
    frames = env.render()
    if frames is None:
        raise ValueError("the probes need RGB frames: use obs_mode='rgb' or render_mode='rgb_array'")
    return np.asarray(frames)


class PhysicsProbeWrapper(gym.Wrapper):
    """Scores every frame of an episode with the physics probes that need no ground truth.

    ``info["probe"]`` (every ``reset`` and ``step``) maps each law probe (see
    ``simworld.probes.suite.LAW_PROBES``) to its value over the last ``window`` frames, plus
    ``"violation"``: the largest badness as a multiple of its threshold (1 = as implausible as the worst
    1% of real 48-frame Balls clips). When an episode ends, ``info["probe_summary"]`` holds the same
    probes over the whole episode, plus ``"frames"``. Scoring costs a few milliseconds per step.

    With ``max_violation``, an episode whose per-step violation exceeds it is truncated
    (``truncated=True`` and ``info["probe_truncated"] = True``): an imagined episode that has turned
    implausible stops instead of feeding an agent nonsense. On Balls, real 48-frame clips peak at a
    per-step violation of ~1 and real 200-300-step episodes at 5.3 (20 episodes), while the validated
    violations at their documented magnitudes peak at a median of 12 (restitution 0.8) to 250 (a
    vanished ball): ``max_violation=10`` is a reasonable start.

    Args:
        env: an environment with RGB observations (a dream, or a physics world).
        spec: the world (default: read from the env or its model).
        thresholds: badness thresholds (default: the calibrated ``suite.DEFAULT_THRESHOLDS``).
        max_violation: truncate when the per-step violation exceeds this (None: never).
        window: frames the per-step scores look back over.
    """

    def __init__(
        self,
        env: gym.Env,
        spec: WorldSpec | None = None,
        thresholds: dict[str, float] | None = None,
        max_violation: float | None = None,
        window: int = 48,
    ) -> None:
        super().__init__(env)
        self.world_spec = spec or infer_spec(env)
        self.max_violation = max_violation
        self.scorer = EpisodeScorer(self.world_spec, thresholds, window)
        self._shape = (*self.world_spec.frame_size, 3)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        info = dict(info)
        info["probe"] = self.scorer.reset(_frames(obs, self.env, self._shape))
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        info = dict(info)
        scores = self.scorer.add(_frames(obs, self.env, self._shape))
        info["probe"] = scores
        over = self.max_violation is not None and scores["violation"] > self.max_violation
        if over and not terminated:
            truncated = True
        info["probe_truncated"] = bool(over)
        if terminated or truncated:
            info["probe_summary"] = self.scorer.summary()
        return obs, reward, terminated, truncated, info


class PhysicsProbeVectorWrapper(VectorWrapper):
    """:class:`PhysicsProbeWrapper` for a vector env: one batched tracking call per step.

    ``info["probe"][name]`` is a ``(num_envs,)`` array; ``info["probe_summary"][name]`` holds the
    episode summary of the sub-environments whose episode ended this step (``nan`` elsewhere) and
    ``info["_probe_summary"]`` marks them; ``info["probe_truncated"]`` marks those truncated for
    exceeding ``max_violation``.

    Works with next-step autoreset (the dream's default) and without autoreset. A sub-environment
    truncated by the wrapper is restarted on the next step through ``reset(options={"reset_mask":
    ...})`` (which ``DreamVectorEnv`` supports), and that step's action for it is ignored, exactly as
    with the env's own autoreset.

    Args: as :class:`PhysicsProbeWrapper`.
    """

    def __init__(
        self,
        env: VectorEnv,
        spec: WorldSpec | None = None,
        thresholds: dict[str, float] | None = None,
        max_violation: float | None = None,
        window: int = 48,
    ) -> None:
        super().__init__(env)
        mode = AutoresetMode(env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP))
        if mode == AutoresetMode.SAME_STEP:
            raise ValueError(
                "PhysicsProbeVectorWrapper supports NEXT_STEP or DISABLED autoreset, not SAME_STEP"
            )
        self.autoreset = mode == AutoresetMode.NEXT_STEP
        self.world_spec = spec or infer_spec(env)
        self.max_violation = max_violation
        self.scorers = [EpisodeScorer(self.world_spec, thresholds, window) for _ in range(self.num_envs)]
        self._shape = (*self.world_spec.frame_size, 3)
        self._ended = np.zeros(self.num_envs, bool)  # episode ended last step: the env restarts it now
        self._pending = np.zeros(self.num_envs, bool)  # truncated by us last step: we restart it now

    def _stack(self, per_env: list[dict[str, float]]) -> dict[str, np.ndarray]:
        return {k: np.array([d[k] for d in per_env], np.float64) for k in per_env[0]}

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None) -> tuple[Any, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        mask = np.ones(self.num_envs, bool)
        if options and "reset_mask" in options:
            mask = np.asarray(options["reset_mask"], bool)
        tr = track(_frames(obs, self.env, self._shape), self.world_spec)
        scores = [
            self.scorers[i].reset(tr[i : i + 1]) if mask[i] else empty_scores() for i in range(self.num_envs)
        ]
        self._ended[mask] = False
        self._pending[mask] = False
        return obs, {**info, "probe": self._stack(scores)}

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict]:
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        obs, rewards = np.array(obs, copy=True), np.array(rewards, copy=True)
        terminated, truncated = np.array(terminated, copy=True), np.array(truncated, copy=True)
        pending = self._pending.copy()
        if pending.any():
            # restart what we truncated; the step just taken there continued the old episode: drop it
            fresh, _ = self.env.reset(options={"reset_mask": pending})
            obs[pending] = np.asarray(fresh)[pending]
            rewards[pending], terminated[pending], truncated[pending] = 0.0, False, False
        restarted = pending | (self._ended if self.autoreset else np.zeros_like(pending))
        tr = track(_frames(obs, self.env, self._shape), self.world_spec)
        scores = [
            self.scorers[i].reset(tr[i : i + 1]) if restarted[i] else self.scorers[i].add(tr[i : i + 1])
            for i in range(self.num_envs)
        ]
        step = self._stack(scores)
        over = np.zeros(self.num_envs, bool)
        if self.max_violation is not None:
            over = (step["violation"] > self.max_violation) & ~terminated & ~restarted
            truncated = truncated | over
        done = terminated | truncated
        summary = {k: np.full(self.num_envs, math.nan) for k in (*STEP_KEYS, "frames")}
        for i in np.flatnonzero(done):
            for k, v in self.scorers[i].summary().items():
                summary[k][i] = v
        self._ended = done & ~over
        self._pending = over if self.autoreset else np.zeros_like(over)  # without autoreset the user resets
        info = {
            **info,
            "probe": step,
            "probe_summary": summary,
            "_probe_summary": done,
            "probe_truncated": over,
        }
        return obs, rewards, terminated, truncated, info


class ContactRewardVectorWrapper(VectorWrapper):
    """Pays a contact reward only where the frames show a contact: the probes' tracker as a reward check.

    A world model's reward model can pay for a bounce that its own frames do not show (a ball that
    dissolved, or one far from the paddle): an agent in the dream learns to farm those. This wrapper
    zeroes every reward of a step whose two frames (the one before and the new one) have no object
    within ``max_gap`` world units of the agent's body (:func:`simworld.probes.contacts.agent_contact`;
    Balls: a ball at the paddle). On real Balls frames it keeps every reward; on the open-loop
    rollouts of a 1,600-step loop model it keeps 15 % of what the reward model pays, and the final
    loop agent's dream return drops from 1.98 to the world's 0.4 (docs/results.md, session 17).
    ``info["reward_ungated"]`` keeps the rewards as the env paid them.

    Works with every autoreset mode (same-step, as SB3 trains, reads ``info["final_obs"]``). Needs RGB
    observations.

    Args:
        env: a vector env with RGB observations (a dream).
        spec: the world (default: read from the env or its model); it must have an agent object.
        max_gap: the largest object-to-agent gap, world units, at which a step may pay.
    """

    def __init__(self, env: VectorEnv, spec: WorldSpec | None = None, max_gap: float = 0.5) -> None:
        super().__init__(env)
        self.world_spec = spec or infer_spec(env)
        if not any(o.agent for o in self.world_spec.objects):
            raise ValueError(f"{self.world_spec.world_id or 'this world'} has no agent object to touch")
        if not max_gap >= 0:
            raise ValueError(f"max_gap must be >= 0 world units, got {max_gap}")
        self.max_gap = float(max_gap)
        self.autoreset_mode = AutoresetMode(env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP))
        self._shape = (*self.world_spec.frame_size, 3)
        self._prev: np.ndarray | None = None
        self._ended = np.zeros(self.num_envs, bool)

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None) -> tuple[Any, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        frames = np.array(_frames(obs, self.env, self._shape), copy=True)
        mask = np.ones(self.num_envs, bool)
        if options and "reset_mask" in options:
            mask = np.asarray(options["reset_mask"], bool)
        if self._prev is None:
            self._prev = frames
        self._prev[mask] = frames[mask]
        self._ended[mask] = False
        return obs, info

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict]:
        from simworld.probes.contacts import agent_contact

        if self._prev is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        frames = np.array(_frames(obs, self.env, self._shape), copy=True)
        done = np.asarray(terminated) | np.asarray(truncated)
        new = frames.copy()
        if self.autoreset_mode == AutoresetMode.SAME_STEP and done.any():
            for i in np.flatnonzero(done):  # the frame the episode ended on (an object array in sync envs)
                new[i] = np.asarray(info["final_obs"][i])
        gate = agent_contact(self._prev, new, self.world_spec, self.max_gap)
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            gate &= ~self._ended  # this step restarted those episodes: nothing to check (they pay 0)
            self._ended = done
        info = {**info, "reward_ungated": np.array(rewards, copy=True)}
        rewards = np.where(gate, rewards, 0.0).astype(np.asarray(rewards).dtype)
        self._prev = frames  # for same-step resets, the new episode's first frame
        return obs, rewards, terminated, truncated, info
